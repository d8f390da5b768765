"""Training the deja-vu verifier: copies vs hard negatives of emoji sets the benchmark never sees.

The copy transforms (one per copy) are the standard ones of copy-detection benchmarks: crop keeping 70-90 % of the
area, resize 0.5-2×, JPEG quality 30-90, colour jitter (brightness/contrast/saturation 0.7-1.3, hue ±0.03),
horizontal flip, rotation ≤ 10°, a word of text drawn over it. ``benchmarks/dejavu.py`` imports them from here.

Training pairs come from five emoji styles — Twemoji, OpenMoji, Fluent flat, Fluent modern and EmojiOne 2.2.7
(rendered from SVG at 64 px with resvg), *every skin tone included*: each query is a transformed copy of one picture;
its 4 nearest neighbours in the embedding index are the pairs — the original is the positive, the others (the other
skin tones, the gendered variants, the look-alikes of the same style) are the negatives. ``--jitter-queries`` adds a
batch of copies all under a *wider* colour jitter than the benchmark's (brightness/contrast/saturation 0.55-1.45, hue
±0.06): the strongest benchmark jitters were the weakest copies, and in each such query the original and its skin-tone
siblings are judged against the very same jittered picture. Each pair is aligned and colour-fitted
(``dejavu_verify.align_pair``) once and stored packed (uint8 pictures, mask, fourteen scalars); the CNN
(``dejavu_verify.VerifierNet``) is then trained on them with AdamW and a one-cycle schedule, mirrored pairs as
augmentation, a fifth of the queries held out. The benchmark tests on Noto, another style (and draws its copies with
its own seeds), so no test picture is seen here: Noto is never a training set.

``--sets`` chooses the styles (``STYLE_SETS``; default all five, ``DEFAULT_SETS``, since 26 Nov 2026, session 27;
before it ``twemoji,openmoji,fluent-flat``): ``fluent-modern`` is Fluent's colour style with gradients (same package,
MIT) and ``emojione`` is EmojiOne 2.2.7 (``npm pack emojione@2.2.7``, artwork CC-BY-4.0); Noto is deliberately not
among them. All render with resvg at 64 px (EmojiOne
1,832 of 1,832, Fluent modern 3,145 of 3,145); pixel-identical pictures are kept once across sets (16,337 SVGs of the
five -> 16,081 pictures; the default three: 11,110). With several styles in the index a query's neighbours may be
the same emoji drawn in another style (Twemoji 👍 for a copy of EmojiOne 👍): those are right as negatives — a
different picture of the same idea is not a copy of this one, exactly what the verifier must refuse.

    python -m incasa.data.dejavu_train --npm /work/npmcache [--queries 7000 --pair-seeds 2 3]
                                       [--jitter-queries 4000] [--text-queries 4000] [--num-scalars 14]
                                       [--epochs 12]
                                       [--join verifier.safetensors] [--out incasa/data]
                                       [--pairs-cache pairs.npz] [--workers 2]
                                       [--sets twemoji,openmoji,fluent-flat,fluent-modern,emojione]

``--join`` makes an ensemble: the new net joins the nets of an existing verifier file and the output holds them
all (their logits are averaged). The shipped file is six nets, the two recipes below at seeds 1, 2 and 3, all on the
five default styles (the eighth entry at the end of this docstring):

    python -m incasa.data.dejavu_train --queries 7000 --pair-seeds 2 3 --jitter-queries 0 --num-scalars 7 \
        --epochs 12 --seed S [--join previous/dejavu_verifier.safetensors]     # S = 1, 2, 3
    python -m incasa.data.dejavu_train --queries 7000 --pair-seeds 2 3 --jitter-queries 4000 --num-scalars 14 \
        --epochs 12 --seed S --join previous/dejavu_verifier.safetensors       # S = 1, 2, 3

(they were made as single runs side by side on one shared core each, the seven-number nets from the fourteen-number
run's pairs cache less its jitter batch — query ids >= 200,000 — and the six nets then saved in the order seven-number
seeds 1-3, fourteen-number seeds 1-3 into one file: the same as the ``--join`` sequence; 13 min of pairs with two
workers once, then 16-25 min of epochs per net. Each net is 200 kB; the file 1.2 MB.)

writes ``dejavu_verifier.safetensors`` (200 kB per net), ``dejavu_verifier_metrics.jsonl`` (per epoch: training loss,
held-out pair AUC, held-out query recall at precision 0.99 and 0.95) and ``dejavu_verifier_curve.png`` into
``--out`` (the metrics and curve are the new net's). ``--pairs-cache`` keeps the aligned pairs so a re-train skips
building them (~50 queries/s on a quiet core, ~20 on a shared one). On one shared CPU core: ~2.5-15 min of pairs
per 7,000-query batch, ~1.3-3.5 min per epoch of the 69,000 pairs of seeds 2, 3 and the jitter batch; on a GPU
(CUDA + bf16 autocast) the epochs take seconds.

What came before, measured on the benchmark's calibration half (recall at precision 0.99 / 0.95, a match to a
pixel-identical twin of the original counted as right): a sign-constrained logistic regression over 46 hand-made
residual statistics, 0.62 / 0.89 (an unconstrained one, a gradient-boosted forest and an MLP on those statistics
ranked the hard-negative tail worse; a gradient-boosted forest fitted on the calibration half itself got 0.15 in
5-fold cross-validation, counted without twins: the statistics, not the model, were the limit). A first CNN
(8 epochs on the 54,000 pairs of seeds 2 and 3, seed 0): 0.77 / 0.97 from one view, 0.86 / 0.97 averaging the pair
and its mirror (what ``Verifier.logit`` does); adding the regression's logit to it made it worse (0.79). The shipped
one is the same net trained longer (``--epochs 12 --seed 1``: ~15 min on one shared core after ~15 min of pairs, two
batches in parallel; the held-out curve was still rising at 8): 0.88 / 0.98 from the CNN alone, 0.92 with the
candidates judged together (``dejavu_verify.explain_away``; 0.924, test half 0.935 at precision 0.988); averaging it
with the first CNN did not help (0.92).
Its held-out query recall at precision 0.99 / 0.95 on the training styles is 0.69 / 0.96 (the first: 0.48 / 0.96);
lower than on Noto at 0.99 because Twemoji, OpenMoji and Fluent hold more near-identical siblings. Re-fitting the
colour with clipped (saturated) query pixels treated as censored looked right on brightened copies but, without
re-training on it, lowered the calibration recall (0.86 -> 0.81): the net knows the fit it was trained with; and
re-trained on it, reached 0.91 (not kept). Then (all with explain_away, same seed 1): adding the wide-jitter batch
alone, 0.81; adding it with the seven residual statistics (``dejavu_verify.residual_statistics``), 0.916 (jitter
0.77 -> 0.83, text 0.92 -> 0.85; held-out 0.67 / 0.94 on the training styles, whose held-out fifth now includes the
harder jitter batch); averaging that net with the 0.924 one, 0.933 (the benchmark's own sweep: 0.940) — the
shipped pair. A third net (fourteen numbers, no jitter batch, seed 2) got 0.910 alone (jitter 0.73: the jitter
batch does help the jitter copies once the net reads the residual statistics), 0.930 with the 0.924 one and 0.932
in a trio: not kept. The residual statistics alone separate copies from negatives well overall (pair AUC 0.97-0.98 for
the mean residual) but barely on the hard tail (AUC 0.45-0.65 among the jittered copies and negatives the CNN
ranks wrongly): they help the net more than they decide anything by themselves.

Five styles (``--sets twemoji,openmoji,fluent-flat,fluent-modern,emojione``), judged on the calibration half by a
rule fixed before any run (pass: recall at precision 0.99 >= 0.960, the shipped pair's 0.950 + 0.01, and no
transform's recall down by more than 0.02; a pass would then run the test half once): the shipped two recipes on
70,189 pairs (17,673 copies) of seeds 2, 3 and the jitter batch (54,586 without it): ~9 min of pairs (two workers),
then 17 and 20 min for the two nets trained side by side on one shared core each. Held-out (five styles) recall at
precision 0.99 / 0.95: 0.59 / 0.97 (seven numbers) and 0.61 / 0.96 (fourteen, jitter batch). On the calibration
half (recall; crop, resize, jpeg, jitter, flip, rotate, text), both nets retrained 0.948 (0.95, 0.99, 0.94, 0.84,
1.0, 0.97, 0.94; jpeg -0.033), the shipped seven-number net with the new fourteen-number one 0.944 (jpeg -0.027,
crop -0.007): neither passed, nothing shipped, the test half was not run. Per net (same counting, mirror-twin rule):
the seven-number net fell from 0.939 to 0.911 with the new styles (jpeg 0.95 -> 0.90, jitter 0.78 -> 0.71), the
fourteen-number one rose from 0.923 to 0.941 (jitter 0.83 -> 0.88, text 0.87 -> 0.93); the new seven-number net
with the shipped fourteen-number one, 0.932. One seed each: at 10 false matches the threshold moves a few copies
either way, so per-net differences of ~0.02 are within noise; the pair did not gain.

Five styles again, judged on *both* calibration halves (26 Nov 2026, session 27; shipped). That first try was judged
on Noto alone, before the made-up skin tones (``dejavu_verify.tone_rivals``) and before the benchmark had a second
style (``benchmarks/dejavu.py --style noto-blob``, Noto's 2016-17 artwork), on which the three-style pair reached only
0.899 (calibration) and 0.932 (test) at precision 0.99, jitter 0.71 and text 0.82 the weak transforms there. Rule
(written before any training): the same two recipes on the five styles; candidates C1 = both new nets, C2 = the
shipped seven-number net + the new fourteen-number one; the better mean of the two calibration recalls is chosen
and ships iff blob >= 0.909 (+0.01), Noto >= 0.9674 (0.9724 - 0.005) and no transform down by more than 0.02 in
either style; then both test halves once each, reported whatever they say. Pairs: 70,187 (17,673 copies; 54,580
without the jitter batch); held-out (five styles) recall at precision 0.99 / 0.95: 0.63 / 0.97 (seven numbers),
0.74 / 0.96 (fourteen).

Calibration recall at precision 0.99, overall (crop / resize / jpeg / jitter / flip / rotate / text):

| | Noto | blob |
|---|---|---|
| three-style pair (shipped before) | 0.972 (.96/1.0/.98/.91/1.0/.99/.97) | 0.899 (.94/.97/.92/.71/1.0/.93/.82) |
| C1: both nets on five styles | 0.969 (.96/.99/.96/.91/1.0/.99/.97) | **0.942** (.96/.98/.94/.79/1.0/.97/.95) |
| C2: old seven-number + new fourteen | 0.969 | 0.872 |

C1 passed (Noto's jpeg fell by exactly 0.02, three copies of 150, the limit) and ships. Its test halves (one run
each, ``benchmarks/results/dejavu.json`` and ``dejavu_noto-blob.json``): Noto 0.987 / 0.971 at the plain point (13
false matches; before 0.989 / 0.972, 11) and 0.992 / 0.962 at the margin point (before 0.990 / 0.967); blob 0.994 /
0.956 plain (before 0.993 / 0.932) and 0.994 / 0.940 at the margin point (before 0.994 / 0.916). So the new style
gained 0.024 at both points (text 0.84 -> 0.91, jitter 0.80 -> 0.87) and Noto stayed within its noise; the goal,
judged at the margin point on both styles, is still missed on blob (0.940). C2's collapse on blob says the old
seven-number net was the one that did not transfer: what the extra styles teach is in both nets.

Tried after it and not kept (same session, rule written before the code): a *text* batch, the jitter batch's twin
(``--text-queries 4000``: copies all under ``t_text_wide``, one or two words, 0.10-0.28 of the height, anywhere, half
of them outlined), added to the fourteen-number net's pairs (85,442 pairs; 25 min of epochs). With the shipped
seven-number net, calibration recall at precision 0.99: blob 0.942 -> 0.943 (text 0.95 -> 0.93, jitter 0.79 -> 0.81),
Noto 0.969 -> 0.973 (text 0.97 -> 0.99). The bar was blob +0.01: not shipped, test halves not run.

The seed noise, measured afterwards for information only (declared so before the run; nothing rides on it): the
shipped fourteen-number recipe retrained with ``--seed 2`` on the same pairs, with the shipped seven-number net:
calibration blob 0.960 (seed 1: 0.942), Noto 0.976 (0.969). Single-seed differences of about 0.02 on these halves
are noise, the size of the text batch's effect and of some of the five styles' gain on blob (+0.043 with seed 1).
A rule that averages seeds (or ensembles them) would tell recipes apart better than any one run.

Eighth (session 28, rule written before any training of it): the seed ensemble. E6 = both recipes at seeds 1, 2 and 3
(six nets, logits averaged; seeds 1 are the nets shipped before, the fourteen-number seed 2 is the one just above,
whose calibration halves had been read, so seed 3 was added for both recipes). Ship iff blob calibration >= 0.952
(C1 + 0.01), Noto >= 0.9636 and no transform down by more than 0.02 in either style; then both test halves once
each. Calibration recall at precision 0.99: blob 0.942 -> **0.961** (crop .97, resize .99, jpeg .97, jitter .85,
flip 1.0, rotate .99, text .95), Noto 0.969 -> **0.976** (jitter .91 -> .93); every transform equal or up in both. It
shipped. Test halves (plain point / margin point, precision / recall, false matches of 1,050):

| | plain point | margin point |
|---|---|---|
| blob, C1 | 0.994 / 0.956 (6) | 0.994 / 0.940 (6) |
| **blob, E6** | 0.994 / 0.971 (6) | **0.994 / 0.959 (6)** |
| Noto, C1 | 0.987 / 0.971 (13) | 0.992 / 0.962 (8) |
| **Noto, E6** | 0.984 / 0.977 (17) | **0.987 / 0.976 (14)** |

Blob now meets the goal at the margin point; Noto's recall rose too, but its test half has more false matches than
its calibration half promised (14 at the margin point where the calibration half had 7), so its precision is 0.987
and the goal is still not met on both styles at once. The ensemble is surer everywhere, which moved Noto's chosen
thresholds down (0.84 -> 0.76 plain, 0.91 -> 0.80 margin); the test half's extra false matches sit at those lower
thresholds. Cost: 48-57 ms per decision of two candidates on a shared core (34-40 with two nets); the per-image stage
is unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from incasa.data import dejavu
from incasa.data import dejavu_verify as dv

WORDS = ["sale", "hello", "copy", "meme", "lol", "2024", "wow", "ok", "ciao"]


def flatten(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def t_crop(im, r):
    side = r.uniform(0.7, 0.9) ** 0.5
    w, h = im.size
    cw, ch = int(w * side), int(h * side)
    x, y = r.randint(0, w - cw), r.randint(0, h - ch)
    return im.crop((x, y, x + cw, y + ch))


def t_resize(im, r):
    s = 2 ** r.uniform(-1, 1)
    return im.resize((max(8, int(im.width * s)), max(8, int(im.height * s))), Image.BILINEAR)


def t_jpeg(im, r):
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=r.randint(30, 90))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def colour_jitter(im, r, strength: float, hue: float):
    """Brightness, contrast and saturation each scaled by a factor in 1 +- ``strength``, then the hue (HSV) turned
    by up to +- ``hue`` of a full turn."""
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        im = enhance(im).enhance(r.uniform(1 - strength, 1 + strength))
    h, s, v = im.convert("HSV").split()
    shift = int(r.uniform(-hue, hue) * 255)
    return Image.merge("HSV", (h.point(lambda x: (x + shift) % 256), s, v)).convert("RGB")


def t_jitter(im, r):
    return colour_jitter(im, r, 0.3, 0.03)


def t_jitter_wide(im, r):
    """Training only: half as strong again as the benchmark's jitter on every side, so its whole range lies inside
    what the verifier has seen (the strongest benchmark jitters were its weakest copies)."""
    return colour_jitter(im, r, 0.45, 0.06)


def t_flip(im, r):
    return ImageOps.mirror(im)


def t_rotate(im, r):
    return im.rotate(r.uniform(-10, 10), resample=Image.BILINEAR, fillcolor=(255, 255, 255))


def t_text(im, r):
    im = im.copy()
    font = ImageFont.load_default(size=max(8, int(im.height * r.uniform(0.12, 0.2))))
    ImageDraw.Draw(im).text((r.randint(0, im.width // 2), r.randint(0, im.height * 3 // 4)), r.choice(WORDS),
                            fill=tuple(r.randint(0, 255) for _ in range(3)), font=font)
    return im


def t_text_wide(im, r):
    """Training only: the text overlay, wider than the benchmark's on every side — one or two words, 0.10-0.28 of the
    height (benchmark 0.12-0.20), anywhere (benchmark: left half, top three quarters), and half the time outlined in
    another colour, as meme captions are. On the blob style text was the weakest copy at the margin point. Tried
    as a batch of its own and not kept (the module docstring's last paragraph): the shipped verifier never saw it."""
    im = im.copy()
    font = ImageFont.load_default(size=max(7, int(im.height * r.uniform(0.10, 0.28))))
    words = " ".join(r.choice(WORDS) for _ in range(r.randint(1, 2)))
    stroke = r.choice((0, 0, 1, 2))
    ImageDraw.Draw(im).text((r.randint(-im.width // 8, im.width * 3 // 4), r.randint(-im.height // 8,
                                                                                      im.height * 7 // 8)),
                            words, fill=tuple(r.randint(0, 255) for _ in range(3)), font=font, stroke_width=stroke,
                            stroke_fill=tuple(r.randint(0, 255) for _ in range(3)))
    return im


TRANSFORMS = {"crop": t_crop, "resize": t_resize, "jpeg": t_jpeg, "jitter": t_jitter, "flip": t_flip,
              "rotate": t_rotate, "text": t_text}


# the training styles: name -> (folder of SVGs under --npm, the `npm pack` that provides it)
STYLE_SETS = {
    "twemoji": ("twemoji-svg-15.0.0/package", "@twemoji/svg@15.0.0"),
    "openmoji": ("openmoji-17.0.0/package/color/svg", "openmoji@17.0.0"),
    "fluent-flat": ("fluentui-emoji-1.3.0/package/icons/flat", "fluentui-emoji@1.3.0"),
    "fluent-modern": ("fluentui-emoji-1.3.0/package/icons/modern", "fluentui-emoji@1.3.0"),
    "emojione": ("emojione-2.2.7/package/assets/svg", "emojione@2.2.7"),
}
# the shipped verifier's (since 26 Nov 2026, session 27; before it, the first three)
DEFAULT_SETS = ("twemoji", "openmoji", "fluent-flat", "fluent-modern", "emojione")


def parse_sets(text: str) -> tuple[str, ...]:
    """``"twemoji,emojione"`` -> the set names, checked against ``STYLE_SETS`` (ValueError naming the known ones)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in STYLE_SETS]
    if unknown or not names:
        raise ValueError(f"unknown emoji set(s) {', '.join(unknown) or '(none given)'}: "
                         f"choose from {', '.join(STYLE_SETS)}")
    return names


def set_paths(npm: Path, sets: tuple[str, ...] = DEFAULT_SETS) -> list[tuple[str, Path]]:
    """(set name, SVG path) of every picture of ``sets``, each set sorted by file name; ValueError naming the
    ``npm pack`` to run when a set's folder is missing or holds no SVG."""
    out = []
    for name in sets:
        folder, package = STYLE_SETS[name]
        paths = sorted((npm / folder).glob("*.svg"))
        if not paths:
            raise ValueError(f"emoji set {name!r}: no SVGs under {npm / folder} (run `npm pack {package}` in {npm} "
                             f"and extract it into {npm / folder.split('/')[0]}/)")
        out += [(name, path) for path in paths]
    return out


def render_sets(npm: Path, size: int = 64, sets: tuple[str, ...] = DEFAULT_SETS) -> tuple[list[Image.Image], list[str]]:
    """The SVGs of ``sets`` (default: the five of ``DEFAULT_SETS``) rendered at ``size`` px with resvg, flattened
    onto white; pixel-identical duplicates (within or across sets) dropped. Names are ``set/file stem``."""
    import resvg_py

    images, names, seen = [], [], set()
    for name, path in set_paths(npm, sets):
        png = bytes(resvg_py.svg_to_bytes(svg_path=str(path), width=size, height=size))
        im = flatten(Image.open(io.BytesIO(png)))
        digest = hashlib.sha256(im.tobytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            images.append(im)
            names.append(f"{name}/{path.stem}")
    return images, names


def neighbour_pairs(emb_NE: np.ndarray, d: dejavu.Descriptor, k: int) -> list[tuple[int, float, bool]]:
    """(index, cosine, mirrored) of the k nearest originals: the exhaustive version of SeenIndex.candidates."""
    cos, cos_flip = emb_NE @ d.embedding, emb_NE @ d.embedding_flip
    best = np.maximum(cos, cos_flip)
    top = np.argsort(-best)[:k]
    return [(int(i), float(best[i]), bool(cos_flip[i] > cos[i])) for i in top]


def build_pairs(images: list[Image.Image], num_queries: int, seed: int, progress: bool = True,
                transforms: dict | None = None) -> dict:
    """The aligned pairs of ``num_queries`` transformed copies (one transform each, drawn from ``transforms``:
    default the benchmark's seven) against their 4 nearest neighbours, packed as arrays: query / fitted / warped
    (N, 48, 48, 3 uint8), valid (N, 48, 48 bool), scalars (N, len(SCALAR_NAMES)), label (1 = copy), qid."""
    from rich.progress import track

    proj = dejavu.load_projection()
    descs = [dejavu.describe(im, proj) for im in images]
    emb = np.stack([d.embedding for d in descs])
    r = random.Random(seed)
    transforms = transforms or TRANSFORMS
    min_cosine = dejavu.DejaVuConfig().min_cosine
    packed, labels, qids = [], [], []
    queries = range(num_queries)
    for q in (track(queries, description="training pairs") if progress else queries):
        i = r.randrange(len(images))
        copy = transforms[r.choice(list(transforms))](images[i], r)
        d = dejavu.describe(copy, proj)
        for j, cos, _ in neighbour_pairs(emb, d, 4):
            if cos < min_cosine:
                continue
            packed.append(dv.pack(dv.align_pair(d.thumb, descs[j].thumb), cos))
            labels.append(int(j == i))
            qids.append(q)
    query, fitted, warped, valid, scalars = (np.stack(x) for x in zip(*packed))
    return {"query": query, "fitted": fitted, "warped": warped, "valid": valid, "scalars": scalars,
            "label": np.array(labels), "qid": np.array(qids)}


# the one-transform batches: kind -> its transform (``--jitter-queries``, ``--text-queries``)
WIDE_BATCHES = {"jitter": {"jitter": t_jitter_wide}, "text": {"text": t_text_wide}}


def _pairs_of_seed(job: tuple[Path, int, int, bool, str | None, tuple[str, ...]]) -> dict:
    npm, queries, seed, progress, wide, sets = job
    cv2_threads()
    images, _ = render_sets(npm, sets=sets)
    return build_pairs(images, queries, seed, progress, WIDE_BATCHES[wide] if wide else None)


# the seeds of the wide-jitter and wide-text batches: apart from the --pair-seeds one would pick (small integers)
JITTER_SEED = 1000
TEXT_SEED = 2000


def build_all_pairs(npm: Path, queries: int, seeds: list[int], workers: int = 1, jitter_queries: int = 0,
                    sets: tuple[str, ...] = DEFAULT_SETS, text_queries: int = 0) -> dict:
    """One batch of ``queries`` pairs per seed, plus one of ``jitter_queries`` copies all under the wider training
    jitter (``t_jitter_wide``, seed ``JITTER_SEED``) and one of ``text_queries`` copies all under the wider text
    overlay (``t_text_wide``, seed ``TEXT_SEED``), concatenated in that order (query ids offset by 100,000 per
    batch).

    Why a jitter batch: colour jitter is the one transform whose copies look like the hard negatives — a skin-tone
    sibling *is* a colour change, only a local one — and in the mixed batches it is one query in seven. In each of
    its queries the positive and the negatives (the original's siblings) are judged against the very same jittered
    picture, so the net learns to tell a global colour shift from a recoloured face, not a jitter from no jitter."""
    set_paths(npm, sets)  # a missing set fails here, before any worker starts
    jobs = [(npm, queries, seed, workers == 1, None, sets) for seed in seeds]
    if jitter_queries:
        jobs.append((npm, jitter_queries, JITTER_SEED, workers == 1, "jitter", sets))
    if text_queries:
        jobs.append((npm, text_queries, TEXT_SEED, workers == 1, "text", sets))
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, len(jobs))) as pool:
            batches = list(pool.map(_pairs_of_seed, jobs))
    else:
        batches = [_pairs_of_seed(job) for job in jobs]
    for k, batch in enumerate(batches):
        batch["qid"] = batch["qid"] + 100_000 * k
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


def query_recall(logit_N: np.ndarray, label_N: np.ndarray, qid_N: np.ndarray, target: float) -> float:
    """The benchmark's measure on training pairs: each query keeps its best-scored neighbour; the recall at the
    loosest threshold whose precision is >= ``target`` (a hit on a negative is a false positive)."""
    best: dict[int, tuple[float, int]] = {}
    for s, y, q in zip(logit_N.tolist(), label_N.tolist(), qid_N.tolist()):
        if q not in best or s > best[q][0]:
            best[q] = (s, y)
    ranked = sorted(best.values(), key=lambda sy: -sy[0])
    n_pos = max(1, len(np.unique(qid_N[label_N == 1])))
    tp = fp = 0
    recall = 0.0
    for _, y in ranked:
        tp, fp = tp + y, fp + (1 - y)
        if tp / (tp + fp) >= target:
            recall = max(recall, tp / n_pos)
    return recall


def train(pairs: dict, epochs: int, seed: int, held: np.ndarray, progress: bool = True,
          num_scalars: int = len(dv.SCALAR_NAMES)):
    """Fit a fresh VerifierNet (reading the first ``num_scalars`` scalars) on the pairs not ``held`` out; yields
    (epoch, net, metrics) after every epoch."""
    import torch

    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = dv.make_net(num_scalars).to(device)
    s_train = torch.from_numpy(pairs["scalars"][~held][:, :num_scalars])
    net.scalar_mean.copy_(s_train.mean(0))
    net.scalar_std.copy_(s_train.std(0) + 1e-6)
    idx_train, idx_held = np.flatnonzero(~held), np.flatnonzero(held)

    def batch(idx: np.ndarray):
        image = dv.network_input(pairs["query"][idx], pairs["fitted"][idx], pairs["warped"][idx], pairs["valid"][idx])
        return image.to(device), torch.from_numpy(pairs["scalars"][idx]).to(device)

    bs = 128
    steps = max(1, len(idx_train) // bs)
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * steps)
    y_all = torch.from_numpy(pairs["label"].astype(np.float32))
    gen = np.random.default_rng(seed)
    for epoch in range(epochs):
        net.train()
        order = gen.permutation(idx_train)
        total = 0.0
        for b in range(steps):
            idx = np.sort(order[b * bs:(b + 1) * bs])
            image, scalars = batch(idx)
            if gen.random() < 0.5:  # a mirrored pair is as much (or as little) a copy
                image = image.flip(3)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                logit = net(image, scalars).float()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, y_all[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        net.eval()
        with torch.inference_mode():
            held_logit = np.concatenate([net(*batch(idx_held[i:i + 512])).float().cpu().numpy()
                                         for i in range(0, len(idx_held), 512)]) if len(idx_held) else np.zeros(0)
        y_held, q_held = pairs["label"][idx_held], pairs["qid"][idx_held]
        metrics = {"epoch": epoch + 1, "train_loss": round(total / steps, 5),
                   "heldout_auc": round(auc(held_logit, y_held), 5) if len(idx_held) else None,
                   "heldout_recall_at_p099": round(query_recall(held_logit, y_held, q_held, 0.99), 4),
                   "heldout_recall_at_p095": round(query_recall(held_logit, y_held, q_held, 0.95), 4)}
        if progress:
            print(json.dumps(metrics), flush=True)
        yield epoch, net, metrics


def auc(p_N: np.ndarray, y_N: np.ndarray) -> float:
    order = np.argsort(p_N)
    ranks = np.empty(len(p_N))
    ranks[order] = np.arange(1, len(p_N) + 1)
    n_pos, n_neg = int(y_N.sum()), int((1 - y_N).sum())
    return float((ranks[y_N == 1].sum() - n_pos * (n_pos + 1) / 2) / max(1, n_pos * n_neg))


def write_curve(path: Path, history: list[dict], sets: tuple[str, ...] = DEFAULT_SETS) -> None:
    """Training loss and held-out query recall at precision 0.99 / 0.95, per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [m["epoch"] for m in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(epochs, [m["train_loss"] for m in history])
    a.set_xlabel("epoch")
    a.set_ylabel("training loss (BCE)")
    for key, label in (("heldout_recall_at_p099", "precision 0.99"), ("heldout_recall_at_p095", "precision 0.95")):
        b.plot(epochs, [m[key] for m in history], label=label)
    b.set_xlabel("epoch")
    b.set_ylabel("held-out query recall")
    b.legend()
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.suptitle(f"deja-vu verifier CNN, held-out fifth of the {'/'.join(sets)} queries", fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(
        description="Train the deja-vu verifier CNN on copies of five emoji styles (not Noto).")
    ap.add_argument("--npm", type=Path, default=Path(os.environ.get("INCASA_NPMCACHE", "/work/npmcache")),
                    help="folder with the extracted npm tarballs (twemoji-svg-15.0.0/, openmoji-17.0.0/, "
                         "fluentui-emoji-1.3.0/, emojione-2.2.7/)")
    ap.add_argument("--sets", default=",".join(DEFAULT_SETS),
                    help=f"comma-separated emoji styles to train on, of: {', '.join(STYLE_SETS)}")
    ap.add_argument("--queries", type=int, default=7000,
                    help="transformed copies per pair seed, each paired with its 4 nearest neighbours")
    ap.add_argument("--pair-seeds", type=int, nargs="+", default=[2, 3],
                    help="one batch of --queries copies per seed (batches are independent: see --workers)")
    ap.add_argument("--jitter-queries", type=int, default=4000,
                    help="an extra batch of copies all under the wider training colour jitter (t_jitter_wide), "
                         "each paired with its 4 nearest neighbours; 0: none")
    ap.add_argument("--text-queries", type=int, default=0,
                    help="an extra batch of copies all under the wider training text overlay (t_text_wide), each "
                         "paired with its 4 nearest neighbours; 0: none")
    ap.add_argument("--workers", type=int, default=1, help="processes building the pair batches in parallel")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--out", type=Path, default=dv.VERIFIER_FILE.parent, help="folder for the verifier files")
    ap.add_argument("--pairs-cache", type=Path, default=None,
                    help="an .npz of aligned pairs: read when it exists, else built and written there")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-scalars", type=int, default=len(dv.SCALAR_NAMES),
                    help=f"how many of the pair's scalars the net reads (the first ones of: "
                         f"{', '.join(dv.SCALAR_NAMES)})")
    ap.add_argument("--join", type=Path, default=None,
                    help="a verifier file whose nets the new one joins: the output holds them all, and the verdict "
                         "is their mean logit")
    args = ap.parse_args()
    try:
        sets = parse_sets(args.sets)
        if args.pairs_cache is None or not args.pairs_cache.exists():
            set_paths(args.npm, sets)
    except ValueError as e:
        ap.error(str(e))
    if args.jitter_queries < 0 or args.text_queries < 0:
        ap.error("--jitter-queries and --text-queries count copies: 0 or more")
    if not 1 <= args.num_scalars <= len(dv.SCALAR_NAMES):
        ap.error(f"--num-scalars must be 1..{len(dv.SCALAR_NAMES)}")
    if args.join is not None and not args.join.is_file():
        ap.error(f"--join {args.join}: no such verifier file")
    import torch

    torch.set_num_threads(1)
    cv2_threads()
    t0 = time.time()
    if args.pairs_cache is not None and args.pairs_cache.exists():
        with np.load(args.pairs_cache) as z:
            pairs = {k: z[k] for k in z.files}
    else:
        pairs = build_all_pairs(args.npm, args.queries, args.pair_seeds, args.workers, args.jitter_queries, sets,
                                args.text_queries)
        if args.pairs_cache is not None:
            tmp = args.pairs_cache.with_name(args.pairs_cache.name + ".tmp.npz")
            np.savez_compressed(tmp, **pairs)
            os.replace(tmp, args.pairs_cache)
    held = pairs["qid"] % 5 == 0  # a fifth of the queries, for honest held-out numbers
    history = []
    args.out.mkdir(parents=True, exist_ok=True)
    command = (f"python -m incasa.data.dejavu_train --queries {args.queries} --pair-seeds "
               f"{' '.join(map(str, args.pair_seeds))} --jitter-queries {args.jitter_queries} "
               + (f"--text-queries {args.text_queries} " if args.text_queries else "")
               + f"--num-scalars {args.num_scalars} --epochs {args.epochs} --seed {args.seed}"
               + (f" --sets {','.join(sets)}" if sets != DEFAULT_SETS else ""))
    members: tuple = ()
    if args.join is not None:
        # read before the first epoch overwrites it, when --join is the file this run writes
        members = dv.load_verifier(args.join.resolve()).nets
        command = f"{verifier_command(args.join)} ; then {command} --join <that file>"
    for _, net, metrics in train(pairs, args.epochs, args.seed, held, num_scalars=args.num_scalars):
        metrics["seconds"] = round(time.time() - t0, 1)
        history.append(metrics)
        # every epoch leaves a usable model behind: a killed run still ships its last finished epoch
        dv.save_verifier(args.out / dv.VERIFIER_FILE.name, [*members, net.float().cpu()],
                         {"command": command, "metrics": json.dumps(metrics), "pairs": str(len(pairs["label"]))})
        net.to("cuda" if torch.cuda.is_available() else "cpu")
        tmp = args.out / "dejavu_verifier_metrics.jsonl.tmp"
        tmp.write_text("".join(json.dumps({**m, "command": command, "pairs": len(pairs["label"]),
                                           "positives": int(pairs["label"].sum())}) + "\n" for m in history))
        os.replace(tmp, args.out / "dejavu_verifier_metrics.jsonl")
        write_curve(args.out / "dejavu_verifier_curve.png", history, sets)
    print(json.dumps(history[-1], indent=1))


def verifier_command(path: Path) -> str:
    """The training command stored in a verifier file."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return (f.metadata() or {}).get("command", "unknown")


def cv2_threads() -> None:
    import cv2

    cv2.setNumThreads(1)  # one core, as the rest of the per-image work


if __name__ == "__main__":
    main()
