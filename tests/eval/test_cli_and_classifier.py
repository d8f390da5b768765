"""`incasa eval image` / `incasa eval train-classifier` end to end on tiny inputs, and the judge's training loop."""

import io
import json

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from incasa.cli import app

from .conftest import FIXTURE

runner = CliRunner()


def test_eval_image_writes_json_and_a_report(tmp_path, ten_step_checkpoint):
    out = tmp_path / "eval"
    args = ["eval", "image", "-c", str(ten_step_checkpoint), "--data", str(FIXTURE), "--num-prompts", "2",
            "--variants", "2", "--steps", "2", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    [path] = out.glob("eval-*.json")
    data = json.loads(path.read_text())
    assert set(data["fidelity"]) == {"in_distribution", "paraphrase", "it", "es", "fr", "de", "heldout_combo"}
    assert "NOT Inception-FID" in data["frechet"]["what"]
    assert data["step"] == 10 and data["variants"] == 2 and data["num_images"] == 2 * data["num_prompts"]
    assert 0.0 <= data["memorisation"]["share"] <= 1.0
    [report] = out.glob("report-*.png")
    assert Image.open(report).size[0] >= 1000
    assert "NOT Inception-FID" in result.output


def test_eval_image_fails_with_one_line_on_bad_input(tmp_path):
    result = runner.invoke(app, ["eval", "image", "-c", str(tmp_path / "missing.safetensors"), "--data", str(FIXTURE)])
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["eval", "image", "--data", str(tmp_path)])
    assert result.exit_code == 2 and "not an emoji dataset" in result.output
    result = runner.invoke(app, ["eval", "image", "--data", str(FIXTURE), "--variants", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "variants" in result.output


def shapes_dataset(root, per_class=6, size=32):
    """Four classes (a red disc, a blue square, a green bar, a yellow cross) drawn at jittered sizes/places, in the
    on-disk format of `incasa data emoji`; the judge's held-out slice and combo split come out empty or tiny."""
    from incasa.image.data import _ShardWriter

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    writer = _ShardWriter(root, "train", per_shard=100)
    for c, (name, colour) in enumerate([("disc", (220, 30, 30)), ("square", (40, 60, 220)),
                                        ("bar", (30, 180, 60)), ("cross", (240, 210, 40))]):
        for k in range(per_class):
            img = np.full((size, size, 3), 255, np.uint8)
            cy, cx, r = rng.integers(12, 20), rng.integers(12, 20), rng.integers(6, 10)
            mask = {"disc": (yy - cy) ** 2 + (xx - cx) ** 2 < r * r,
                    "square": (abs(yy - cy) < r) & (abs(xx - cx) < r),
                    "bar": (abs(yy - cy) < 3) & (abs(xx - cx) < r + 4),
                    "cross": ((abs(yy - cy) < 2) | (abs(xx - cx) < 2)) & (abs(yy - cy) < r) & (abs(xx - cx) < r)}[name]
            img[mask] = colour
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            meta = {"hexcode": f"c{c}", "style": f"s{k}", "group": "shapes", "labels": {"en": name},
                    "captions": [f"a {name}"], "split": "train"}
            writer.write(f"s{k}_c{c}", buf.getvalue(), meta)
    writer.close()
    (root / "index.json").write_text(json.dumps({"data_version": "shapes-v1", "size": size, "shards": {
        "train": writer.paths, "heldout": [], "heldout_combo": []}}))
    return root


def test_train_classifier_learns_and_round_trips(tmp_path):
    from incasa.image.eval_classifier import images_to_tensor, load_classifier, score_real
    from incasa.image.data import load_split

    data = shapes_dataset(tmp_path / "shapes")
    out = tmp_path / "judge"
    result = runner.invoke(app, ["eval", "train-classifier", str(data), str(out), "--preset", "tiny", "--steps", "40",
                                 "--batch-size", "16", "--lr", "3e-3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]
    assert (out / "curve.png").exists()
    judge = load_classifier(out / "model.safetensors")
    assert judge.classes == ["c0", "c1", "c2", "c3"] and judge.labels["c0"] == "disc"
    images, metas = load_split(data, "train")
    assert score_real(judge, images, metas)["top1"] > 0.5  # chance: 0.25
    # half-precision weights reload to the same function
    x = images_to_tensor(images[:4])
    assert torch.allclose(judge.run(x)[0], load_classifier(out / "model.safetensors").run(x)[0])


def test_train_classifier_rejects_bad_input(tmp_path):
    result = runner.invoke(app, ["eval", "train-classifier", str(tmp_path), str(tmp_path / "o")])
    assert result.exit_code == 2 and "not an emoji dataset" in result.output
    result = runner.invoke(app, ["eval", "train-classifier", str(FIXTURE), str(tmp_path / "o"), "--preset", "huge"])
    assert result.exit_code == 2 and "unknown --preset" in result.output


def test_eval_image_refuses_a_classifier_trained_on_other_data(tmp_path):
    data = shapes_dataset(tmp_path / "shapes")  # data version "shapes-v1"; the shipped judge knows emoji-v1-*
    result = runner.invoke(app, ["eval", "image", "--data", str(data), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "retrain it" in result.output
