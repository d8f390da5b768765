"""The learned prompt classifier: character n-gram TF-IDF + multinomial logistic regression, averaged since the
twenty-fourth round with a one-hidden-layer network on the same features (kind "blend"); run in numpy.

Word lists catch the words someone thought of; a classifier over character n-grams also catches inflections,
compounds and unseen phrasings that share pieces with known ones ("decapitazione" shares "decapit" with
"decapitated"; German compounds share their parts). It is small on purpose: trained on the project's own prompt set
(`promptset.py`; ~45 min on one core for today's 146,000 rows, threshold CV included), stored as a 24 MB safetensors
file (no pickle), and scored with a dictionary lookup and two small matrix products (the whole guardrail: ~2 ms per
prompt on one core, benchmarks/guardrails.py).

Features (`features`): on the `normalize()`d prompt, every word padded with spaces contributes its character
n-grams of length 3..5 (" nud", "nude", "ude "...), and the text contributes its word unigrams and bigrams
("w:hidden", "w:hidden camera"). scikit-learn's TfidfVectorizer turns them into sublinear TF-IDF vectors with
L2 norm; LogisticRegression learns one weight vector per class: the eight hard categories, "benign", and the
soft "adult_nudity" (consensual adult content; only the hard classes have thresholds, so it never blocks — it is
there to pull "nude, but adult" away from minors_sexual and non_consensual_sexual). Other features were tried in
the third round and not kept (grouped CV, recall of the classifier alone on the third-round cores at the same
rule): n-grams across word boundaries 37 % vs 42 %, n = 2..6 43 %, skip-bigrams 41 %, the lexicons' set
memberships as features 49 % (but those sets had just been extended from the same cores' misses).
In the fourth round (4x the concepts) more was tried and not kept, each judged on out-of-fold recall at the same
rule and on the three fresh sets as development sets (data/README.md lists every look): lexicon set memberships as
features (+5 points out of fold, +0 on fresh2 and fresh3: the gain was the sets having been written from the same
training cores), scoring each clause of a prompt and taking the maximum (-5 out of fold), one weight per concept
instead of per row (+-1), C = 5 or 50 (-3 / -1), spending the budget greedily across categories (+0.5), and a lower
threshold where the lexicon sees half of a pair (+1 out of fold, +0 on the fresh sets). What moved the fresh sets
was new concepts in the training data, in every language.

Blocking: each hard category c has its own threshold on P(c) (`thresholds`), chosen by grouped cross-validation
(a calibration on out-of-fold scores: each prompt scored by a model that never saw its concept) so that category
alone fires on at most 1/8 of the false-positive budget (1 %) of benign training prompts out of fold (by the
union bound all eight together stay within the budget), and never below MIN_THRESHOLD (0.5 until the fourth
round, now 0.7). One threshold per category beats one on P(unsafe) = 1 - P(benign) out of fold: the benign prompts
that look unsafe mostly look like one category, and a single threshold on their sum has to clear the hardest of
them for every category at once. The floor keeps text unlike any training prompt (code, log lines, chat) from
being blocked because its probability is spread thin over the classes (without it, 4.6 % of 1,579 strings from the
repository's code and tests were blocked; with it 1.3 %, as with the old single threshold). The fourth round
raised the floor to 0.7: with four times the concepts the model grew surer of single word pieces, and short
strings from the code ("after close", "counted votes", "streaming (stream)") reached 0.7-0.98; at 0.5, 3.1 % of
2,069 repository strings were blocked, at 0.7 2.1 %, for 2 of 160 fresh3 red-team prompts less.
The sixth round repeats the grouped CV (`CV_REPEATS` = 3 deals of the concepts into folds) and averages each prompt's
out-of-fold probabilities: with a single deal, removing four benign concepts moved the deepfake threshold from 0.83
to 0.76. It also tried `class_weight=None` (as good, not better, on every development set) and floors of 0.75 and 0.8
(fewer repository strings blocked, fewer red-team prompts too); data/README.md has the numbers.
What sets the high thresholds (graphic violence, self-harm, mass-harm weapons: 0.78-0.92) is usually one
shared-word benign concept that no other training concept resembles ("how to make a bath bomb", "a suicide
prevention hotline poster", "a bloody mary"): held out, its ~50 rows (5 languages x 10 variants) all score high,
and the budget cannot absorb them. More shared-word benign concepts per category lower those thresholds; that is
the lever, not the features.

The ninth round asked whether a model that sees how word pieces combine does better: `train_blend` adds one
hidden ReLU layer (32 units, torch, an EmbeddingBag over the same sparse TF-IDF row) whose softmax is averaged with
the linear model's (kind "blend"; the default since the twenty-fourth round, `DEFAULT_KIND`). Out of fold it
gains 2.8-3.5 points of recall (66.5 -> 69.3-70.0 %), and the development sets' red-team rates rise 0-3 points, but
they also block more benign prompts (fresh2 2 -> 3-6 of 150, fresh8 5 -> 7-8 of 250) and 51-93 of 2,216 repository
strings (41 shipped), so it was not shipped; data/README.md has the numbers. `load_model` reads both kinds.

The eleventh round changed the data, not the model: nine new authors' seeds and the ten fresh sets as training rows
(data/README.md). Since the fresh sets can now be training data, a saved model lists the ones it was trained on in
its metadata (`fresh_sets_seen`, filled by `train_on_prompt_set`), and benchmarks/guardrails.py reports those apart,
never as held out.
The twelfth round did the same with four more authors and the eleventh round's two sealed sets (data/README.md):
+6.4 points on two newer sealed sets, same model.

The fifteenth round changed two things besides the data (data/README.md, "Fifteenth round"). Names: every public
figure of the lexicons' list (data/lexicons.json + data/public_figures.json, ~9,000 names) becomes one placeholder word,
NAME_TOKEN, before the features are taken (`features(text, name_token=True)`; the file records it as `name_token`), so
that "@person drunk at the desk, leaked photo" is one pattern however many names the training prompts happened to use.
Non-prompt text: 4,000 paragraphs of other projects' docstrings and messages are benign training rows, left out of
the threshold budget (`thresholds_from_scores`); they pull words such as "keep", "exit" or "votes" back towards
benign in text unlike any request for a picture.
The sixteenth round tried the same placeholder for organisations (ORG_TOKEN, data/organisations.json: news media,
institutions, parties; `org_token=True`, `incasa safety train --orgs`): +4 points on election/news manipulation but
-1.3 overall on two sealed sets, so it is off by default.
The eighteenth round weighs each fresh set's row three times a seed's (`fresh_weights`, DEFAULT_FRESH_WEIGHT): the
fresh sets are written as a new author writes, one row per prompt, while a seed core gives five rows. Chosen by
leaving one author out at a time (+1.7 points over weight 1 on the same rows, ten authors) and confirmed on two new
sealed sets.
The twenty-third round changed no weight: the name list behind NAME_TOKEN (data/public_figures.json) doubled to
18,524 names, and this file, trained with the old list, reads the new one at run time; retrained with it (the
twenty-second round's candidate) it was not better, and the list alone blocked 38 more deepfakes over three sealed
looks at no benign cost (data/README.md).
The twenty-fourth round re-tried the ninth round's blend at today's size (five times the rows, the docstring rows, the
name placeholder), with the hidden layer now weighted like the linear fit and trained with a lazy Adam over the rows
a batch touches: +1.3 points leaving one author out at +0.04 points of benign, and on two new sealed authors 718/800
red-team at 2/500 benign against the linear file's 694/800 at 3/500, so it shipped (data/README.md). Its first layer
is stored as int8 rows (`save_model`) to keep the file under 25 MB.

Only training needs scikit-learn (and torch, for the blend). The saved model holds the vocabulary, the IDF
weights, and the coefficient matrix; `ClassifierModel.predict_proba` reproduces scikit-learn's transform + softmax
exactly in numpy, and a test checks that against scikit-learn on the training prompts.

Train with `incasa safety train` (builds the prompt set from the seeds, fits on the "train" split,
picks the per-category thresholds by grouped CV, writes data/prompt_classifier.safetensors).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from incasa.safety.normalize import normalize
from incasa.safety.promptset import HARD_CATEGORIES, NONPROMPT_SECTION, fresh_set_of

DEFAULT_MODEL = Path(__file__).parent / "data" / "prompt_classifier.safetensors"
NGRAM_SIZES = (3, 4, 5)
MIN_THRESHOLD = 0.7  # the classifier alone blocks only a category it finds clearly the most likely (see below)
# Grouped CV is run this many times with concepts dealt into folds differently, and the out-of-fold probabilities
# averaged: with one split, which hard benign concepts happened to share a fold moved a threshold by up to 0.08.
CV_REPEATS = 3
DEFAULT_KIND = "blend"  # what `incasa safety train` fits: "linear" or "blend" (see the ninth round)
DEFAULT_NAME_TOKEN = True  # public figures' names as one word (`features`; the fifteenth round)
DEFAULT_ORG_TOKEN = False  # organisations' names as one word (`features`; tried in the sixteenth round)
DEFAULT_FRESH_WEIGHT = 3.0  # the weight of the fresh sets' rows in training (`fresh_weights`; the eighteenth round)
HIDDEN_UNITS = 32  # the blend's hidden layer: (F, 32) float16 is ~7 MB for ~110,000 features


# Every name of the lexicons' public-figure set (data/lexicons.json + data/public_figures.json) becomes this one word
# in a model trained with name_token=True, and every name of its organisation set (data/organisations.json) ORG_TOKEN
# with org_token=True. "@" never survives normalize(), so no real word can collide with them.
NAME_TOKEN = "@person"
ORG_TOKEN = "@org"


@lru_cache(maxsize=4)
def _lexicon_set(name: str):
    from incasa.safety.lexicon import DEFAULT_LEXICONS, load_lexicons

    pattern = load_lexicons(DEFAULT_LEXICONS).sets.get(name)
    if pattern is None:
        raise ValueError(f"the lexicons ({DEFAULT_LEXICONS}) have no {name!r} set, which this classifier reads")
    return pattern


def _words(text: str, name_token: bool, org_token: bool = False) -> tuple[str, ...]:
    normalized = normalize(text)
    if name_token:
        normalized = _lexicon_set("public_figure").sub(f" {NAME_TOKEN} ", normalized)
    if org_token:  # after the people: "Le Pen" is a person, not the party named after her
        normalized = _lexicon_set("organisation").sub(f" {ORG_TOKEN} ", normalized)
    return tuple(normalized.split())


# Training featurises every prompt once per CV fit (16 times): this cache holds the whole prompt set's words while
# `train_on_prompt_set` runs, which clears it after. Scoring (`ClassifierModel.vectorize`) does not use it, so a
# server does not keep every prompt it was sent.
_training_words = lru_cache(maxsize=1 << 18)(_words)


def features(text: str, name_token: bool = False, org_token: bool = False, *, cached: bool = False) -> list[str]:
    """Character n-grams of each space-padded word, plus word unigrams and bigrams, of the normalised text.

    With name_token, a listed public figure's name is one word, NAME_TOKEN, with no character n-grams of its own:
    "@person drunk at his desk" is then one pattern for every name on the list, including names no training
    prompt used. org_token does the same for a listed organisation (ORG_TOKEN: "fake @org screenshot").
    """
    words = (_training_words if cached else _words)(text, name_token, org_token)
    grams = []
    for word in words:
        if word in (NAME_TOKEN, ORG_TOKEN):
            continue
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
    thresholds: dict[str, float] | None = None  # per unsafe class: P(class) at which to block (grouped CV)
    # Which evaluation sets (promptset.FRESH_FILES, e.g. "fresh8") it was trained on: since the eleventh round they
    # are training data, and a benchmark must not report a set this model saw as held out. () for older files.
    fresh_sets_seen: tuple[str, ...] = ()
    name_token: bool = False  # public figures' names as one word (`features`); since the fifteenth round
    org_token: bool = False  # organisations' names as one word (`features`); the sixteenth round
    # The "blend" kind (`train_blend`) adds a one-hidden-layer network on the same features; its probabilities are
    # averaged with the linear model's. All four are None for the linear kind.
    hidden_weight: np.ndarray | None = None  # (F, H)
    hidden_bias: np.ndarray | None = None  # (H,)
    hidden_coef: np.ndarray | None = None  # (C, H)
    hidden_intercept: np.ndarray | None = None  # (C,)

    def vectorize(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Sparse TF-IDF vector as (indices, values): sublinear tf, idf, L2 norm — as scikit-learn does."""
        counts: dict[int, int] = {}
        for gram in features(text, self.name_token, self.org_token):
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
        probs = _softmax(self.coef[:, indices] @ values + self.intercept)  # (C,)
        if self.hidden_weight is not None:  # one sparse row x (F, H), ReLU, the (C, H) output layer; then the mean
            hidden = np.maximum(values @ self.hidden_weight[indices] + self.hidden_bias, 0.0)
            probs = (probs + _softmax(self.hidden_coef @ hidden + self.hidden_intercept)) / 2
        return {c: float(p) for c, p in zip(self.classes, probs, strict=True)}

    def blocks(self, text: str) -> bool:
        """Whether the classifier alone would block: some unsafe class reaches its own threshold."""
        if self.thresholds is None:
            raise ValueError("this classifier has no thresholds yet; train it with `incasa safety train`")
        probs = self.predict_proba(text)
        return any(probs[c] >= t for c, t in self.thresholds.items())


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    logits = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return logits / logits.sum(axis=-1, keepdims=True)


