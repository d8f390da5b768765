"""Image evaluation: prompt fidelity, distribution distance, memorisation, diversity and compositional probes.

    result = evaluate_checkpoint("runs/x/model.safetensors")      # a JSON-able dict; see `incasa eval image`

Every number comes from pictures the checkpoint draws for a fixed, seeded prompt suite built from the emoji data:

fidelity        an independent judge (incasa/image/eval_classifier.py: a CNN trained on the real artwork only, never
                on generated images) names the emoji in each picture; top-1/top-5 of the prompted emoji, separately
                for English training captions, paraphrases the generator never saw, Italian/Spanish/French/German
                captions, and style x emoji combinations held out of training (chance: 1/num_classes, 5/num_classes).
                Graded companions for weak generators: the judge's mean probability of the prompted emoji, its median
                rank among all classes, and within-family retrieval (top-1 among the family's prompted emoji only).
                Caveat: training-caption prompts are drawn from pictures the judge also trained on, so a generator
                that reproduces its training picture can score above the judge's accuracy on unseen real pictures
                (0.52 top-1); the heldout_combo family (pictures neither model saw) is the cleaner number.
frechet         the Fréchet distance between Gaussians fitted to the judge's penultimate features (256-d) of generated
                and of held-out real images. This is NOT Inception-FID: the feature extractor is our small emoji
                classifier, so the values are comparable only between runs that use the same judge weights. Beside
                it, two floors at the same sample size (256-d covariances from a few hundred pictures are far from
                full rank, so the distance depends on the sample's size and on how many distinct emoji it covers):
                as many real training pictures drawn at random (a perfect sampler of the training set), and the
                real picture of each prompt repeated once per variant (a perfect memoriser of these prompts). With
                ~150 prompts x 5 variants the shipped default scored 63.7, the random real pictures 21.3, the
                memoriser 82.1 (its repeated pictures lack within-prompt spread) and uniform noise ~390: at this
                scale the distance separates noise and collapse from pictures, not a fair generator from a good one.
memorisation    the share of generated pictures whose nearest training picture is a near-duplicate by the curation
                stage's deja-vu rule (incasa/data/dejavu.py: learned-whitening embedding + pHash, image and mirror),
                plus exact pixel copies. On this data one caption names one training picture, so a faithful sample of
                a training caption *is* close to it; the share per family says where copying happens.
diversity       the mean pairwise cosine distance of judge features among the variants of one prompt. A prompt has
                collapsed when its variants are closer than light augmentations of one real picture are (p90 of that
                distance, measured when the judge was trained); a generator has mode-collapsed when different prompts
                give pictures much closer than the real pictures of those prompts are.
probes          GenEval-style compositions over the emoji vocabulary, scored by the judge where it can: two objects
                (both named in some view's top-5), colour (the right colour among a colour family: hearts, circles,
                squares), colour binding (object in top-5 and the dominant hue is the asked one), count (connected
                blobs == N and the object recognised), position (left half shows A and right half shows B). Emoji
                training data has one object per picture, so low numbers here are expected and reported as they are.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from incasa.data import dejavu
from incasa.image.data import STYLE_WORD, STYLES
from incasa.image.eval_classifier import Judge, classifier_splits, images_to_tensor, load_classifier, topk_accuracy

FAMILIES = ("in_distribution", "paraphrase", "it", "es", "fr", "de", "heldout_combo")
PROBES = ("two_objects", "colour", "colour_binding", "count", "position")
# families whose captions describe pictures of the generator's training set (the Fréchet distance uses these)
TRAIN_FAMILIES = ("in_distribution", "paraphrase", "it", "es", "fr", "de")

# paraphrases the generator never saw in training: (article + label, style) -> caption
PARAPHRASES = (
    "a picture of {a_label}, drawn in the {style} look",
    "{style} artwork showing {a_label}",
    "an icon of {a_label} ({style})",
    "{a_label} as the {style} set draws it",
    "emoji art: {label}, {style} flavour",
)
TWO_OBJECTS = (("cat", "dog"), ("red apple", "banana"), ("sun", "umbrella"), ("rocket", "star"), ("fish", "turtle"),
               ("pizza", "cherries"), ("guitar", "soccer ball"), ("rabbit", "carrot"), ("owl", "mushroom"),
               ("snowman", "key"))
COLOUR_SHAPES = ("heart", "circle", "square")
COLOUR_WORDS = ("red", "orange", "yellow", "green", "blue", "purple", "brown", "black", "white", "pink", "grey")
COLOUR_BINDING = (("blue", "banana"), ("green", "star"), ("purple", "fish"), ("red", "ghost"), ("yellow", "rocket"),
                  ("pink", "cactus"), ("blue", "strawberry"), ("orange", "penguin"), ("blue", "tomato"),
                  ("red", "turtle"))
HUES = {"red": (345, 15), "orange": (15, 40), "yellow": (40, 70), "green": (70, 170), "blue": (190, 260),
        "purple": (260, 300), "pink": (300, 345)}  # degrees of HSV hue, [lo, hi)
COUNTS = ((2, "red apple", "two red apples"), (3, "star", "three stars"), (2, "cat", "two cats"),
          (3, "banana", "three bananas"), (2, "rocket", "two rockets"), (3, "strawberry", "three strawberries"),
          (2, "ghost", "two ghosts"), (2, "snowman", "two snowmen"), (3, "key", "three keys"), (2, "owl", "two owls"))


@dataclass(frozen=True)
class EvalConfig:
    data: str = "data/emoji64"  # the emoji dataset the generator was trained on (`incasa data emoji`)
    classifier: str = ""  # judge weights; "" = the shipped incasa/image/eval_default/model.safetensors
    num_prompts: int = 30  # per fidelity family (each language gets half); probes max(4, this // 4), at most 10
    variants: int = 5  # pictures per prompt (diversity needs >= 2)
    steps: int | None = None  # sampler steps; None = the checkpoint's own (generate.sampler_defaults), else 25
    guidance: float | None = None  # None = the checkpoint's own, else 4.0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.num_prompts < 1:
            raise ValueError(f"num_prompts must be >= 1, got {self.num_prompts}")
        if not 1 <= self.variants <= 16:
            raise ValueError(f"variants must be between 1 and 16, got {self.variants}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


@dataclass(frozen=True)
class Prompt:
    text: str
    family: str  # one of FAMILIES or PROBES
    targets: tuple[str, ...]  # hexcodes: one for fidelity, (A, B) for two_objects / position
    style: str
    choices: tuple[str, ...] = ()  # colour probe: the colour family the answer is chosen from
    colour: str = ""  # colour_binding: the asked colour
    count: int = 0  # count probe: how many
    real_key: str = ""  # "<style>_<hexcode>" of the real picture this caption describes (fidelity families)


# ---------------------------------------------------------------- the prompt suite


def _article(label: str) -> str:
    return ("an " if label[:1] in "aeiou" else "a ") + label


def build_prompts(train_metas: list[dict], combo_metas: list[dict], judge: Judge, cfg: EvalConfig) -> list[Prompt]:
    """The seeded prompt suite: fidelity families sampled from the data, then the compositional probes."""
    rng = np.random.default_rng(cfg.seed)
    pool = sorted((m for m in train_metas if judge.knows(m["hexcode"])), key=lambda m: (m["style"], m["hexcode"]))
    if not pool:
        raise ValueError("none of the training pictures' emoji are known to the classifier: wrong classifier?")

    def pick(metas: list[dict], k: int) -> list[dict]:
        return [metas[i] for i in rng.permutation(len(metas))[: min(k, len(metas))]]

    def key(m: dict) -> str:
        return f"{m['style']}_{m['hexcode']}"

    prompts = [Prompt(m["captions"][0], "in_distribution", (m["hexcode"],), m["style"], real_key=key(m))
               for m in pick(pool, cfg.num_prompts)]
    for i, m in enumerate(pick(pool, cfg.num_prompts)):
        label = m["labels"]["en"]
        text = PARAPHRASES[i % len(PARAPHRASES)].format(a_label=_article(label), label=label, style=m["style"])
        prompts.append(Prompt(text, "paraphrase", (m["hexcode"],), m["style"], real_key=key(m)))
    for lang in ("it", "es", "fr", "de"):
        with_lang = [m for m in pool if lang in m["labels"]]
        for m in pick(with_lang, max(1, cfg.num_prompts // 2)):
            text = f"{m['labels'][lang]}, {STYLE_WORD[lang]} {m['style']}"  # the training caption form
            prompts.append(Prompt(text, lang, (m["hexcode"],), m["style"], real_key=key(m)))
    combos = sorted((m for m in combo_metas if judge.knows(m["hexcode"])), key=key)
    prompts += [Prompt(m["captions"][0], "heldout_combo", (m["hexcode"],), m["style"], real_key=key(m))
                for m in pick(combos, cfg.num_prompts)]
    return prompts + probe_prompts(judge, max(4, cfg.num_prompts // 4))


def probe_prompts(judge: Judge, per_probe: int) -> list[Prompt]:
    """GenEval-style probes over the judge's vocabulary (entries whose emoji the judge does not know are skipped)."""
    by_label = {label: h for h, label in sorted(judge.labels.items()) if judge.knows(h)}
    out: list[Prompt] = []

    def style(i: int) -> str:
        return STYLES[i % len(STYLES)]

    pairs = [(a, b) for a, b in TWO_OBJECTS if a in by_label and b in by_label][:per_probe]
    out += [Prompt(f"{_article(a)} and {_article(b)}, {style(i)} style", "two_objects", (by_label[a], by_label[b]),
                   style(i)) for i, (a, b) in enumerate(pairs)]
    colour_items = []
    for shape in COLOUR_SHAPES:
        family = tuple(by_label[f"{c} {shape}"] for c in COLOUR_WORDS if f"{c} {shape}" in by_label)
        colour_items += [(f"{c} {shape}", family) for c in COLOUR_WORDS if f"{c} {shape}" in by_label]
    colour_items = [colour_items[i] for i in np.linspace(0, len(colour_items) - 1, per_probe).astype(int)] \
        if len(colour_items) > per_probe else colour_items
    out += [Prompt(f"{_article(label)}, {style(i)} style", "colour", (by_label[label],), style(i), choices=family)
            for i, (label, family) in enumerate(colour_items)]
    binding = [(c, o) for c, o in COLOUR_BINDING if o in by_label][:per_probe]
    out += [Prompt(f"{_article(c + ' ' + o)}, {style(i)} style", "colour_binding", (by_label[o],), style(i), colour=c)
            for i, (c, o) in enumerate(binding)]
    counts = [(n, o, t) for n, o, t in COUNTS if o in by_label][:per_probe]
    out += [Prompt(f"{t}, {style(i)} style", "count", (by_label[o],), style(i), count=n)
            for i, (n, o, t) in enumerate(counts)]
    out += [Prompt(f"{_article(a)} on the left and {_article(b)} on the right, {style(i)} style", "position",
                   (by_label[a], by_label[b]), style(i)) for i, (a, b) in enumerate(pairs)]
    return out


