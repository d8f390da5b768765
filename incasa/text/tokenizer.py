"""Byte-level BPE tokenizer (the `tokenizers` library) and the chat template.

Byte-level BPE (GPT-2 style) can encode any string -- Italian accents, code, emoji -- because its base alphabet
is the 256 bytes; merges learned on our corpus make frequent words single tokens. Decoding is exact: a round trip
returns the input string (a test checks it on mixed text).

Special tokens, never produced by ordinary text (they are split off before BPE):
    <|endoftext|>  separates documents in the packed training stream
    <|system|> <|user|> <|assistant|>  open a chat turn;  <|end|>  closes it (generation stops there)

Chat template (one line per turn opener, so the model sees the same layout in training and at inference):
    <|system|>\n{content}<|end|>\n<|user|>\n{content}<|end|>\n<|assistant|>\n{content}<|end|>\n
A prompt for generation ends with "<|assistant|>\n"; the reply is everything up to the next <|end|>.
The tokenizer is saved as JSON beside the checkpoint and inside its metadata, so a checkpoint is self-contained.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

EOT, SYSTEM, USER, ASSISTANT, END = "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = [EOT, SYSTEM, USER, ASSISTANT, END]
ROLES = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}


class Tokenizer:
    """A thin wrapper over tokenizers.Tokenizer with our special tokens and chat template."""

    def __init__(self, tok):
        self.tok = tok
        ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"tokenizer lacks the special tokens {missing}; train it with incasa")
        self.eot_id, self.system_id, self.user_id, self.assistant_id, self.end_id = (ids[t] for t in SPECIAL_TOKENS)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special)

    def to_json(self) -> str:
        return self.tok.to_str()

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)

    # ---- chat template

    def chat_segments(self, messages: list[dict]) -> list[tuple[list[int], bool]]:
        """Token segments of a whole conversation, each flagged True when it is assistant output (trained on)."""
        segs = []
        for m in check_messages(messages):
            segs.append((self.encode(ROLES[m["role"]] + "\n"), False))
            body = self.encode(m["content"]) + [self.end_id] + self.encode("\n")
            segs.append((body, m["role"] == "assistant"))
        return segs

    def chat_prompt(self, messages: list[dict]) -> list[int]:
        """Token ids of the conversation so far, ending with the assistant's turn opener."""
        ids = [i for seg, _ in self.chat_segments(messages) for i in seg]
        return ids + self.encode(ASSISTANT + "\n")


def check_messages(messages: list[dict]) -> list[dict]:
    """Validate chat messages: a non-empty list of {role, content} with known roles and string content."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise ValueError(f"message {i} has unknown role {m['role']!r}; use one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise ValueError(f"message {i} content must be a string")
        if any(t in m["content"] for t in SPECIAL_TOKENS):
            raise ValueError(f"message {i} contains a reserved chat token (one of {', '.join(SPECIAL_TOKENS)})")
    return messages


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Learn byte-level BPE merges on `texts` (an iterator is fine; the library streams it)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (bytes + special tokens)")
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(tok)


def tokenizer_from_json(text: str) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    return Tokenizer(HFTokenizer.from_str(text))


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer {path} does not exist")
    return tokenizer_from_json(path.read_text())
