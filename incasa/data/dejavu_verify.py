"""Verification of deja-vu candidates: align the two pictures, undo a global colour change, and judge what is left.

The ANN index (``dejavu.SeenIndex``) finds the originals a candidate *might* copy: its 64-d embedding puts the true
original among the 8 nearest for >= 99 % of copies under every benchmark transform, crops and rotations included.
What it cannot do is tell a copy from a *hard negative* — the same emoji in another skin tone, or a sibling drawn
in the same style (😈 vs 👿, man vs woman golfing) — because those differ in 1-5 % of their pixels and score cosine
> 0.99. This module makes that call on each candidate pair, at the pixels:

1. **thumbnails** — both pictures as 48×48 RGB (flattened onto white), stored in the index beside the embedding;
2. **geometric alignment** — ECC (Evangelidis & Psarakis, PAMI 2008; ``cv2.findTransformECC``) fits the affine warp
   that maps the candidate onto the original, starting from identity: crops (a zoom + shift), rescaling and
   rotations up to ~10° lie within its basin; a mirrored copy is aligned against the mirrored original;
3. **colour alignment** — a least-squares fit of the global colour changes a copy may carry: gain, a blend with the
   luminance (saturation, contrast), a small rotation about the grey axis (hue) and an offset, refit once without
   the worst 10 % of pixels (a weak ridge keeps it near "no change"). It cannot recolour one region while leaving
   the rest unchanged — though for an emoji that is nearly all skin, another tone *is* almost a global change;
4. **residual statistics** — what differs after the geometric alignment, with and without the colour fit, split by
   kind: luminance vs chroma, in flat areas vs near edges, at several thresholds, each pixel compared with the best
   of its 3×3 neighbours (edges a fraction of a pixel off are no change); plus the largest changed flat region,
   whether the changed pixels are one colour in the copy (an overlay) or in the original (a recolouring), the ECC
   correlation, the overlap, the cosine and the colour coefficients;
5. **a learned verdict** — logistic regression on those features, trained on augmented copies vs their ANN
   neighbours (siblings and skin tones included) of *other* emoji sets (Twemoji, OpenMoji, Fluent; see
   ``dejavu_train.py``), giving P(copy). The deja-vu rule thresholds it.

Everything here is numpy + OpenCV on 48×48 pixels: ~1-2 ms per candidate pair on one core.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from incasa.data.dejavu import thumbnail  # noqa: F401  (the thumbnail lives with the descriptor; re-exported)

VERIFIER_FILE = Path(__file__).with_name("dejavu_verifier.safetensors")
VERIFIER_VERSION = "ecc48-lr-v7"
_LUM = np.array([0.299, 0.587, 0.114], np.float32)
_CB = np.array([-0.1687, -0.3313, 0.5], np.float32)
_CR = np.array([0.5, -0.4187, -0.0813], np.float32)
_GREY = np.ones(3, np.float32) / np.sqrt(3)
_KERNEL3 = np.ones((3, 3), np.uint8)
_NO_CHANGE = np.array([1.0, 0.0, 0.0, 0.0])  # gain, luma, hue, offset of the identity colour map
LUM_T = (0.04, 0.08, 0.16, 0.32)
CHROMA_T = (0.02, 0.04, 0.08, 0.16)
_STATS = [f"{kind}>{t}@{where}" for kind, ts in (("lum", LUM_T), ("chroma", CHROMA_T)) for where in ("flat", "edge")
          for t in ts] + ["blob_chroma_flat", "blob_lum_flat"]
FEATURE_NAMES = tuple([f"fit:{n}" for n in _STATS] + [f"same:{n}" for n in _STATS] +
                      ["ecc", "overlap", "flat_share", "cosine", "colour_gain", "colour_luma", "colour_hue",
                       "colour_offset", "overlay_uniform", "original_uniform"])
NUM_FEATURES = len(FEATURE_NAMES)


def align(query_HW3: np.ndarray, original_HW3: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(ECC correlation, original warped into the query's frame, valid-pixel mask). Inputs float32 in [0, 1]."""
    q_grey = np.ascontiguousarray(query_HW3 @ _LUM)
    o_grey = np.ascontiguousarray(original_HW3 @ _LUM)
    warp = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
    try:
        cc, warp = cv2.findTransformECC(q_grey, o_grey, warp, cv2.MOTION_AFFINE, criteria, None, 5)
    except cv2.error:  # a diverging affine fit: retry with a rigid motion (fewer degrees of freedom)
        try:
            warp = np.eye(2, 3, dtype=np.float32)
            cc, warp = cv2.findTransformECC(q_grey, o_grey, warp, cv2.MOTION_EUCLIDEAN, criteria, None, 5)
        except cv2.error:  # flat images: no alignment, and the features will say "nothing matches"
            return 0.0, np.zeros_like(query_HW3), np.zeros(query_HW3.shape[:2], bool)
    size = (query_HW3.shape[1], query_HW3.shape[0])
    warped = cv2.warpAffine(original_HW3, warp, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(-1.0, -1.0, -1.0))
    # the border of the warped picture mixes in the fill value: keep only pixels well inside it
    valid = cv2.erode((warped.min(-1) >= 0).astype(np.uint8), _KERNEL3).astype(bool)
    return float(cc), warped, valid


