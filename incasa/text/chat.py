"""The public face of the text model: load a checkpoint, and `chat(messages, ...)` streaming the reply.

    from incasa.text.chat import chat
    stream = chat([{"role": "user", "content": "What does dog mean?"}], max_tokens=64, temperature=0.7, seed=1)
    for delta in stream:          # text deltas as they are generated
        print(delta, end="")
    stream.usage                  # {"prompt_tokens": .., "completion_tokens": .., "total_tokens": ..}
    stream.finish_reason          # "stop" | "length"
    stream.warnings               # e.g. that old turns were dropped to fit the context

Input is checked when `chat` is called, before any token is generated, so a server can answer 400 at once:
empty messages, unknown roles, non-string content, reserved chat tokens and impossible sampling values raise
ValueError. Context overflow follows `overflow`: "truncate" (default) drops the oldest non-system turns until the
prompt fits, with a warning; "error" raises ValueError instead. `chat_batch` answers several conversations in
one batched decode (for the arena and micro-batching servers).

A checkpoint is one model.safetensors written by `incasa train text` (weights in half precision, the model
config and the tokenizer in its metadata). Without one, the shipped default in incasa/text/default/ is used.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from incasa.text.engine import Completion, Decoder, Sampling, generate
from incasa.text.moe_lm import MoELM, config_from_dict
from incasa.text.tokenizer import Tokenizer, check_messages, tokenizer_from_json

DEFAULT_CHECKPOINT = Path(__file__).parent / "default" / "model.safetensors"


@dataclass(frozen=True)
class TextModel:
    model: MoELM
    tokenizer: Tokenizer
    meta: dict
    path: str

    @property
    def context(self) -> int:
        return self.model.cfg.max_seq_len


def load_model(checkpoint: str | Path | None = None, device: str = "auto") -> TextModel:
    """Load (and cache) a checkpoint; fp32 on CPU, bf16 on CUDA."""
    path = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"text checkpoint {path} does not exist")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return _load(str(path.resolve()), path.stat().st_mtime_ns, device)


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int, device: str) -> TextModel:
    from incasa.train.checkpoint import read_file

    tensors, meta = read_file(path)
    if meta.get("kind") != "incasa-text-moe" or "tokenizer" not in meta:
        raise ValueError(f"{path} is not an incasa text model (kind {meta.get('kind')!r})")
    model = MoELM(config_from_dict(meta["lm"]))
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return TextModel(model, tokenizer_from_json(meta["tokenizer"]), meta, path)


def build_prompt(tm: TextModel, messages: list[dict], max_tokens: int, overflow: str) -> tuple[list[int], list[str]]:
    """Token ids for the conversation, fitted to the context per `overflow`; returns (ids, warnings)."""
    if overflow not in ("truncate", "error"):
        raise ValueError(f"overflow must be 'truncate' or 'error', got {overflow!r}")
    msgs = list(check_messages(messages))
    if msgs[-1]["role"] == "assistant":
        raise ValueError("the last message must be from the user (or system), not the assistant")
    notes = []
    budget = tm.context - min(max_tokens, tm.context // 4)  # leave room for at least part of the reply
    ids = tm.tokenizer.chat_prompt(msgs)
    while len(ids) > budget:
        droppable = [i for i, m in enumerate(msgs[:-1]) if m["role"] != "system"]
        if overflow == "error" or not droppable:
            raise ValueError(f"the conversation is {len(ids)} tokens; the model's context is {tm.context} tokens "
                             f"(with room for the reply: {budget}). Shorten the messages.")
        del msgs[droppable[0]]
        ids = tm.tokenizer.chat_prompt(msgs)
    if len(msgs) < len(messages):
        notes.append(f"dropped the {len(messages) - len(msgs)} oldest message(s) to fit the {tm.context}-token context")
    return ids, notes


class ChatStream:
    """An iterator of text deltas; usage and finish_reason are filled in as generation proceeds."""

    def __init__(self, decoder: Decoder, notes: list[str]):
        self._decoder, self._iter, self.warnings = decoder, iter(decoder), notes

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> str:
        while True:
            deltas = next(self._iter)  # StopIteration ends the stream
            if deltas[0]:
                return deltas[0]

    @property
    def completion(self) -> Completion:
        return self._decoder.completions[0]

    @property
    def finish_reason(self) -> str | None:
        return self.completion.finish_reason

    @property
    def usage(self) -> dict[str, int]:
        c = self.completion
        return {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                "total_tokens": c.prompt_tokens + c.completion_tokens}


def chat(messages: list[dict], *, checkpoint: str | Path | None = None, model: TextModel | None = None,
         max_tokens: int = 256, temperature: float = 0.7, top_p: float = 0.95, top_k: int = 0,
         stop: list[str] | tuple[str, ...] | str | None = None, seed: int | None = None,
         overflow: str = "truncate", device: str = "auto") -> ChatStream:
    """Stream the assistant's reply to `messages` ([{"role": "system"|"user"|"assistant", "content": str}, ...]).

    Pass `model` (from load_model) to reuse a loaded model; otherwise `checkpoint` (default: the shipped one)."""
    s = Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                 stop=(stop,) if isinstance(stop, str) else tuple(stop or ()), seed=seed)
    tm = model or load_model(checkpoint, device)
    ids, notes = build_prompt(tm, messages, max_tokens, overflow)
    for n in notes:
        warnings.warn(n, stacklevel=2)
    return ChatStream(Decoder(tm.model, tm.tokenizer, [ids], s), notes)


def chat_batch(conversations: list[list[dict]], *, checkpoint: str | Path | None = None,
               model: TextModel | None = None, max_tokens: int = 256, temperature: float = 0.7, top_p: float = 0.95,
               top_k: int = 0, stop=None, seed: int | None = None, overflow: str = "truncate",
               device: str = "auto") -> list[Completion]:
    """Answer several conversations in one batched decode; each Completion has text, usage and finish_reason."""
    if not conversations:
        raise ValueError("conversations must be a non-empty list")
    s = Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                 stop=(stop,) if isinstance(stop, str) else tuple(stop or ()), seed=seed)
    tm = model or load_model(checkpoint, device)
    prompts = [build_prompt(tm, msgs, max_tokens, overflow)[0] for msgs in conversations]
    return generate(tm.model, tm.tokenizer, prompts, s)
