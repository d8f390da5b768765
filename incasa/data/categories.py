"""Categories: photo / render / painting / technical — from labels, from metadata cues, or from a small classifier.

The seed corpus was balanced across four kinds of image. Each sample gets its category from the first rule that
applies, and the rule is recorded next to it (``category_source``), so the report can say how much was *guessed*:

1. an explicit label (manifest ``label`` column), with a few synonyms ("3d" -> render, "schematic" -> technical);
2. camera EXIF (a Make or Model tag) -> photo — renders and scans rarely carry one;
3. a paired depth map -> render — the seed's renders came with depth;
4. the user's classifier, if one is given and its top probability reaches its ``min_confidence``;
5. otherwise "unknown". Unknown stays unknown: it is never mixed in as a guess, and the report counts it.

The classifier is multinomial logistic regression on the same 548-number raw descriptor the deja-vu filter computes
(luminance layout, chroma, gradient orientations, chroma histogram), trained with plain full-batch gradient descent
on a few labelled examples per class (``incasa curate train-classifier FOLDER`` with one sub-folder per category).
It is deliberately small: it only has to separate kinds of image, not recognise content.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CATEGORIES = ("photo", "render", "painting", "technical")
UNKNOWN = "unknown"
SYNONYMS = {"photograph": "photo", "photos": "photo", "3d": "render", "renders": "render", "cgi": "render",
            "paintings": "painting", "art": "painting", "artwork": "painting", "schematic": "technical",
            "cad": "technical", "textile": "technical", "pattern": "technical", "diagram": "technical"}


def normalise_label(label: str) -> str | None:
    """The category a free-text label names, or None."""
    name = label.strip().lower()
    name = SYNONYMS.get(name, name)
    return name if name in CATEGORIES else None


@dataclass(frozen=True)
class Classifier:
    """Softmax regression over standardised raw descriptors: p = softmax(((x - mean) / std) @ W + b)."""

    mean: np.ndarray  # F
    std: np.ndarray  # F
    W: np.ndarray  # F, C
    b: np.ndarray  # C
    classes: tuple[str, ...]
    min_confidence: float = 0.6

    def probabilities(self, raw_NF: np.ndarray) -> np.ndarray:
        logits = ((raw_NF - self.mean) / self.std) @ self.W + self.b
        logits -= logits.max(-1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(-1, keepdims=True)  # N, C

    def predict(self, raw_F: np.ndarray) -> tuple[str, float]:
        p = self.probabilities(raw_F[None])[0]
        i = int(p.argmax())
        return self.classes[i], float(p[i])

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        tmp = Path(str(path) + ".tmp")
        save_file({"mean": self.mean, "std": self.std, "W": self.W, "b": self.b}, str(tmp),
                  metadata={"classes": json.dumps(self.classes), "min_confidence": str(self.min_confidence)})
        os.replace(tmp, path)

    @staticmethod
    def load(path: Path) -> Classifier:
        from safetensors import safe_open

        try:
            with safe_open(str(path), "np") as f:
                meta = f.metadata() or {}
                t = {k: f.get_tensor(k) for k in f.keys()}
            return Classifier(t["mean"], t["std"], t["W"], t["b"], tuple(json.loads(meta["classes"])),
                              float(meta["min_confidence"]))
        except (OSError, KeyError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is not a category classifier ({type(e).__name__}: {e})") from e


def train(raw_NF: np.ndarray, labels: list[str], steps: int = 500, lr: float = 0.5, l2: float = 1e-3,
          min_confidence: float = 0.6) -> Classifier:
    """Fit the classifier. ``labels`` are category names; at least two categories must be present."""
    classes = tuple(c for c in CATEGORIES if c in set(labels))
    if len(classes) < 2:
        raise ValueError(f"need examples of at least two categories, got {sorted(set(labels))}")
    if unknown := set(labels) - set(CATEGORIES):
        raise ValueError(f"labels {sorted(unknown)} are not categories; use {CATEGORIES}")
    y = np.array([classes.index(c) for c in labels])
    mean, std = raw_NF.mean(0), raw_NF.std(0) + 1e-3
    x = (raw_NF - mean) / std
    onehot = np.eye(len(classes))[y]
    w = np.zeros((x.shape[1], len(classes)), np.float32)
    b = np.zeros(len(classes), np.float32)
    for _ in range(steps):
        logits = x @ w + b
        logits -= logits.max(-1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(-1, keepdims=True)
        g = (p - onehot) / len(x)  # gradient of the mean cross-entropy wrt the logits
        w -= lr * (x.T @ g + l2 * w)
        b -= lr * g.sum(0)
    return Classifier(mean.astype(np.float32), std.astype(np.float32), w.astype(np.float32), b.astype(np.float32),
                      classes, min_confidence)


def categorize(label: str | None, exif: dict, has_depth: bool, raw_F: np.ndarray,
               classifier: Classifier | None) -> tuple[str, str]:
    """(category, the rule that decided it)."""
    if label is not None:
        named = normalise_label(label)
        if named is not None:
            return named, "label"
        return UNKNOWN, f"label {label!r} is not a category"
    if exif.get("camera_make") or exif.get("camera_model"):
        return "photo", "camera exif"
    if has_depth:
        return "render", "depth map"
    if classifier is not None:
        name, p = classifier.predict(raw_F)
        if p >= classifier.min_confidence:
            return name, f"classifier p={p:.2f}"
        return UNKNOWN, f"classifier unsure (best {name} p={p:.2f})"
    return UNKNOWN, "no label, cue or classifier"


def examples_from_folder(folder: Path) -> tuple[np.ndarray, list[str]]:
    """Raw descriptors and labels of the images in ``folder/<category>/`` (sub-folder names may be synonyms)."""
    from PIL import Image, UnidentifiedImageError

    from incasa.data import dejavu

    rows, labels = [], []
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir())
    for sub in subfolders:
        category = normalise_label(sub.name)
        if category is None:
            raise ValueError(f"{sub}: sub-folder names must be categories {CATEGORIES}")
        for path in sorted(sub.rglob("*")):
            if not path.is_file():
                continue
            try:
                with Image.open(path) as im:
                    rows.append(dejavu.raw_descriptor(dejavu.small_rgb(im)))
            except (UnidentifiedImageError, OSError):
                continue  # training examples are the user's picks; unreadable ones simply do not count
            labels.append(category)
    if not rows:
        raise ValueError(f"{folder}: no images found in sub-folders named after categories {CATEGORIES}")
    return np.stack(rows), labels