HIDDEN_TENSORS = ("hidden_weight", "hidden_bias", "hidden_coef", "hidden_intercept")


def save_model(model: ClassifierModel, path: str | Path) -> None:
    """Weights as safetensors (float16 coefficients); classes, vocabulary and thresholds in its JSON metadata.

    The blend's (F, H) first layer is stored as int8 with one float16 scale per feature row (absmax / 127): as
    float16 it was 21 MB at today's 330,000 features, which with the linear part's 13 MB would break the 25 MB
    limit on a shipped file; the rounding moves a row's entries by about 1/254 of its largest at most."""
    from safetensors.numpy import save_file

    vocab = sorted(model.vocabulary, key=model.vocabulary.get)
    tensors = {
        "idf": model.idf.astype(np.float32),
        "coef": model.coef.astype(np.float16),
        "intercept": model.intercept.astype(np.float32),
    }
    if model.hidden_weight is not None:
        # quantised from the float16-rounded weights, as the shipped file was (its run wrote float16 first), so that
        # `incasa safety train` rebuilds its tensors exactly; float16 keeps 11 bits, the int8 rows 7
        weight = model.hidden_weight.astype(np.float16).astype(np.float64)  # (F, H)
        scale = np.abs(weight).max(axis=1) / 127  # (F,)
        scale = np.where(scale > 0, scale, 1.0).astype(np.float16)
        tensors["hidden_weight_q"] = np.clip(np.rint(weight / scale.astype(np.float64)[:, None]), -127,
                                             127).astype(np.int8)  # (F, H)
        tensors["hidden_weight_scale"] = scale
        tensors["hidden_coef"] = model.hidden_coef.astype(np.float16)
        tensors["hidden_bias"] = model.hidden_bias.astype(np.float32)
        tensors["hidden_intercept"] = model.hidden_intercept.astype(np.float32)
    metadata = {
        "classes": json.dumps(list(model.classes)),
        "vocabulary": json.dumps(vocab, ensure_ascii=False),
        "thresholds": json.dumps(model.thresholds),
        "features": f"char {NGRAM_SIZES} + word 1-2 grams",
        "kind": "linear" if model.hidden_weight is None else "blend",
        "fresh_sets_seen": json.dumps(list(model.fresh_sets_seen)),
        "name_token": json.dumps(model.name_token),
        "org_token": json.dumps(model.org_token),
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
        # The linear kind (every model before the ninth round) has no hidden_* tensors; both kinds load here.
        tensors = {name: f.get_tensor(name).astype(np.float64) for name in f.keys()}  # noqa: SIM118
    if "hidden_weight_q" in tensors:  # int8 rows and their scales (save_model); older blend files hold float16
        tensors["hidden_weight"] = tensors.pop("hidden_weight_q") * tensors.pop("hidden_weight_scale")[:, None]
    if "thresholds" not in meta:
        raise ValueError(f"{path} is a classifier of an older format (one threshold); retrain: `incasa safety train`")
    vocab, thresholds = json.loads(meta["vocabulary"]), json.loads(meta["thresholds"])
    return ClassifierModel(
        classes=tuple(json.loads(meta["classes"])),
        vocabulary={g: i for i, g in enumerate(vocab)},
        idf=tensors["idf"],
        coef=tensors["coef"],
        intercept=tensors["intercept"],
        thresholds=None if thresholds is None else {c: float(t) for c, t in thresholds.items()},
        fresh_sets_seen=tuple(json.loads(meta.get("fresh_sets_seen", "[]"))),
        name_token=bool(json.loads(meta.get("name_token", "false"))),
        org_token=bool(json.loads(meta.get("org_token", "false"))),
        **{name: tensors.get(name) for name in HIDDEN_TENSORS},
    )


def fresh_weights(rows: list[dict], fresh_weight: float) -> np.ndarray:
    """(N,) training weights: `fresh_weight` for a row of a fresh set (one independent author's prompt), 1 otherwise.

    The fresh sets are the only training prompts written the way a new author writes them (one prompt, one row, no
    template frames); the seeds give five rows per core. Weighting them up was measured leaving one author out at a
    time in the eighteenth round (data/README.md).
    """
    if fresh_weight <= 0:
        raise ValueError(f"fresh_weight must be positive, got {fresh_weight}")
    return np.array([fresh_weight if fresh_set_of(r) is not None else 1.0 for r in rows])


def train(
    texts: list[str], labels: list[str], *, c: float = 20.0, min_df: int = 2, seed: int = 0,
    class_weight: str | None = "balanced", name_token: bool = False, org_token: bool = False,
    sample_weight: np.ndarray | None = None,
):
    """Fit TF-IDF + logistic regression with scikit-learn; returns (ClassifierModel, fitted sklearn pipeline).

    sample_weight: (N,) per-row weights (multiplied with the balanced class weights), or None for all 1."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from threadpoolctl import threadpool_limits

    analyzer = partial(features, name_token=name_token, org_token=org_token, cached=True)
    vectorizer = TfidfVectorizer(analyzer=analyzer, sublinear_tf=True, min_df=min_df, dtype=np.float64)
    regression = LogisticRegression(C=c, max_iter=2000, class_weight=class_weight, random_state=seed)
    # One BLAS thread: the problem is small, and spinning thread pools crawl on a machine that is busy training.
    with threadpool_limits(1):
        pipeline = make_pipeline(vectorizer, regression)
        pipeline.fit(texts, labels, logisticregression__sample_weight=sample_weight)
    model = ClassifierModel(
        classes=tuple(str(k) for k in regression.classes_),
        vocabulary={g: int(i) for g, i in vectorizer.vocabulary_.items()},
        idf=vectorizer.idf_.copy(),
        coef=regression.coef_.copy(),
        intercept=regression.intercept_.copy(),
        name_token=name_token,
        org_token=org_token,
    )
    return model, pipeline


class _LazyAdam:
    """Adam for one (F, H) parameter with sparse gradients, updating only the rows a step's gradient names: the
    update of torch.optim.SparseAdam (moments of untouched rows stay as they are; bias correction by the global step
    count), written as row gathers and scatters (index_select / index_copy_). Timed on one thread, batches of 128
    rows x 250 features of 330,000: 21 ms per step against SparseAdam's 34 ms; a test checks the two agree."""

    def __init__(self, weight, *, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        import torch

        self.weight, self.lr, self.betas, self.eps, self.steps = weight, lr, betas, eps, 0
        self.exp_avg = torch.zeros_like(weight.data)  # (F, H)
        self.exp_avg_sq = torch.zeros_like(weight.data)  # (F, H)

    def zero_grad(self) -> None:
        self.weight.grad = None

    def step(self) -> None:
        import torch

        if self.weight.grad is None:
            return
        grad = self.weight.grad.coalesce()  # one entry per row the batch touched
        rows, values = grad.indices()[0], grad.values()  # (R,), (R, H)
        self.steps += 1
        beta1, beta2 = self.betas
        # index_select / index_copy_: ~8x faster than advanced indexing for 30,000 of 330,000 rows on one thread
        exp_avg = self.exp_avg.index_select(0, rows).mul_(beta1).add_(values, alpha=1 - beta1)  # (R, H)
        exp_avg_sq = self.exp_avg_sq.index_select(0, rows).mul_(beta2).addcmul_(values, values, value=1 - beta2)
        self.exp_avg.index_copy_(0, rows, exp_avg)
        self.exp_avg_sq.index_copy_(0, rows, exp_avg_sq)
        step_size = self.lr * (1 - beta2**self.steps) ** 0.5 / (1 - beta1**self.steps)
        with torch.no_grad():
            self.weight.index_add_(0, rows, exp_avg / (exp_avg_sq.sqrt() + self.eps), alpha=-step_size)


def _fit_hidden(
    matrix, targets: np.ndarray, num_classes: int, *, hidden: int = HIDDEN_UNITS, epochs: int = 6,
    dropout: float = 0.2, weight_decay: float = 1e-5, lr: float = 3e-3, seed: int = 0,
    sample_weight: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """One hidden ReLU layer + softmax on a sparse TF-IDF matrix, in torch; returns the four hidden_* arrays.

    The first layer is an EmbeddingBag over the sparse row (a sum of rows of an (F, H) matrix weighted by the
    TF-IDF values), so a hidden unit can fire for a conjunction of pieces ("knife" with "throat") and not for either
    alone. The loss is weighted as the linear fit's: `sample_weight` ((N,), e.g. `fresh_weights`; None for all 1)
    times class_weight="balanced" computed from the weighted class counts, as the installed scikit-learn (1.9) does
    for the linear fit, so row weights move mass within a class, not between classes; each batch's loss is the
    weighted mean.

    The (F, H) first layer takes sparse gradients and a lazy Adam (`_LazyAdam`: only the rows of the features a
    batch contains are updated, with no weight decay); the small rest takes AdamW. A dense AdamW step over all F
    rows took ~100 ms on today's 330,000 features (12 min per fit of 146,000 prompts, on one core); the lazy step
    costs what the batch touches. CPU, one thread. (A GPU would not help a problem this small.)
    """
    import torch

    matrix = matrix.tocsr()
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the problem is small, and the machine is shared
    try:
        first = torch.nn.EmbeddingBag(matrix.shape[1], hidden, mode="sum", sparse=True)
        torch.nn.init.normal_(first.weight, std=0.1)
        first_bias = torch.nn.Parameter(torch.zeros(hidden))
        out = torch.nn.Linear(hidden, num_classes)
        optimizers = (_LazyAdam(first.weight, lr=lr),
                      torch.optim.AdamW([first_bias, *out.parameters()], lr=lr, weight_decay=weight_decay))
        rows = np.ones(len(targets)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if rows.shape != targets.shape:
            raise ValueError(f"sample_weight must have one weight per row ({len(targets)}), got shape {rows.shape}")
        counts = np.bincount(targets, weights=rows, minlength=num_classes)  # (C,) weighted, as scikit-learn's
        class_weight = rows.sum() / (num_classes * np.maximum(counts, 1e-12))  # (C,)
        row_weight = torch.tensor(class_weight[targets] * rows, dtype=torch.float32)  # (N,)
        rng = np.random.default_rng(seed)
        for _ in range(epochs):
            order = rng.permutation(len(targets))
            for start in range(0, len(order), 128):
                batch = order[start : start + 128]
                sub = matrix[batch]
                h = first(
                    torch.from_numpy(sub.indices.astype(np.int64)),
                    torch.from_numpy(sub.indptr[:-1].astype(np.int64)),
                    per_sample_weights=torch.from_numpy(sub.data.astype(np.float32)),
                )
                h = torch.nn.functional.dropout(torch.relu(h + first_bias), dropout, training=True)
                w = row_weight[torch.from_numpy(batch)]  # (B,)
                nll = torch.nn.functional.cross_entropy(out(h), torch.from_numpy(targets[batch]), reduction="none")
                loss = (w * nll).sum() / w.sum()  # what cross_entropy(weight=class_weight) does, per row
                for optimizer in optimizers:
                    optimizer.zero_grad()
                loss.backward()
                for optimizer in optimizers:
                    optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return {
        "hidden_weight": first.weight.detach().numpy().astype(np.float64),
        "hidden_bias": first_bias.detach().numpy().astype(np.float64),
        "hidden_coef": out.weight.detach().numpy().astype(np.float64),
        "hidden_intercept": out.bias.detach().numpy().astype(np.float64),
    }


def train_blend(
    texts: list[str], labels: list[str], *, c: float = 20.0, seed: int = 0, name_token: bool = False,
    org_token: bool = False, sample_weight: np.ndarray | None = None, **hidden_options,
):
    """The linear model (`train`) plus a hidden-layer network on its TF-IDF; returns (ClassifierModel, pipeline).

    Both parts weigh the rows by `sample_weight` ((N,) or None). The pipeline is the linear one; score batches of
    the blend with `predict_proba_batch`.
    """
    model, pipeline = train(texts, labels, c=c, seed=seed, name_token=name_token, org_token=org_token,
                            sample_weight=sample_weight)
    model = add_hidden(model, pipeline, texts, labels, seed=seed, sample_weight=sample_weight, **hidden_options)
    return model, pipeline


def add_hidden(
    model: ClassifierModel, pipeline, texts: list[str], labels: list[str], *, seed: int = 0,
    sample_weight: np.ndarray | None = None, **hidden_options,
) -> ClassifierModel:
    """`model` (a fitted linear one, with its sklearn `pipeline`) with a hidden layer fitted on the same rows."""
    targets = np.array([model.classes.index(y) for y in labels])  # (N,)
    matrix = pipeline[0].transform(texts)
    hidden = _fit_hidden(matrix, targets, len(model.classes), seed=seed, sample_weight=sample_weight,
                         **hidden_options)
    return replace(model, **hidden)


def predict_proba_batch(model: ClassifierModel, matrix) -> np.ndarray:
    """(N, C) probabilities for a sparse TF-IDF matrix (rows as its training vectorizer makes them)."""
    probs = _softmax(np.asarray(matrix @ model.coef.T) + model.intercept)
    if model.hidden_weight is not None:
        hidden = np.maximum(matrix @ model.hidden_weight + model.hidden_bias, 0.0)
        probs = (probs + _softmax(hidden @ model.hidden_coef.T + model.hidden_intercept)) / 2
    return probs


def _fit_predict(
    kind: str, fit_texts: list[str], fit_labels: list[str], val_texts: list[str], c: float, seed: int,
    name_token: bool, org_token: bool, fit_weights: np.ndarray | None = None,
):
    """Out-of-fold probabilities (columns in sorted class order) of a model of `kind` fitted on the fit rows."""
    if kind == "linear":
        _, pipeline = train(fit_texts, fit_labels, c=c, name_token=name_token, org_token=org_token,
                            sample_weight=fit_weights)
        return list(pipeline.classes_), pipeline.predict_proba(val_texts)
    if kind == "blend":
        model, pipeline = train_blend(fit_texts, fit_labels, c=c, seed=seed, name_token=name_token, org_token=org_token,
                                      sample_weight=fit_weights)
        return list(model.classes), predict_proba_batch(model, pipeline[0].transform(val_texts))
    raise ValueError(f"unknown classifier kind {kind!r}; use 'linear' or 'blend'")


def cross_validated_thresholds(
    rows: list[dict], *, c: float = 20.0, folds: int = 5, max_fp: float = 0.01, repeats: int = CV_REPEATS,
    kind: str = "linear", name_token: bool = False, org_token: bool = False, fresh_weight: float = 1.0,
) -> dict:
    """Choose each unsafe class's blocking threshold on P(class) without looking at the test split.

    Grouped k-fold over the training rows, grouped by core (a concept and all its translations, frames and
    obfuscations stay in one fold), gives out-of-fold probabilities for every training prompt; with repeats > 1
    the grouped k-fold is run that many times with concepts dealt into folds differently (the first time as
    GroupKFold deals them, then shuffled by seed), and each prompt's out-of-fold probabilities are averaged. Each of
    the K unsafe classes gets the lowest threshold at which at most max_fp / K of the benign prompts reach it out of
    fold, so that all of them together (union bound) flag at most max_fp of benign prompts; and at least
    MIN_THRESHOLD (0.7). `kind` is the model fitted in each fold: "linear" (`train`) or "blend" (`train_blend`);
    each fold's fit weighs the fresh sets' rows by `fresh_weight` (`fresh_weights`), as the final fit does.
    """
    from sklearn.model_selection import GroupKFold

    texts = [r["text"] for r in rows]
    labels = np.array([r["label"] for r in rows])
    groups = [r["core"] for r in rows]
    weights = fresh_weights(rows, fresh_weight)  # (N,)
    classes = sorted(set(labels))
    probs = np.zeros((len(rows), len(classes)))  # (N, C) out of fold, summed over the repeats
    for repeat in range(repeats):
        splitter = GroupKFold(n_splits=folds) if repeat == 0 else GroupKFold(folds, shuffle=True, random_state=repeat)
        for fold, (fit_idx, val_idx) in enumerate(splitter.split(texts, labels, groups)):
            fold_classes, fold_probs = _fit_predict(
                kind, [texts[i] for i in fit_idx], list(labels[fit_idx]), [texts[i] for i in val_idx], c,
                seed=repeat * folds + fold, name_token=name_token, org_token=org_token, fit_weights=weights[fit_idx],
            )
            assert fold_classes == classes, "every fold must see every class"
            probs[val_idx] += fold_probs
    probs /= repeats
    return thresholds_from_scores(probs, classes, labels, groups, max_fp=max_fp)


def thresholds_from_scores(
    probs: np.ndarray, classes: list[str], labels: np.ndarray, groups: list[str], *, max_fp: float = 0.01
) -> dict:
    """Per unsafe class, the lowest P(class) that at most max_fp / K of the budget's benign rows reach (see above).

    probs: (N, C) out-of-fold probabilities, columns in `classes` order; labels: (N,) strings; groups: (N,) cores.
    """
    labels = np.asarray(labels)
    unsafe = [k for k in classes if k in HARD_CATEGORIES]
    # The budget is spent on "benign" prompts. The soft class adult_nudity (consensual adult content, which the
    # policy warns on) is a class of its own so that the softmax learns "sexual but adult" apart from
    # minors_sexual and non_consensual_sexual; it is left out of the budget: with its few concepts counted,
    # their out-of-fold scores alone pushed the minors threshold to 0.85-0.98 (classifier recall on minors 28 %).
    # Non-prompt text (promptset.NONPROMPT_SECTION: other projects' docstrings) is benign training data but not in
    # the budget either: it is there to teach the model what words look like outside a request for a picture, and
    # its thousands of easy negatives would dilute the 1 % and let every threshold drop.
    benign = (labels == "benign") & ~np.array([g.startswith(NONPROMPT_SECTION + "/") for g in groups])
    thresholds = {}
    for k in unsafe:
        scores = np.sort(probs[benign, classes.index(k)])[::-1]  # benign prompts' P(k), highest first
        allowed = int(np.floor(max_fp / len(unsafe) * len(scores)))  # how many may reach the threshold
        # Just above the first benign score that may not reach it, and never below MIN_THRESHOLD: text unlike any
        # training prompt (code, log lines, chat) spreads its probability over the classes, and a threshold
        # near 0.5 let that spread alone block it.
        thresholds[k] = max(MIN_THRESHOLD, float(np.nextafter(scores[allowed], 1.0)))
    fired = np.stack([probs[:, classes.index(k)] >= t for k, t in thresholds.items()], axis=1).any(axis=1)
    return {
        "thresholds": thresholds,
        "oof_false_positive_rate": float(np.mean(fired[benign])),
        "oof_recall": float(np.mean(fired[np.isin(labels, unsafe)])),
    }


def train_on_prompt_set(
    rows: list[dict], out_path: str | Path = DEFAULT_MODEL, *, c: float = 20.0, kind: str = DEFAULT_KIND,
    name_token: bool = DEFAULT_NAME_TOKEN, org_token: bool = DEFAULT_ORG_TOKEN,
    fresh_weight: float = DEFAULT_FRESH_WEIGHT,
) -> tuple[ClassifierModel, dict]:
    """Fit on the rows whose split is "train" (see promptset.py), pick the thresholds by grouped CV, save."""
    train_rows = [r for r in rows if r["split"] == "train"]
    if not train_rows:
        raise ValueError("the prompt set has no 'train' rows")
    cv = cross_validated_thresholds(train_rows, c=c, kind=kind, name_token=name_token, org_token=org_token,
                                    fresh_weight=fresh_weight)
    texts, labels = [r["text"] for r in train_rows], [r["label"] for r in train_rows]
    weights = fresh_weights(train_rows, fresh_weight)  # (N,)
    if kind == "linear":
        model, _ = train(texts, labels, c=c, name_token=name_token, org_token=org_token, sample_weight=weights)
    else:
        model, _ = train_blend(texts, labels, c=c, name_token=name_token, org_token=org_token, sample_weight=weights)
    # the evaluation sets it saw: fresh sets only (a short-prompt set is training data, never an evaluation set)
    seen = sorted({n for n in map(fresh_set_of, train_rows) if n and n.startswith("fresh")},
                  key=lambda n: int(n[5:] or 1))
    model = replace(model, thresholds=cv["thresholds"], fresh_sets_seen=tuple(seen))
    _training_words.cache_clear()
    save_model(model, out_path)
    load_model.cache_clear()
    return model, cv