# ---------------------------------------------------------------- the measures


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2), the trace term through symmetric eigendecompositions."""
    if len(feats_a) < 2 or len(feats_b) < 2:
        raise ValueError("the Fréchet distance needs at least two feature vectors on each side")
    a, b = feats_a.astype(np.float64), feats_b.astype(np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ev, vec = np.linalg.eigh(s_a)
    root_a = (vec * np.sqrt(ev.clip(min=0))) @ vec.T
    cross = np.sqrt(np.linalg.eigvalsh(root_a @ s_b @ root_a).clip(min=0)).sum()  # Tr (S_a^1/2 S_b S_a^1/2)^1/2
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross)


def mean_pairwise_distance(feats_NF: torch.Tensor) -> float:
    """Mean cosine distance over all unordered pairs (NaN for fewer than two vectors)."""
    if len(feats_NF) < 2:
        return float("nan")
    f = F.normalize(feats_NF.float(), dim=1)
    d = 1 - f @ f.T
    iu = torch.triu_indices(len(f), len(f), 1)
    return float(d[iu[0], iu[1]].mean())


def target_scores(logits_BK: torch.Tensor, target_B: torch.Tensor) -> dict[str, float]:
    """Graded fidelity, for generators too weak for top-k to separate: the judge's mean probability of the prompted
    emoji and the median rank of it among all classes (0 = first; chance: num_classes / 2)."""
    if len(target_B) == 0:
        return {"target_prob": float("nan"), "median_rank": float("nan")}
    prob = logits_BK.softmax(1).gather(1, target_B[:, None]).squeeze(1)
    rank = (logits_BK > logits_BK.gather(1, target_B[:, None])).sum(1).float()
    return {"target_prob": float(prob.mean()), "median_rank": float(rank.median())}


def retrieval(logits_BK: torch.Tensor, target_B: torch.Tensor) -> dict[str, float]:
    """Which of this family's prompted emoji does the picture show? Top-1 of the judge restricted to the distinct
    targets of the family (chance: 1 / their number). Coarser than top-k over all classes: it credits a picture that
    gets colour and shape roughly right when the alternatives differ in those."""
    if len(target_B) == 0:
        return {"retrieval_top1": float("nan"), "retrieval_chance": float("nan")}
    cands = torch.unique(target_B)
    pick = cands[logits_BK[:, cands].argmax(1)]
    return {"retrieval_top1": float((pick == target_B).float().mean()), "retrieval_chance": 1 / len(cands)}


def pixel_key(img: Image.Image | np.ndarray) -> str:
    arr = np.ascontiguousarray(np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img, np.uint8))
    return hashlib.sha256(arr.tobytes()).hexdigest()


class TrainingMemory:
    """The generator's training pictures as deja-vu descriptors, searched exhaustively (a few thousand: a matmul)."""

    def __init__(self, images_NHWC: np.ndarray, keys: list[str], cfg: dejavu.DejaVuConfig | None = None,
                 progress=None):
        self.cfg, self.keys = cfg or dejavu.DejaVuConfig(), list(keys)
        projection = dejavu.load_projection()
        task = progress.add_task("describing training pictures", total=len(keys)) if progress else None
        emb, ph, self.pixels = [], [], {}
        for key, arr in zip(self.keys, images_NHWC):
            d = dejavu.describe(Image.fromarray(arr), projection)
            emb.append(d.embedding)
            ph.append(d.phash)
            self.pixels.setdefault(pixel_key(arr), key)
            if progress:
                progress.advance(task)
        self.emb_NE = np.stack(emb)
        self.phash = ph

    def check(self, img: Image.Image) -> dict:
        """{'memorised': bool, 'reason': exact|near|None, 'nearest': key, 'cosine': best cosine}."""
        exact = self.pixels.get(pixel_key(img))
        d = dejavu.describe(img)
        cos = np.maximum(self.emb_NE @ d.embedding, self.emb_NE @ d.embedding_flip)
        best = np.argsort(-cos)[: self.cfg.num_neighbours]
        neighbours = [(self.keys[i], float(cos[i]), min(dejavu.hamming(d.phash, self.phash[i]),
                                                        dejavu.hamming(d.phash_flip, self.phash[i]))) for i in best]
        near = dejavu.decide(neighbours, self.cfg)
        reason = "exact" if exact else ("near" if near else None)
        return {"memorised": reason is not None, "reason": reason, "nearest": exact or neighbours[0][0],
                "cosine": float(cos[best[0]])}


