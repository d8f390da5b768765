"""The whole pipeline: accounting, every pipeline-level rejection, shards re-read, persistence, resume, CLI, Ray."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageEnhance
from typer.testing import CliRunner

from incasa.cli import app
from incasa.data.pipeline import CurateConfig, run
from tests.data.helpers import jpeg_with_exif, picture, png_bytes


def add_labelled(src: Path) -> None:
    """Two paintings and a technical drawing via a CSV manifest, plus copies and junk to be rejected."""
    (src / "lab").mkdir()
    for name, seed in (("p0.png", 300), ("p1.png", 301), ("t0.png", 400)):
        (src / "lab" / name).write_bytes(png_bytes(picture(seed)))
    (src.parent / "labels.csv").write_text(
        "path,caption,label\nsrc/lab/p0.png,oil on canvas,painting\nsrc/lab/p1.png,,painting\n"
        "src/lab/t0.png,a schematic,schematic\n")
    shutil.copy(src / "photo0.jpg", src / "photo0_copy.jpg")  # exact duplicate
    near = Image.open(src / "photo1.jpg").resize((96, 72))
    near = ImageEnhance.Brightness(near).enhance(1.1)
    buf = io.BytesIO()
    near.save(buf, "JPEG", quality=70, exif=Image.open(src / "photo1.jpg").getexif().tobytes())
    (src / "photo1_near.jpg").write_bytes(buf.getvalue())  # near duplicate, also a photo by its EXIF
    (src / "unknown.png").write_bytes(png_bytes(picture(500)))  # no label, no cue, no classifier
    (src / "readme.md").write_text("not an image")


def read_shards(out: Path) -> dict[str, bytes]:
    members = {}
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                members[m.name] = tar.extractfile(m).read()
    return members


def test_end_to_end_accounts_for_every_input(corpus, tmp_path):
    add_labelled(corpus)
    out = tmp_path / "out"
    summary = run([corpus, tmp_path / "labels.csv"], out,
                  CurateConfig(workers=1, progress=False, shard_size=4))
    assert summary["output"] == 10 and summary["shards"] == 3
    assert {c: v["count"] for c, v in summary["categories"].items()} == {
        "photo": 4, "render": 3, "painting": 2, "technical": 1}
    # the labelled files are also seen by the folder walk, without their labels: there they are uncategorised
    rej = pq.read_table(out / "rejections.parquet").to_pylist()
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert len(rej) + len(manifest) == summary["inputs"]
    reasons = {r["key"].rsplit("/", 1)[-1]: r for r in rej}
    assert reasons["photo0_copy.jpg"]["reason"] == "exact_duplicate"
    assert reasons["photo0_copy.jpg"]["collided_with"].endswith("photo0.jpg")
    assert reasons["photo1_near.jpg"]["reason"] == "near_duplicate"
    assert reasons["photo1_near.jpg"]["collided_with"].endswith("photo1.jpg")
    assert reasons["unknown.png"]["reason"] == "uncategorised"
    assert reasons["readme.md"]["reason"] == "not_image"
    assert summary["unknown"] == 4 and reasons["p0.png"]["reason"] == "uncategorised"

    members = read_shards(out)
    by_key = {m["key"].rsplit("/", 1)[-1]: m for m in manifest}
    photo = by_key["photo0.jpg"]
    stored = Image.open(io.BytesIO(members[f"{photo['id']:09d}.jpg"]))
    assert 0x8825 not in stored.getexif() and stored.getexif()[0x010F] == "Canon"  # GPS stripped, camera kept
    render = by_key["render1.png"]
    assert render["has_depth"] and f"{render['id']:09d}.depth.png" in members
    assert members[f"{render['id']:09d}.txt"] == b"a rendered scene number 1"
    meta = json.loads(members[f"{render['id']:09d}.json"])
    assert meta["category"] == "render" and meta["category_source"] == "depth map"
    assert Image.open(out / "contact_sheet.png").size[1] > 64


def test_the_index_persists_across_runs_and_covers_a_reference_set(corpus, tmp_path):
    index = tmp_path / "index"
    cfg = CurateConfig(workers=1, progress=False, index=index, shares={"photo": 1, "render": 1})
    run([corpus], tmp_path / "out1", cfg)
    later = tmp_path / "later"
    later.mkdir()
    again = ImageEnhance.Contrast(Image.open(corpus / "photo2.jpg")).enhance(1.2)
    (later / "again.jpg").write_bytes(jpeg_with_exif(again))
    (later / "new.jpg").write_bytes(jpeg_with_exif(picture(600)))
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "old_model.png").write_bytes(png_bytes(picture(700)))
    (later / "like_old.jpg").write_bytes(jpeg_with_exif(picture(700)))
    summary = run([later], tmp_path / "out2", CurateConfig(workers=1, progress=False, index=index,
                                                           shares={"photo": 1}, reference=(str(ref),)))
    rej = {r["key"].rsplit("/", 1)[-1]: r for r in pq.read_table(tmp_path / "out2/rejections.parquet").to_pylist()}
    assert rej["again.jpg"]["reason"] == "near_duplicate" and rej["again.jpg"]["collided_with"].endswith("photo2.jpg")
    assert rej["like_old.jpg"]["reason"] == "near_duplicate"
    assert rej["like_old.jpg"]["collided_with"].endswith("old_model.png")
    assert summary["output"] == 1 and summary["index"]["runs"] == 3  # run 1, the reference, run 2
    # repeating a finished run changes nothing: its own images do not count as "already seen"
    assert run([later], tmp_path / "out2", CurateConfig(workers=1, progress=False, index=index, shares={"photo": 1},
                                                        reference=(str(ref),)))["output"] == 1
    with pytest.raises(ValueError, match="another run"):
        run([corpus], tmp_path / "out2", cfg)


def test_resume_after_a_kill_loses_and_duplicates_nothing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"p{i:02d}.jpg").write_bytes(jpeg_with_exif(picture(800 + i, (160, 120))))
    script = ("import sys; from incasa.data.pipeline import CurateConfig, run; "
              "run([sys.argv[1]], sys.argv[2], CurateConfig(workers=1, progress=False, chunk_size=2, shard_size=3,"
              " shares={'photo': 1}))")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", script, str(src), str(out)])
    deadline = time.time() + 60
    while time.time() < deadline and len(list((out / "work").glob("part-*.parquet"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists(), "the run finished before it could be killed; make it longer"
    summary = run([src], out, CurateConfig(workers=1, progress=False, chunk_size=2, shard_size=3,
                                           shares={"photo": 1}))
    clean = run([src], tmp_path / "clean", CurateConfig(workers=1, progress=False, chunk_size=2, shard_size=3,
                                                        shares={"photo": 1}))
    assert summary["output"] == clean["output"] == 40
    assert read_shards(out) == read_shards(tmp_path / "clean")
    assert not list(out.rglob("*.tmp"))


def test_cli_run_report_and_errors(corpus, tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(app, ["curate", "run", str(corpus), "-o", str(out), "--workers", "2", "--no-progress",
                                 "--shares", "photo=4,render=3"])
    assert result.exit_code == 0, result.output
    assert "7 of 7 inputs" in result.output
    result = runner.invoke(app, ["curate", "report", str(out)])
    assert result.exit_code == 0 and "render" in result.output
    for args, message in ((["--shares", "cats=1"], "expected CATEGORY=SHARE"),
                          (["--embed-threshold", "2"], "embed_threshold"),
                          (["--engine", "spark"], "engine must be")):
        result = runner.invoke(app, ["curate", "run", str(corpus), "-o", str(tmp_path / "x"), *args])
        assert result.exit_code == 2 and message in result.output, result.output
    result = runner.invoke(app, ["curate", "report", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "not found" in result.output


def test_engine_ray_without_ray_installed_says_how_to_get_it(corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does when the extra is not installed
    result = CliRunner().invoke(app, ["curate", "run", str(corpus), "-o", str(tmp_path / "o"), "--engine", "ray"])
    assert result.exit_code == 2 and "pip install 'incasa[ray]'" in result.output


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own deprecations, not ours
def test_ray_engine_matches_the_local_engine(corpus, tmp_path):
    try:
        import ray
    except ImportError:
        if os.environ.get("CI") == "true":
            raise  # in CI the ray extra is installed: its absence is a failure, not a skip
        pytest.skip("the ray extra is not installed (pip install 'incasa[ray]')")

    cfg = dict(workers=2, progress=False, shares={"photo": 4, "render": 3}, chunk_size=3, shard_size=3)
    try:
        ray_summary = run([corpus], tmp_path / "ray", CurateConfig(engine="ray", **cfg))
    finally:
        ray.shutdown()
    local_summary = run([corpus], tmp_path / "local", CurateConfig(**cfg))
    assert ray_summary["output"] == local_summary["output"] == 7
    assert read_shards(tmp_path / "ray") == read_shards(tmp_path / "local")
