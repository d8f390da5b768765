"""Every picture the server returns passes through here: guardrails in, watermark + C2PA out.

    guard = Guard.from_settings(policy_path, audit_log)
    guard.check_prompt(prompt, source="serve")           # raises Refused (-> 400 content_policy_violation)
    data = deliver(rendered.images[0], rendered.params[0], size=512, fmt="png", keys=keys, payload=payload)

`deliver` does what `incasa generate` does to a file, in memory: the output guardrail (`check_image`), the upscale
to the requested size with the invisible watermark (`finish_image`; edits keep the input's size and are
composited so that the kept region is the original pixel for pixel), the parameters as PNG text chunks, the
conversion to JPEG/WebP when asked, and a signed C2PA manifest that records the input image of an edit as an
ingredient. `ImageStore` keeps the bytes for response_format=url under their SHA-256, written atomically.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("incasa.serve")
FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
STORED_NAME = re.compile(r"^[0-9a-f]{64}\.(png|jpeg|webp)$")


class Refused(Exception):
    """The content policy said block: `decision` says which category and why."""

    def __init__(self, decision, what: str):
        super().__init__(f"{what} refused ({decision.category}): {decision.reason}")
        self.decision, self.what = decision, what


@dataclass(frozen=True)
class Guard:
    """The policy plus its audit log. Decisions are made on the caller's thread (~0.1 ms); audit lines are
    appended and fsync'ed by one writer thread, in order, so a slow disk never holds up a request or the event
    loop. `close()` waits for the lines still pending (the app calls it at shutdown)."""

    policy: object  # incasa.safety.policy.Policy
    audit_log: Path
    writer: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="audit"))

    @classmethod
    def load(cls, policy_path: str | None, audit_log: Path) -> Guard:
        from incasa.safety import policy as guardrails

        guard = cls(guardrails.load_policy(policy_path), audit_log)
        guardrails.check_prompt("warm up", guard.policy)  # load the lexicons and classifier now, not per request
        return guard

    def check_prompt(self, prompt: str, *, source: str) -> object:
        """The policy's decision on a prompt, audited; raises Refused when it blocks."""
        from incasa.safety import policy as guardrails

        decision = guardrails.check_prompt(prompt, self.policy)
        self.writer.submit(_logged, guardrails.audit, decision, prompt, self.audit_log,
                           keep_raw=self.policy.keep_raw, source=source)
        if decision.action == "block":
            raise Refused(decision, "prompt")
        return decision

    def check_image(self, img) -> None:
        from incasa.safety import policy as guardrails

        decision = guardrails.check_image(img, self.policy)
        if decision.action == "block":
            self.writer.submit(_logged, guardrails.audit_event, self.audit_log, {
                "event": "image_check", "action": "block", "category": decision.category,
                "reason": decision.reason, "source": "serve"})
            raise Refused(decision, "generated image")

    def close(self) -> None:
        self.writer.shutdown(wait=True)


def _logged(write, *args, **kwargs) -> None:
    try:
        write(*args, **kwargs)
    except OSError:  # a full or read-only disk must be seen by operators, and must not kill the writer
        log.exception("cannot append to the audit log")


@dataclass(frozen=True)
class Signing:
    keys: Path
    key_id: str

    @classmethod
    def load(cls, keys_dir: Path) -> Signing:
        from incasa.safety import provenance

        keys = provenance.ensure_dev_keys(keys_dir)
        return cls(keys, provenance.key_id(keys))

    def payload(self, params: dict) -> bytes:
        from incasa.safety import watermark

        return watermark.make_payload(f"{params['model']} {params['model_hash']}", self.key_id)


def deliver(img, params: dict, *, guard: Guard, signing: Signing, size: int, fmt: str = "png",
            compression: int | None = None, init_image=None, mask=None, ingredient: bytes | None = None,
            check: bool = True) -> tuple[bytes, dict]:
    """Model-size PIL image -> signed, watermarked bytes in `fmt`, and the parameters as delivered.

    `check=False` skips the output classifier for partial previews (their final image is checked)."""
    from incasa.image.generate import finish_image, png_bytes
    from incasa.safety import provenance

    if fmt not in FORMATS:
        raise ValueError(f"output_format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    final, p = finish_image(img, params, init_image=init_image, mask=mask, size=size,
                            watermark_payload=signing.payload(params))
    if check:
        guard.check_image(final)
    if fmt == "png":
        data = png_bytes(final, p)
    else:
        buf = io.BytesIO()
        final.save(buf, format=FORMATS[fmt], quality=compression if compression is not None else 90)
        data = buf.getvalue()
    title = f"incasa_seed{p['seed']}.{fmt}"
    signed = provenance.sign_image(data, fmt, title=title, model=p["model"], model_version=p["model_hash"],
                                   parameters=p, ingredient=ingredient, keys_dir=signing.keys)
    return signed, p


def png_of(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class ImageStore:
    """Delivered images kept on disk for response_format=url, named by content hash (unguessable, immutable)."""

    def __init__(self, root: Path | None):
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="incasa-serve-"))
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes, fmt: str) -> str:
        name = f"{hashlib.sha256(data).hexdigest()}.{fmt}"
        path = self.root / name
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        return name

    def path(self, name: str) -> Path | None:
        if not STORED_NAME.match(name):
            return None
        path = self.root / name
        return path if path.is_file() else None