def _colour_design(x_N3: np.ndarray) -> np.ndarray:
    """Columns of the global colour model, for all three channels stacked: (3N, 4).

    Brightness b, contrast c (a blend with the mean grey m), saturation s (a blend with the luma L) compose to
    x' = (c s b) x + (c (1 - s) b) L(x) + (1 - c) m: a gain, a luma term and an offset; plus a small hue rotation
    about the grey axis, linearised. Four numbers shared by the three channels — not a free colour matrix, which
    could turn one skin tone into another."""
    n = len(x_N3)
    luma = np.repeat((x_N3 @ _LUM)[:, None], 3, 1)
    hue = np.cross(_GREY[None], x_N3)
    return np.stack([x_N3.ravel(), luma.ravel(), hue.ravel(), np.ones(3 * n, np.float32)], 1)


def colour_fit(query_HW3: np.ndarray, warped_HW3: np.ndarray, valid_HW: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """(the warped original after the best global colour change towards the query, clipped to [0, 1] as pixels
    are; the 4 coefficients: gain, luma, hue, offset). Robust least squares: refit without the worst 10 %."""
    x, y = warped_HW3[valid_HW], query_HW3[valid_HW]
    a_all = _colour_design(x)
    keep = np.ones(len(x), bool)
    for _ in range(2):
        # a weak ridge towards "no change": on a grey picture the gain and luma columns are the same column
        a_k, y_k = _colour_design(x[keep]), y[keep].ravel()
        lam = 1e-3 * len(y_k)
        coef = np.linalg.solve(a_k.T @ a_k + lam * np.eye(4), a_k.T @ y_k + lam * _NO_CHANGE)
        err = np.abs(np.clip(a_all @ coef, 0, 1) - y.ravel()).reshape(-1, 3).max(1)
        keep = err <= np.quantile(err, 0.9)
    fitted = np.clip(_colour_design(warped_HW3.reshape(-1, 3)) @ coef, 0, 1).reshape(warped_HW3.shape)
    return fitted.astype(np.float32), coef.astype(np.float32)


def _edges(x_HW3: np.ndarray) -> np.ndarray:
    g = x_HW3 @ _LUM
    return np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)) > 1.0


def _largest_blob(mask_HW: np.ndarray) -> int:
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask_HW.astype(np.uint8), connectivity=8)
    return int(stats[1:, cv2.CC_STAT_AREA].max()) if n > 1 else 0


