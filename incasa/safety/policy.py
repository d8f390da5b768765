"""Guardrails: decide whether a prompt (or a generated image) may be made, and say why.

A `Policy` maps named categories to an action — "block", "warn" or "allow". Eight categories are *hard*:
they always block and no configuration can relax them (`load_policy` raises ValueError if one tries):

    minors_sexual               sexual content involving minors
    non_consensual_sexual       non-consensual intimate imagery (undressing real people, hidden cameras, rape)
    deepfake_impersonation      real-person deepfakes, impersonation of public figures
    graphic_violence            gore, mutilation, torture
    self_harm                   suicide and self-harm depiction or instructions, pro-eating-disorder content
    hate_symbols                hate symbols and dehumanising propaganda
    mass_harm_weapons           instructions for chemical, biological, nuclear and explosive weapons
    election_news_manipulation  fake news photos, fake ballots, forged documents

and two are *soft*, configurable per deployment: adult_nudity (default "warn") and drugs (default "warn").

How a prompt is scored (`check_prompt`), every step offline and in a few milliseconds (benchmarks/guardrails.py):
1. `normalize()` undoes obfuscation (leetspeak, spacing, homoglyphs, zero-width characters, accents).
2. The curated lexicons (`lexicon.py`, data/lexicons.json; en/it/es/fr/de) give each category they see a score
   of 1.0 (a strong term), 0.95 (a pair such as minor + sexual) or 0.55 (a weak hint such as a public name).
3. The learned classifier (`classifier.py`, data/prompt_classifier.safetensors) gives P(category) for each of the
   eight hard categories, each rescaled so that its own threshold (chosen by grouped cross-validation on the
   training prompts, <= 1 % false positives for all categories together, never below P = 0.7) maps to the
   block threshold.
4. Per category the higher score wins. Score >= block_threshold (0.8) -> the category's action;
   >= warn_threshold (0.5) -> "warn" (unless the category is "allow"); the most severe outcome is returned.

Every refusal is explicit: `Decision.reason` names the matched words or the classifier's confidence,
`openai_error()` builds the server's `content_policy_violation` error, `POLICY_EXIT_CODE` is the CLI's exit
status, and `audit()` appends a JSONL line with the prompt's SHA-256 (the raw prompt only if asked).

`check_image` is the output hook: a pluggable image classifier returns category scores for a generated image.
The shipped one, `skin_exposure`, only measures how much of the picture is skin-coloured (YCbCr box of Chai &
Ngan, 1999), scored as adult_nudity. It can catch large areas of exposed skin; it cannot tell nudity from a
close-up face, sand, wood or a peach, and it knows nothing of age, violence, symbols, text or identity. Treat
it as a tripwire that warns, and plug in a real classifier (a callable image -> {category: score}) to block.

Measured on the held-out prompts: benchmarks/guardrails.py (results under benchmarks/results/).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from incasa.safety.classifier import DEFAULT_MODEL, load_model
from incasa.safety.lexicon import DEFAULT_LEXICONS, load_lexicons, match
from incasa.safety.normalize import normalize
from incasa.safety.promptset import HARD_CATEGORIES  # the one list of categories that always block

SOFT_DEFAULTS = {"adult_nudity": "warn", "drugs": "warn"}
CATEGORIES = HARD_CATEGORIES + tuple(SOFT_DEFAULTS)
ACTIONS = ("allow", "warn", "block")  # in order of severity
CONTENT_POLICY_VIOLATION = "content_policy_violation"
POLICY_EXIT_CODE = 3  # what the CLI exits with when a prompt or image is refused

ImageClassifier = Callable[["object"], Mapping[str, float]]  # PIL.Image -> {category: score in [0, 1]}


@dataclass(frozen=True)
class Decision:
    action: str  # "block" | "warn" | "allow"
    category: str | None  # the category that decided, None when nothing was found
    score: float  # in [0, 1]
    reason: str  # human-readable: which words or which model, and how sure


@dataclass(frozen=True)
class Policy:
    actions: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({**{c: "block" for c in HARD_CATEGORIES}, **SOFT_DEFAULTS})
    )
    block_threshold: float = 0.8
    warn_threshold: float = 0.5
    keep_raw: bool = False  # write the raw prompt into the audit log (off: only its SHA-256)
    lexicons_path: str = str(DEFAULT_LEXICONS)
    classifier_path: str = str(DEFAULT_MODEL)
    image_classifier: str = "skin_exposure"  # a key of IMAGE_CLASSIFIERS, or "none"

    def __hash__(self) -> int:  # the actions mapping is read-only; hash its items so a Policy can key a cache
        return hash(
            (
                tuple(sorted(self.actions.items())),
                self.block_threshold,
                self.warn_threshold,
                self.keep_raw,
                self.lexicons_path,
                self.classifier_path,
                self.image_classifier,
            )
        )


def _validate(policy: Policy) -> Policy:
    unknown = sorted(set(policy.actions) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"unknown policy categories {unknown}; known: {', '.join(CATEGORIES)}")
    for category, action in policy.actions.items():
        if action not in ACTIONS:
            raise ValueError(f"category {category!r}: action must be one of {ACTIONS}, got {action!r}")
        if category in HARD_CATEGORIES and action != "block":
            raise ValueError(
                f"category {category!r} is a hard category: it always blocks and cannot be set to {action!r}"
            )
    if not 0.0 < policy.warn_threshold <= policy.block_threshold <= 1.0:
        raise ValueError(
            f"need 0 < warn_threshold <= block_threshold <= 1, got {policy.warn_threshold}, {policy.block_threshold}"
        )
    if policy.image_classifier not in IMAGE_CLASSIFIERS and policy.image_classifier != "none":
        raise ValueError(
            f"unknown image classifier {policy.image_classifier!r}; known: {sorted(IMAGE_CLASSIFIERS)} or 'none'"
        )
    return policy


def load_policy(path: str | None = None) -> Policy:
    """The default policy, or one read from a TOML (or JSON) file such as:

        block_threshold = 0.8
        warn_threshold = 0.5
        keep_raw = false
        [actions]
        adult_nudity = "block"
        drugs = "allow"

    Categories not named keep their defaults. Hard categories may only be "block" (ValueError otherwise).
    """
    if path is None:
        return _validate(Policy())
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"policy file {path} does not exist")
    text = file.read_text(encoding="utf-8")
    try:
        raw = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(
            f"policy file {path} is not valid {'JSON' if file.suffix == '.json' else 'TOML'}: {e}"
        ) from None
    allowed = {
        "actions",
        "block_threshold",
        "warn_threshold",
        "keep_raw",
        "lexicons_path",
        "classifier_path",
        "image_classifier",
    }
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"policy file {path}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    types = {
        "block_threshold": float,
        "warn_threshold": float,
        "keep_raw": bool,
        "lexicons_path": str,
        "classifier_path": str,
        "image_classifier": str,
        "actions": dict,
    }
    for key, value in raw.items():
        # TOML/JSON numbers may come as int; a bool is an int in Python but never a threshold.
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number if types[key] is float else isinstance(value, types[key])):
            raise ValueError(f"policy file {path}: {key} must be a {types[key].__name__}, got {value!r}")
    actions = dict(Policy().actions)
    actions.update(raw.pop("actions", {}))
    return _validate(replace(Policy(), actions=MappingProxyType(actions), **raw))


def _action_for(category: str, score: float, policy: Policy) -> str:
    configured = policy.actions[category]
    if score >= policy.block_threshold:
        return configured
    if score >= policy.warn_threshold and configured != "allow":
        return "warn"
    return "allow"


def _decide(scores: dict[str, tuple[float, str]], policy: Policy) -> Decision:
    """Pick the most severe (then highest-scoring) category among {category: (score, reason)}."""
    best: Decision | None = None
    for category, (score, reason) in scores.items():
        action = _action_for(category, score, policy)
        candidate = Decision(action, category, round(score, 4), reason)
        if best is None or (ACTIONS.index(action), score) > (ACTIONS.index(best.action), best.score):
            best = candidate
    if best is None or best.action == "allow":
        top = 0.0 if best is None else best.score
        return Decision("allow", None, top, "no category reached the warn threshold")
    return best


def check_prompt(prompt: str, policy: Policy) -> Decision:
    """Score a text prompt against the policy; returns the action, category, score and reason."""
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    normalized = normalize(prompt)
    scores: dict[str, tuple[float, str]] = {}
    for category, hit in match(normalized, load_lexicons(policy.lexicons_path)).items():
        scores[category] = (hit.score, "lexicon: " + ", ".join(repr(t) for t in hit.terms[:4]))
    model = load_model(policy.classifier_path)
    if model.thresholds is None:
        raise ValueError(f"classifier {policy.classifier_path} has no thresholds; train it with `incasa safety train`")
    probs = model.predict_proba(prompt)
    for category, threshold in model.thresholds.items():
        score = _calibrate(probs[category], threshold, policy.block_threshold)
        if score > scores.get(category, (0.0, ""))[0]:
            scores[category] = (score, f"classifier: P({category})={probs[category]:.2f}, blocks at {threshold:.2f}")
    return _decide(scores, policy)


def _calibrate(p: float, model_threshold: float, block_threshold: float) -> float:
    """Map a class probability piecewise-linearly so that the model's own cross-validated threshold for that
    class lands on the policy's block threshold: the classifier alone then blocks where, all classes together,
    it keeps <= 1 % false positives out of fold."""
    if p < model_threshold:
        return p * block_threshold / model_threshold
    return block_threshold + (p - model_threshold) / (1.0 - model_threshold) * (1.0 - block_threshold)


def openai_error(decision: Decision) -> dict:
    """The error body the server returns for a refusal, in the OpenAI error shape."""
    return {
        "error": {
            "message": f"Your request was rejected by the content policy ({decision.category}): {decision.reason}",
            "type": "invalid_request_error",
            "param": "prompt",
            "code": CONTENT_POLICY_VIOLATION,
        }
    }


def audit(decision: Decision, prompt: str, log_path: str | Path, keep_raw: bool = False, **extra) -> None:
    """Append one JSONL line (time, prompt SHA-256, decision; the raw prompt only if keep_raw) and flush it.

    `extra` keys (e.g. source="cli") are added as given.
    """
    record = {
        "event": "prompt_check",
        "prompt_sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
        "action": decision.action,
        "category": decision.category,
        "score": decision.score,
        "reason": decision.reason,
        **extra,
    }
    if keep_raw:
        record["prompt"] = prompt
    audit_event(log_path, record)


def audit_event(log_path: str | Path, record: dict) -> None:
    """Append `record` plus a UTC time stamp as one JSON line, flushed and fsync'ed.

    One `write` of one line on a file opened for appending: concurrent writers on a local POSIX file system
    do not interleave lines of this size (well under the pipe/page sizes where appends stay whole).
    """
    line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}, ensure_ascii=False)
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


# --- output-image hook ---------------------------------------------------------------------------------------

SKIN_CB = (77, 127)  # Chai & Ngan (1999) skin box in YCbCr
SKIN_CR = (133, 173)


def skin_exposure(img) -> dict[str, float]:
    """Share of skin-coloured pixels, mapped to an adult_nudity score: 0 below 20 % skin, 1 above 60 %.

    Catches: pictures dominated by bare skin. Misses: everything else (see the module docstring), and it
    false-alarms on close-up faces, sand, wood, peaches and other skin-coloured surfaces.
    """
    import numpy as np

    ycbcr = np.asarray(img.convert("RGB").convert("YCbCr"), dtype=np.int16)
    cb, cr = ycbcr[..., 1], ycbcr[..., 2]
    skin = (cb >= SKIN_CB[0]) & (cb <= SKIN_CB[1]) & (cr >= SKIN_CR[0]) & (cr <= SKIN_CR[1])
    ratio = float(skin.mean())
    return {"adult_nudity": min(max((ratio - 0.2) / 0.4, 0.0), 1.0)}


IMAGE_CLASSIFIERS: dict[str, ImageClassifier] = {"skin_exposure": skin_exposure}


def check_image(img, policy: Policy, classifier: ImageClassifier | None = None) -> Decision:
    """Score a generated image with `classifier` (default: the policy's shipped one) against the policy."""
    if classifier is None:
        if policy.image_classifier == "none":
            return Decision("allow", None, 0.0, "no image classifier configured")
        classifier = IMAGE_CLASSIFIERS[policy.image_classifier]
    name = getattr(classifier, "__name__", type(classifier).__name__)
    scores = {}
    for category, score in classifier(img).items():
        if category not in CATEGORIES:
            raise ValueError(f"image classifier {name} returned unknown category {category!r}")
        scores[category] = (float(score), f"image classifier {name}: {category} score {float(score):.2f}")
    return _decide(scores, policy)
