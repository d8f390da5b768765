"""The training loop: loss falls, exact resume, metrics, user folders, refusals."""

import json

import pytest
import torch

from incasa.text.data import load_documents
from incasa.text.train import train
from incasa.train.checkpoint import read_file

from .conftest import tiny_train_config


def test_loss_falls_when_overfitting_and_metrics_are_logged(tiny_corpus, tmp_path):
    r = train(tiny_train_config(tiny_corpus, tmp_path / "run", steps=60, eval_every=60))
    first, last = sum(r["losses"][:5]) / 5, sum(r["losses"][-5:]) / 5
    assert last < 0.6 * first, (first, last)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [x for x in rows if "loss" in x]
    assert train_rows[-1]["step"] == 60 and train_rows[-1]["load_max_over_mean"] >= 1.0
    assert 0 < train_rows[-1]["router_entropy"] <= torch.log(torch.tensor(4.0)).item() + 1e-4
    assert any("val_loss" in x and "probe" in x for x in rows)
    assert (tmp_path / "run" / "curve.png").stat().st_size > 0
    _, meta = read_file(tmp_path / "run" / "model.safetensors")
    assert meta["kind"] == "incasa-text-moe" and "tokenizer" in meta and meta["step"] == 60


def test_exact_resume_matches_uninterrupted_run(tiny_corpus, tmp_path):
    full = train(tiny_train_config(tiny_corpus, tmp_path / "a", steps=6, ckpt_every=3))
    first = train(tiny_train_config(tiny_corpus, tmp_path / "b", steps=3, ckpt_every=3))
    rest = train(tiny_train_config(tiny_corpus, tmp_path / "b", steps=6, ckpt_every=3))  # resumes at step 3
    assert first["losses"] + rest["losses"] == full["losses"]
    wa, _ = read_file(tmp_path / "a" / "model.safetensors")
    wb, _ = read_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(k.endswith("expert_bias") and wa[k].abs().sum() > 0 for k in wa)  # balancing state is saved


def test_dense_preset_trains_too(tiny_corpus, tmp_path):
    r = train(tiny_train_config(tiny_corpus, tmp_path / "d", preset="tiny-dense", steps=3))
    assert len(r["losses"]) == 3 and all(x == x for x in r["losses"])


def test_refusals(tiny_corpus, tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        train(tiny_train_config(tiny_corpus, tmp_path / "x", preset="huge"))
    train(tiny_train_config(tiny_corpus, tmp_path / "run", steps=2))
    with pytest.raises(ValueError, match="another model"):
        train(tiny_train_config(tiny_corpus, tmp_path / "run", steps=4, preset="tiny-dense"))
    with pytest.raises(ValueError, match="seq-len"):
        train(tiny_train_config(tiny_corpus, tmp_path / "y", seq_len=100000))


def test_user_folders_are_read_and_bad_lines_named(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("Some text.\n")
    (tmp_path / "b.jsonl").write_text('{"text": "one"}\n\n{"messages": [{"role": "user", "content": "hi"}]}\n')
    docs = load_documents(tmp_path)
    assert [d.get("text") for d in docs] == ["one", None, "Some text."]
    (tmp_path / "c.jsonl").write_text('{"text": "ok"}\n{"txt": 1}\n')
    with pytest.raises(ValueError, match=r"c.jsonl:2"):
        load_documents(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .txt or .jsonl"):
        load_documents(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        load_documents(tmp_path / "missing")