def _tolerant_residual(q: np.ndarray, x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per pixel, the smallest |q - x| (projected on ``weights``) over x's 3×3 neighbourhood: an edge that the
    alignment left a fraction of a pixel off leaves no residual, a recoloured region or a new stroke does."""
    qw, xw = q @ weights, x @ weights
    pad = np.pad(xw, 1, mode="edge")
    h, w = qw.shape
    return np.min([np.abs(qw - pad[dy:dy + h, dx:dx + w]) for dy in range(3) for dx in range(3)], axis=0)


def _residual_stats(qb: np.ndarray, xb: np.ndarray, flat: np.ndarray, edgy: np.ndarray, n_valid: int
                    ) -> list[float]:
    """The 18 residual numbers of one colour hypothesis: fractions above each threshold (luminance / chroma, flat /
    edge) and the largest changed flat regions."""
    res_lum = _tolerant_residual(qb, xb, _LUM)
    res_chroma = _tolerant_residual(qb, xb, _CB) + _tolerant_residual(qb, xb, _CR)
    out = []
    for res, ts in ((res_lum, LUM_T), (res_chroma, CHROMA_T)):
        for where in (flat, edgy):
            out += [float((res[where] > t).sum()) / n_valid for t in ts]
    return out + [_largest_blob(flat & (res_chroma > 0.04)) / n_valid, _largest_blob(flat & (res_lum > 0.08)) / n_valid]


def pair_features(query_thumb: np.ndarray, original_thumb: np.ndarray, cosine: float, mirrored: bool
                  ) -> np.ndarray:
    """The NUM_FEATURES numbers the verifier judges, for one (candidate, indexed original) pair of uint8 thumbs."""
    q = query_thumb.astype(np.float32) / 255
    o = original_thumb.astype(np.float32) / 255
    if mirrored:
        o = np.ascontiguousarray(o[:, ::-1])
    cc, warped, valid = align(q, o)
    n_valid = int(valid.sum())
    if n_valid < 0.25 * valid.size:  # alignment failed or almost no overlap: the worst possible residuals
        return np.array([1.0] * 36 + [cc, n_valid / valid.size, 0.0, cosine, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                        np.float32)
    fitted, coef = colour_fit(q, warped, valid)
    # a blur on both: resampling (resize, rotation, crop) moves and softens edges by a fraction of a pixel
    qb = cv2.GaussianBlur(q, (0, 0), 1.0)
    edge = cv2.dilate((_edges(q) | _edges(fitted)).astype(np.uint8), _KERNEL3).astype(bool)
    flat, edgy = valid & ~edge, valid & edge
    # two hypotheses: the colours were changed globally (jitter), or not at all (every other transform); a copy
    # fits one of them, a recoloured sibling neither
    feats = _residual_stats(qb, cv2.GaussianBlur(fitted, (0, 0), 1.0), flat, edgy, n_valid)
    feats += _residual_stats(qb, cv2.GaussianBlur(warped, (0, 0), 1.0), flat, edgy, n_valid)
    feats += [cc, n_valid / valid.size, float(flat.sum()) / n_valid, cosine, *coef.tolist()]
    # what kind of change is left: an overlay (text, a sticker) paints the changed pixels of the query in one colour
    # over varied content; a recoloured region (another skin tone) is one colour in the original and shaded in
    # the query; a redrawn detail (another mouth) is neither
    diff = qb - cv2.GaussianBlur(fitted, (0, 0), 1.0)
    changed = valid & ((np.abs(diff @ _LUM) > 0.08) | (np.abs(diff @ _CB) + np.abs(diff @ _CR) > 0.08))
    feats += [_uniform_share(q[changed]), _uniform_share(fitted[changed])]
    return np.array(feats, np.float32)


def _uniform_share(colours_N3: np.ndarray) -> float:
    """The share of ``colours`` within 0.12 (per channel) of their median colour; 0 when there are fewer than 4."""
    if len(colours_N3) < 4:
        return 0.0
    return float((np.abs(colours_N3 - np.median(colours_N3, 0)).max(1) < 0.12).mean())


def transform_features(f_NF: np.ndarray) -> np.ndarray:
    """The model's input: fractions on a log scale (a 1 % change must weigh against 0 %, not against 30 %), and the
    colour coefficients as their distance from "no change"."""
    f = f_NF.astype(np.float32).copy()
    f[:, :36] = np.log(f[:, :36] + 1e-3)
    f[:, 40:44] = np.abs(f[:, 40:44] - _NO_CHANGE)
    return f


# the sign each weight may take: more unexplained change, or a bigger colour change, never makes a pair *more* of a
# copy (-1); a better alignment, more overlap or a closer embedding never makes it less of one (+1); 0: free
SIGNS = np.array([-1.0] * 36 + [1.0, 1.0, 0.0, 1.0] + [-1.0] * 4 + [0.0, 0.0], np.float32)


@dataclass(frozen=True)
class Verifier:
    """Logistic regression: P(copy) = sigmoid(w · ((transform_features(x) - mean) / std) + b).

    Deliberately linear and sign-constrained (``SIGNS``), so monotone: more unexplained change never makes a pair
    *more* of a copy. That is what lets it extrapolate — to the tail of hard negatives a high-precision operating
    point is about, and to pictures unlike the emoji it was trained on — where an MLP or an unconstrained fit on the
    same pairs ranked worse (see the docstring of dejavu_train.py).
    """

    mean: np.ndarray  # F
    std: np.ndarray  # F
    w: np.ndarray  # F
    b: float

    def logit(self, f_NF: np.ndarray) -> np.ndarray:
        return ((transform_features(f_NF) - self.mean) / self.std) @ self.w + self.b  # N

    def probability(self, f_NF: np.ndarray) -> np.ndarray:
        return 0.5 * (1 + np.tanh(0.5 * self.logit(f_NF).astype(np.float64)))  # N; the sigmoid, without overflow


def save_verifier(path: Path, v: Verifier, metadata: dict[str, str]) -> None:
    import os

    from safetensors.numpy import save_file

    tmp = path.with_suffix(".tmp")
    save_file({"mean": v.mean, "std": v.std, "w": v.w, "b": np.array([v.b], np.float32)}, str(tmp),
              metadata={"version": VERIFIER_VERSION, "features": ",".join(FEATURE_NAMES), **metadata})
    tmp.chmod(0o644)  # a package asset: readable by every user
    os.replace(tmp, path)


_VERIFIER: Verifier | None = None


def load_verifier(path: Path = VERIFIER_FILE) -> Verifier:
    """The shipped verifier (read once per process), or the one at ``path``."""
    global _VERIFIER  # the package's file never changes under a running process
    if path == VERIFIER_FILE and _VERIFIER is not None:
        return _VERIFIER
    from safetensors import safe_open

    with safe_open(str(path), "numpy") as f:
        meta = f.metadata() or {}
        if meta.get("version") != VERIFIER_VERSION:
            raise ValueError(f"{path} is verifier {meta.get('version')!r}, this code needs {VERIFIER_VERSION!r}: "
                             "retrain it with `python -m incasa.data.dejavu_train`")
        t = {k: f.get_tensor(k) for k in f.keys()}
    v = Verifier(t["mean"], t["std"], t["w"], float(t["b"][0]))
    if path == VERIFIER_FILE:
        _VERIFIER = v
    return v


def fit_verifier(f_NF: np.ndarray, y_N: np.ndarray, l2: float = 1.0) -> Verifier:
    """Fit the logistic regression on (pair features, 1 = copy / 0 = not a copy): full-batch L-BFGS on the mean
    log-loss + l2 / (2 N) · |w|² (scikit-learn's C = 1 / l2), deterministic."""
    import torch

    x = transform_features(f_NF).astype(np.float64)
    mean, std = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy((x - mean) / std)
    yt = torch.from_numpy(y_N.astype(np.float64))
    signs = torch.from_numpy(SIGNS.astype(np.float64))
    u = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([u, b], max_iter=1000, tolerance_grad=1e-9, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def weights() -> torch.Tensor:  # sign-constrained weights: signs * softplus(u), or u where the sign is free
        return torch.where(signs == 0, u, signs * torch.nn.functional.softplus(u))

    def closure():
        opt.zero_grad()
        w = weights()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt)
        loss = loss + l2 / (2 * len(yt)) * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return Verifier(mean.astype(np.float32), std.astype(np.float32), weights().detach().numpy().astype(np.float32),
                    float(b.detach()))
