"""Inference engine: batched autoregressive decoding with a KV cache, sampling, stop tokens and stop strings.

Shape legend: B rows (prompts), P longest prompt, S cache slots, V vocabulary.

Prefill runs all prompts at once, left-padded to the longest: pad slots are marked invalid so no real token
attends to them, and each row's positions count only its real tokens, so a padded row computes what it would
alone. Each decode step then feeds one new token per row, appending its keys and values to the cache: the cost per
token is O(S) attention instead of recomputing the whole sequence (a test checks cache == full recompute).

Sampling per row: temperature 0 is greedy (argmax); otherwise logits / temperature, restricted to the top_k
highest and to the smallest set whose probability reaches top_p, then one draw from a seeded torch.Generator.
A row finishes at an end token (<|end|> or <|endoftext|>, not part of the text), at a stop string (cut before
it), at max_tokens or at the model's context ("length").

Text is streamed as deltas: each step decodes the row's tokens so far and emits only what is safe -- never the
start of a possible stop string, and never a half UTF-8 character (byte-level BPE can split one across tokens).
The engine knows nothing of HTTP or chat roles; chat.py builds prompts, serve wraps the deltas in SSE.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from incasa.text.moe_lm import KVCache, MoELM


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k restriction
    stop: tuple[str, ...] = ()
    seed: int | None = None  # None = a fresh random seed

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError("stop strings must be non-empty strings")


@dataclass
class Completion:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    finish_reason: str | None = None  # "stop" | "length"; None while running
    emitted: int = 0  # characters of `text` already streamed

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


def sample_next(logits_BV: torch.Tensor, s: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    """-> next token per row [B]."""
    if s.temperature == 0:
        return logits_BV.argmax(-1)
    logits = logits_BV.float() / s.temperature
    if s.top_k and s.top_k < logits.shape[-1]:
        kth = torch.topk(logits, s.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= s.top_p  # keep tokens until the mass before them reaches p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def _safe_end(text: str, stops: tuple[str, ...]) -> int:
    """How much of `text` can be emitted: hold back a trailing partial stop string or replacement character."""
    end = len(text)
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                end = min(end, len(text) - n)
                break
    while end > 0 and text[end - 1] == "\ufffd":
        end -= 1
    return end


class Decoder:
    """Iterate to get, per step, a list of text deltas (one per row, "" when nothing new); the Completion of each
    row (text, token ids, usage, finish reason) is in `.completions` and final once iteration ends."""

    def __init__(self, model: MoELM, tokenizer, prompts: list[list[int]], sampling: Sampling):
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        context = model.cfg.max_seq_len
        longest = max(len(p) for p in prompts)
        if longest >= context:
            raise ValueError(f"prompt of {longest} tokens does not fit the model's context of {context} tokens")
        self.model, self.tokenizer, self.prompts, self.sampling = model, tokenizer, prompts, sampling
        self.max_new = min(sampling.max_tokens, context - longest)
        self.end_ids = {tokenizer.end_id, tokenizer.eot_id}
        self.completions = [Completion(prompt_tokens=len(p)) for p in prompts]

    def __iter__(self) -> Iterator[list[str]]:
        return self._run()

    @torch.no_grad()
    def _run(self) -> Iterator[list[str]]:
        model, s = self.model, self.sampling
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        B, P = len(self.prompts), max(len(p) for p in self.prompts)
        gen = torch.Generator(device=device)
        gen.manual_seed(s.seed) if s.seed is not None else gen.seed()
        tokens = torch.full((B, P), self.tokenizer.eot_id, dtype=torch.long)
        valid = torch.zeros(B, P, dtype=torch.bool)
        for i, p in enumerate(self.prompts):
            tokens[i, P - len(p):] = torch.tensor(p)
            valid[i, P - len(p):] = True
        tokens, valid = tokens.to(device), valid.to(device)
        positions = (valid.long().cumsum(1) - 1).clamp_min(0)
        cache = KVCache(model.cfg, B, P + self.max_new, device, dtype)
        was_training = model.training
        model.eval()
        try:
            logits, _ = model(tokens, positions_BL=positions, cache=cache, key_valid_BS=valid)
            last_pos = positions[:, -1:]
            for step in range(self.max_new):
                nxt = sample_next(logits[:, -1], s, gen)
                deltas = self._accept(nxt.tolist(), last_step=step == self.max_new - 1)
                yield deltas
                if all(c.finish_reason for c in self.completions):
                    break
                valid = torch.cat([valid, torch.ones(B, 1, dtype=torch.bool, device=device)], 1)
                last_pos = last_pos + 1
                logits, _ = model(nxt[:, None], positions_BL=last_pos, cache=cache, key_valid_BS=valid)
        finally:
            model.train(was_training)

    def _accept(self, next_ids: list[int], last_step: bool) -> list[str]:
        deltas = []
        stops = self.sampling.stop
        for c, tok in zip(self.completions, next_ids, strict=True):
            if c.finish_reason:
                deltas.append("")
                continue
            if tok in self.end_ids:
                c.finish_reason = "stop"
            else:
                c.token_ids.append(tok)
                c.text = self.tokenizer.decode(c.token_ids)
                hit = min((i for i in (c.text.find(st) for st in stops) if i >= 0), default=-1)
                if hit >= 0:
                    c.text, c.finish_reason = c.text[:hit], "stop"
                elif last_step:
                    c.finish_reason = "length"
            end = len(c.text) if c.finish_reason else _safe_end(c.text, stops)
            deltas.append(c.text[c.emitted:end])
            c.emitted = max(c.emitted, end)
        return deltas


def generate(model: MoELM, tokenizer, prompts: list[list[int]], sampling: Sampling) -> list[Completion]:
    """Run a batch to completion (all rows share one seeded generator, so a row's sample depends on the batch)."""
    decoder = Decoder(model, tokenizer, prompts, sampling)
    for _ in decoder:
        pass
    return decoder.completions


@torch.no_grad()
def full_recompute_greedy(model: MoELM, prompt: list[int], max_tokens: int) -> list[int]:
    """Reference decoding without a cache (the whole sequence every step): for tests and as documentation."""
    ids = list(prompt)
    device = next(model.parameters()).device
    for _ in range(max_tokens):
        logits, _ = model(torch.tensor([ids], device=device))
        ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt):]