def dominant_colour(img_CHW: torch.Tensor) -> str | None:
    """The named hue range holding most strongly coloured pixels (saturation > 0.35, value > 0.25); None if grey."""
    rgb = img_CHW.permute(1, 2, 0).reshape(-1, 3).numpy()
    counts = dict.fromkeys(HUES, 0)
    for r, g, b in rgb[::2]:  # every other pixel is plenty for a 64x64 picture
        h, s, v = colorsys.rgb_to_hsv(float(r), float(g), float(b))
        if s > 0.35 and v > 0.25:
            deg = h * 360
            for name, (lo, hi) in HUES.items():
                if (lo <= deg < hi) if lo < hi else (deg >= lo or deg < hi):
                    counts[name] += 1
    best = max(counts, key=counts.get)
    return best if counts[best] >= 20 else None


def count_blobs(img_CHW: torch.Tensor, min_area: int = 24) -> int:
    """Connected non-white regions of at least `min_area` pixels (8-connectivity)."""
    from scipy import ndimage

    fg = (img_CHW.min(0).values < 0.85).numpy()
    labels, n = ndimage.label(ndimage.binary_closing(fg), structure=np.ones((3, 3)))
    return int((np.bincount(labels.ravel())[1:] >= min_area).sum()) if n else 0


def views(x_BCHW: torch.Tensor) -> dict[str, torch.Tensor]:
    """The whole picture and four centred half-crops (left, right, top, bottom), for multi-object probes."""
    H, W = x_BCHW.shape[-2:]
    h4, w4 = H // 4, W // 4
    return {"whole": x_BCHW, "left": x_BCHW[..., h4: H - h4, : W // 2], "right": x_BCHW[..., h4: H - h4, W // 2:],
            "top": x_BCHW[..., : H // 2, w4: W - w4], "bottom": x_BCHW[..., H // 2:, w4: W - w4]}


# ---------------------------------------------------------------- evaluation


@dataclass
class RealData:
    """The real pictures evaluation compares against (from the dataset, or a small fixture in tests)."""

    train_images: np.ndarray  # the generator's training pictures [N, H, W, 3] uint8 (memorisation, FD floor)
    train_metas: list[dict]
    reference_images: np.ndarray  # held-out real pictures the judge never trained on (the Fréchet reference)
    combo_images: np.ndarray  # the held-out style x emoji pictures (their captions are a fidelity family)
    combo_metas: list[dict] = field(default_factory=list)

    def pictures(self) -> dict[str, np.ndarray]:
        """"<style>_<hexcode>" -> the real picture, for training and held-out-combo pictures alike."""
        return {f"{m['style']}_{m['hexcode']}": img for img, m in
                zip(list(self.train_images) + list(self.combo_images), self.train_metas + self.combo_metas)}


def load_real_data(root: Path) -> RealData:
    splits = classifier_splits(root)
    tr_img, tr_meta = splits["train"]
    va_img, va_meta = splits["val"]
    co_img, co_meta = splits["combo"]
    # the generator trained on train = judge-train + judge-val; the judge never saw val or combo: the reference
    return RealData(np.concatenate([tr_img, va_img]), tr_meta + va_meta, np.concatenate([va_img, co_img]), co_img,
                    co_meta)


Generate = Callable[[str, int, int], list[Image.Image]]  # (prompt, n, seed) -> n pictures


def evaluate_generator(generate: Generate, prompts: list[Prompt], judge: Judge, real: RealData, *,
                       variants: int = 5, seed: int = 0, memory: TrainingMemory | None = None, progress=None
                       ) -> tuple[dict, list[list[Image.Image]]]:
    """Draw `variants` pictures per prompt and measure them; returns (JSON-able result, the pictures per prompt)."""
    t0 = time.time()
    task = progress.add_task("generating", total=len(prompts)) if progress else None
    images: list[list[Image.Image]] = []
    for i, p in enumerate(prompts):
        images.append(generate(p.text, variants, seed + 1000 * i))
        if progress:
            progress.advance(task)
    t_gen = time.time() - t0
    flat = [im for ims in images for im in ims]
    owner = torch.tensor([i for i, ims in enumerate(images) for _ in ims])
    x = images_to_tensor(flat)
    logits, feats = judge.run(x)
    probs = logits.softmax(1)
    top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
    num_classes = len(judge.classes)

    # ---- fidelity: every variant is one trial of recovering the prompted emoji
    rows, fidelity = [], {}
    for i, p in enumerate(prompts):
        sel = owner == i
        row = {"prompt": p.text, "family": p.family, "style": p.style,
               "targets": [judge.labels.get(h, h) for h in p.targets]}
        if p.family in FAMILIES:
            t = judge.index(p.targets[0])
            row.update(top1=float((top5[sel, 0] == t).float().mean()),
                       top5=float((top5[sel] == t).any(1).float().mean()),
                       target_prob=float(probs[sel, t].mean()),
                       predicted=[judge.labels.get(judge.classes[j], judge.classes[j]) for j in top5[sel, 0].tolist()])
        row["diversity"] = mean_pairwise_distance(feats[sel])
        rows.append(row)
    for fam in FAMILIES:
        idx = [i for i, p in enumerate(prompts) if p.family == fam]
        if not idx:
            continue
        sel = torch.isin(owner, torch.tensor(idx))
        target = torch.tensor([judge.index(prompts[i].targets[0]) for i in owner[sel].tolist()])
        fidelity[fam] = {**topk_accuracy(logits[sel], target), **target_scores(logits[sel], target),
                         **retrieval(logits[sel], target), "num_prompts": len(idx), "num_images": int(sel.sum())}
    gen_fids = [f for f in FAMILIES if f in fidelity]
    headline = ("top1", "top5", "target_prob", "median_rank", "retrieval_top1")
    overall = {k: float(np.mean([fidelity[f][k] for f in gen_fids])) for k in headline} if gen_fids else {}

    # ---- Fréchet distance on judge features, with the floor of as many real training pictures
    _, ref_feats = judge.run(images_to_tensor(real.reference_images))
    key_of = {f"{m['style']}_{m['hexcode']}": i for i, m in enumerate(real.train_metas)}
    fd_idx = [i for i, p in enumerate(prompts) if p.family in TRAIN_FAMILIES and p.real_key in key_of]
    frechet = {"what": "Fréchet distance between Gaussians of the emoji judge's 256-d penultimate features; NOT "
                       "Inception-FID, comparable only between runs with the same judge weights",
               "reference": f"{len(real.reference_images)} held-out real pictures (never seen by the judge)"}
    if len(fd_idx) >= 2 and len(ref_feats) >= 2:
        sel = torch.isin(owner, torch.tensor(fd_idx))
        n, pool = int(sel.sum()), len(real.train_images)
        pick = np.random.default_rng(seed).choice(pool, n, replace=n > pool)
        _, real_feats = judge.run(images_to_tensor(real.train_images[pick]))
        same = np.stack([real.train_images[key_of[prompts[i].real_key]] for i in owner[sel].tolist()])
        _, same_feats = judge.run(images_to_tensor(same))
        frechet.update(generated=frechet_distance(feats[sel].numpy(), ref_feats.numpy()),
                       floor_real_training=frechet_distance(real_feats.numpy(), ref_feats.numpy()),
                       floor_same_prompts=frechet_distance(same_feats.numpy(), ref_feats.numpy()),
                       num_generated=n, num_distinct_prompts=len(fd_idx))

    # ---- diversity and collapse
    copy_p90 = float(judge.meta.get("copy_distance", {}).get("p90", float("nan")))
    within = np.array([r["diversity"] for r in rows], dtype=float)
    firsts = torch.stack([feats[owner == i][0] for i in range(len(prompts))])
    across_generated = mean_pairwise_distance(firsts[torch.tensor(fd_idx)]) if len(fd_idx) >= 2 else float("nan")
    across_real = (mean_pairwise_distance(judge.run(images_to_tensor(np.stack(
        [real.train_images[key_of[prompts[i].real_key]] for i in fd_idx])))[1]) if len(fd_idx) >= 2 else float("nan"))
    diversity = {"within_prompt_mean": float(np.nanmean(within)) if np.isfinite(within).any() else float("nan"),
                 "collapse_threshold": copy_p90,
                 "collapsed_share": float(np.mean(within < copy_p90)) if np.isfinite(within).any() else float("nan"),
                 "across_prompts_generated": across_generated, "across_prompts_real": across_real,
                 "mode_collapse": bool(across_generated < 0.5 * across_real)}
    for r, w in zip(rows, within):
        r["collapsed"] = bool(w < copy_p90)

    # ---- memorisation (deja-vu against the training pictures)
    memorisation = {}
    if memory is not None:
        checks = [memory.check(im) for im in flat]
        flags = np.array([c["memorised"] for c in checks])
        memorisation = {"share": float(flags.mean()),
                        "exact_share": float(np.mean([c["reason"] == "exact" for c in checks])),
                        "nearest_cosine_mean": float(np.mean([c["cosine"] for c in checks])),
                        "rule": asdict(memory.cfg), "per_family": {}}
        for fam in list(FAMILIES) + list(PROBES):
            sel = np.array([prompts[i].family == fam for i in owner.tolist()])
            if sel.any():
                memorisation["per_family"][fam] = float(flags[sel].mean())
        for i, r in enumerate(rows):
            r["memorised"] = int(flags[(owner == i).numpy()].sum())

    # ---- compositional probes
    probes = score_probes(prompts, images, owner, judge, top5, logits)
    result = {"fidelity": fidelity, "fidelity_overall": overall,
              "fidelity_chance": {"top1": 1 / num_classes, "top5": 5 / num_classes, "target_prob": 1 / num_classes,
                                  "median_rank": (num_classes - 1) / 2}, "frechet": frechet,
              "memorisation": memorisation, "diversity": diversity, "probes": probes,
              "num_prompts": len(prompts), "variants": variants, "num_images": len(flat),
              "seconds": {"generate": round(t_gen, 1), "total": round(time.time() - t0, 1)}, "prompts": rows}
    return no_nan(result), images


def no_nan(value):
    """NaN (an undefined measure, e.g. diversity of one variant) -> None, so the JSON is strict JSON."""
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [no_nan(v) for v in value]
    return None if isinstance(value, float) and np.isnan(value) else value


def score_probes(prompts: list[Prompt], images: list[list[Image.Image]], owner: torch.Tensor, judge: Judge,
                 top5: torch.Tensor, logits: torch.Tensor) -> dict:
    out = {}
    for kind in PROBES:
        idx = [i for i, p in enumerate(prompts) if p.family == kind]
        if not idx:
            continue
        passes = []
        for i in idx:
            p, sel = prompts[i], torch.nonzero(owner == i).flatten()
            x = images_to_tensor(images[i])
            if kind in ("two_objects", "count", "position"):
                v_top5 = {name: judge.run(v)[0].topk(top5.shape[1], dim=1).indices for name, v in views(x).items()}
            for j, n in enumerate(sel.tolist()):
                if kind == "two_objects":
                    seen = set().union(*(v[j].tolist() for v in v_top5.values()))
                    ok = all(judge.index(h) in seen for h in p.targets)
                elif kind == "colour":
                    fam = torch.tensor([judge.index(h) for h in p.choices])
                    ok = int(fam[logits[n, fam].argmax()]) == judge.index(p.targets[0])
                elif kind == "colour_binding":
                    ok = judge.index(p.targets[0]) in top5[n].tolist() and dominant_colour(x[j]) == p.colour
                elif kind == "count":
                    seen = set().union(*(v[j].tolist() for v in v_top5.values()))
                    ok = count_blobs(x[j]) == p.count and judge.index(p.targets[0]) in seen
                else:  # position
                    a, b = (judge.index(h) for h in p.targets)
                    ok = a in v_top5["left"][j].tolist() and b in v_top5["right"][j].tolist()
                passes.append(ok)
        chance = (float(np.mean([1 / len(prompts[i].choices) for i in idx])) if kind == "colour" else 0.0)
        out[kind] = {"accuracy": float(np.mean(passes)), "num_prompts": len(idx), "num_images": len(passes),
                     "chance": chance}
    return out


def evaluate_checkpoint(checkpoint: str | Path | None, cfg: EvalConfig = EvalConfig(), *, report: str | Path | None
                        = None, history: list[dict] | None = None, real: RealData | None = None,
                        memory: TrainingMemory | None = None, console=None) -> dict:
    """Evaluate one image checkpoint (None = the shipped default); optionally write the one-page PNG report.

    `history`: earlier results (e.g. of the same run's other checkpoints) drawn as curves on the report.
    `real` / `memory` can be passed in to share them across several checkpoints.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from incasa.image.eval_classifier import DEFAULT_CLASSIFIER
    from incasa.image.generate import generate_images, load_pipeline, sampler_defaults

    judge = load_classifier(cfg.classifier or None, device=cfg.device)
    data_version = json.loads((Path(cfg.data) / "index.json").read_text())["data_version"]
    if judge.meta.get("data_version") != data_version:
        raise ValueError(f"the classifier was trained on emoji data {judge.meta.get('data_version')!r} but {cfg.data} "
                         f"is {data_version!r}; retrain it with `incasa eval train-classifier {cfg.data} OUT`")
    real = real or load_real_data(Path(cfg.data))
    pipe = load_pipeline(checkpoint, device=cfg.device)
    steps, guidance = sampler_defaults(pipe.meta, cfg.steps, cfg.guidance)
    cfg = replace(cfg, steps=steps, guidance=guidance)  # the result records the settings actually used
    prompts = build_prompts(real.train_metas, real.combo_metas, judge, cfg)

    def generate(text: str, n: int, seed: int) -> list[Image.Image]:
        return generate_images(text, n=n, seed=seed, steps=cfg.steps, guidance=cfg.guidance, pipeline=pipe)

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        if memory is None:
            memory = TrainingMemory(real.train_images,
                                    [f"{m['style']}_{m['hexcode']}" for m in real.train_metas], progress=progress)
        result, images = evaluate_generator(generate, prompts, judge, real, variants=cfg.variants, seed=cfg.seed,
                                            memory=memory, progress=progress)
    classifier_path = Path(cfg.classifier) if cfg.classifier else DEFAULT_CLASSIFIER
    result = {"checkpoint": str(checkpoint) if checkpoint else "shipped default", "model": pipe.name,
              "model_hash": pipe.weights_hash, "step": pipe.meta.get("step"), "data": cfg.data, "config": asdict(cfg),
              "classifier": {"path": str(classifier_path), "preset": judge.meta.get("preset"),
                             "num_classes": len(judge.classes),
                             "sha256": hashlib.sha256(classifier_path.read_bytes()).hexdigest()[:10],
                             "held_out_real": judge.meta.get("metrics", {})},
              **result}
    if report is not None:
        from incasa.image.eval_report import write_report

        write_report(result, images, Path(report), history=history or [])
    return result
