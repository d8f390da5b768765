"""The learned prompt classifier: character n-gram TF-IDF + multinomial logistic regression, run in numpy.

Word lists catch the words someone thought of; a classifier over character n-grams also catches inflections,
compounds and unseen phrasings that share pieces with known ones ("decapitazione" shares "decapit" with
"decapitated"; German compounds share their parts). It is small on purpose: trained in seconds on the
project's own prompt set (`promptset.py`), stored as a ~0.5 MB safetensors file (no pickle), and scored in
well under a millisecond per prompt with a dictionary lookup and one small matrix product.

Features (`features`): on the `normalize()`d prompt, every word padded with spaces contributes its character
n-grams of length 3..5 (" nud", "nude", "ude "...), and the text contributes its word unigrams and bigrams
("w:hidden", "w:hidden camera"). scikit-learn's TfidfVectorizer turns them into sublinear TF-IDF vectors with
L2 norm; LogisticRegression learns one weight vector per class (the eight hard categories + "benign").

Only training needs scikit-learn. The saved model holds the vocabulary, the IDF weights, and the coefficient
matrix; `ClassifierModel.predict_proba` reproduces scikit-learn's transform + softmax exactly in numpy, and a
test checks that against scikit-learn on the training prompts.

Train with `incasa safety train` (rebuilds data/prompts.jsonl from the seeds, fits on the "train" split,
reports the "test" split, writes data/prompt_classifier.safetensors).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from incasa.safety.normalize import normalize

DEFAULT_MODEL = Path(__file__).parent / "data" / "prompt_classifier.safetensors"
NGRAM_SIZES = (3, 4, 5)


def features(text: str) -> list[str]:
    """Character n-grams of each space-padded word, plus word unigrams and bigrams, of the normalised text."""
    words = normalize(text).split()
    grams = []
    for word in words:
        padded = f" {word} "
        for n in NGRAM_SIZES:
            grams.extend(padded[i : i + n] for i in range(max(len(padded) - n + 1, 1)))
    grams.extend(f"w:{w}" for w in words)
    grams.extend(f"w:{a} {b}" for a, b in zip(words, words[1:], strict=False))
    return grams


@dataclass(frozen=True)
class ClassifierModel:
    classes: tuple[str, ...]
    vocabulary: dict[str, int]
    idf: np.ndarray  # (F,)
    coef: np.ndarray  # (C, F)
    intercept: np.ndarray  # (C,)
    threshold: float = 0.5  # P(unsafe) at which the classifier alone should block, chosen by grouped CV

    def vectorize(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Sparse TF-IDF vector as (indices, values): sublinear tf, idf, L2 norm — as scikit-learn does."""
        counts: dict[int, int] = {}
        for gram in features(text):
            index = self.vocabulary.get(gram)
            if index is not None:
                counts[index] = counts.get(index, 0) + 1
        if not counts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        indices = np.fromiter(counts, dtype=np.int64, count=len(counts))
        values = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))) * self.idf[indices]
        return indices, values / np.linalg.norm(values)

    def predict_proba(self, text: str) -> dict[str, float]:
        indices, values = self.vectorize(text)
        logits = self.coef[:, indices] @ values + self.intercept  # (C,)
        logits = np.exp(logits - logits.max())
        probs = logits / logits.sum()
        return {c: float(p) for c, p in zip(self.classes, probs, strict=True)}


def save_model(model: ClassifierModel, path: str | Path) -> None:
    """Weights as safetensors (float16 coefficients); classes, vocabulary and threshold in its JSON metadata."""
    from safetensors.numpy import save_file

    vocab = sorted(model.vocabulary, key=model.vocabulary.get)
    tensors = {
        "idf": model.idf.astype(np.float32),
        "coef": model.coef.astype(np.float16),
        "intercept": model.intercept.astype(np.float32),
    }
    metadata = {
        "classes": json.dumps(list(model.classes)),
        "vocabulary": json.dumps(vocab, ensure_ascii=False),
        "threshold": repr(float(model.threshold)),
        "features": f"char {NGRAM_SIZES} + word 1-2 grams",
    }
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.chmod(tmp, 0o644)  # a data file shipped in the package, not a secret
    os.replace(tmp, path)


@lru_cache(maxsize=4)
def load_model(path: str | Path = DEFAULT_MODEL) -> ClassifierModel:
    from safetensors import safe_open

    if not Path(path).exists():
        raise ValueError(f"no prompt classifier at {path}; train one with `incasa safety train`")
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
        tensors = {name: f.get_tensor(name).astype(np.float64) for name in ("idf", "coef", "intercept")}
    vocab = json.loads(meta["vocabulary"])
    return ClassifierModel(
        classes=tuple(json.loads(meta["classes"])),
        vocabulary={g: i for i, g in enumerate(vocab)},
        idf=tensors["idf"],
        coef=tensors["coef"],
        intercept=tensors["intercept"],
        threshold=float(meta["threshold"]),
    )


def train(texts: list[str], labels: list[str], *, c: float = 20.0, min_df: int = 2, seed: int = 0):
    """Fit TF-IDF + logistic regression with scikit-learn; returns (ClassifierModel, fitted sklearn pipeline)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from threadpoolctl import threadpool_limits

    vectorizer = TfidfVectorizer(analyzer=features, sublinear_tf=True, min_df=min_df, dtype=np.float64)
    regression = LogisticRegression(C=c, max_iter=2000, class_weight="balanced", random_state=seed)
    # One BLAS thread: the problem is small, and spinning thread pools crawl on a machine that is busy training.
    with threadpool_limits(1):
        pipeline = make_pipeline(vectorizer, regression).fit(texts, labels)
    model = ClassifierModel(
        classes=tuple(str(k) for k in regression.classes_),
        vocabulary={g: int(i) for g, i in vectorizer.vocabulary_.items()},
        idf=vectorizer.idf_.copy(),
        coef=regression.coef_.copy(),
        intercept=regression.intercept_.copy(),
    )
    return model, pipeline


def cross_validated_threshold(rows: list[dict], *, c: float = 20.0, folds: int = 5, max_fp: float = 0.01) -> dict:
    """Choose the blocking threshold on P(unsafe) without looking at the test split.

    Grouped k-fold over the training rows, grouped by core (a concept and all its translations, frames and
    obfuscations stay in one fold), gives an out-of-fold P(unsafe) for every training prompt. The threshold is
    the lowest value whose out-of-fold false-positive rate on benign prompts is at most `max_fp`.
    """
    from sklearn.model_selection import GroupKFold

    texts = [r["text"] for r in rows]
    labels = np.array([r["label"] for r in rows])
    groups = [r["core"] for r in rows]
    unsafe = np.zeros(len(rows))
    for fit_idx, val_idx in GroupKFold(n_splits=folds).split(texts, labels, groups):
        _, pipeline = train([texts[i] for i in fit_idx], list(labels[fit_idx]), c=c)
        benign_col = list(pipeline.classes_).index("benign")
        unsafe[val_idx] = 1.0 - pipeline.predict_proba([texts[i] for i in val_idx])[:, benign_col]
    benign = labels == "benign"
    candidates = np.unique(np.concatenate([unsafe[benign], [0.5]]))
    ok = [t for t in candidates if t >= 0.5 and np.mean(unsafe[benign] >= t) <= max_fp]
    threshold = float(min(ok)) if ok else 0.99
    threshold = float(np.nextafter(threshold, 1.0)) if np.mean(unsafe[benign] >= threshold) > max_fp else threshold
    return {
        "threshold": threshold,
        "oof_false_positive_rate": float(np.mean(unsafe[benign] >= threshold)),
        "oof_recall": float(np.mean(unsafe[~benign] >= threshold)),
    }


def train_on_prompt_set(
    rows: list[dict], out_path: str | Path = DEFAULT_MODEL, *, c: float = 20.0
) -> tuple[ClassifierModel, dict]:
    """Fit on the rows whose split is "train" (see promptset.py), pick the threshold by grouped CV, save."""
    train_rows = [r for r in rows if r["split"] == "train"]
    if not train_rows:
        raise ValueError("the prompt set has no 'train' rows")
    cv = cross_validated_threshold(train_rows, c=c)
    model, _ = train([r["text"] for r in train_rows], [r["label"] for r in train_rows], c=c)
    model = replace(model, threshold=cv["threshold"])
    save_model(model, out_path)
    load_model.cache_clear()
    return model, cv
