"""The independent judge of image evaluation: a small CNN that names the emoji in a 64x64 picture.

Prompt fidelity needs something that looks at a generated picture and says which emoji it shows, without sharing
anything with the generator. This classifier is trained here, from scratch, on the *real* emoji artwork only (all
four styles, never a generated image), with strong augmentations so that it recognises an emoji across styles and
through the blur, noise and off-centre framing a young generator produces:

    random resized crop + small rotation (white fill)   mild colour jitter (brightness, contrast, saturation; no hue
    Gaussian blur, down-and-up resampling               shift: "red heart" vs "orange heart" is a colour question)
    Gaussian noise, JPEG re-encoding                    no horizontal flip: "left arrow" vs "right arrow" are classes

Classes are the emoji (hexcodes) of the generator's train split. The judge's own honesty check is on real images it
never saw: a deterministic ~1-in-12 slice of the train split ("val", only from emoji with >= 3 pictures, so every
class keeps examples of other styles) and the whole heldout_combo split (an emoji in a style that neither the
generator nor the classifier ever saw it in). Top-1/top-5 on both are stored in the weights' metadata.

The network (x in [0, 1], shapes with B = batch):
    stem conv3x3/2 -> [B, w, 32, 32] -> 4 residual stages (w, 2w, 4w, 8w; stride 2 after the first)
    -> global average pool -> features [B, 8w]  (the penultimate layer: Fréchet distance and diversity use it)
    -> linear -> logits [B, num_classes]
At the "small" preset (w = 32) it has ~1.7 M parameters, 3.4 MB in half precision.

Train:  incasa eval train-classifier data/emoji64 runs/emoji-classifier   (CUDA + bf16 autocast when present)
The shipped weights (eval_default/) took 4000 steps of 256 pictures, 262 s on one H200; on one CPU core a step of
128 pictures takes 0.6-0.9 s.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from incasa.image.data import load_split

DEFAULT_CLASSIFIER = Path(__file__).parent / "eval_default" / "model.safetensors"
KIND = "incasa-emoji-classifier"
SIZE = 64  # the classifier's input side; other sizes are resized to it


@dataclass(frozen=True)
class ClassifierConfig:
    num_classes: int
    width: int = 32  # channels of the first stage; each later stage doubles it

    @property
    def feature_dim(self) -> int:
        return self.width * 8


PRESETS: dict[str, int] = {"tiny": 8, "small": 32}  # preset -> width


class Block(nn.Module):
    """A pre-activation-free basic residual block (conv-BN-ReLU-conv-BN + skip), as in ResNet-18."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class EmojiClassifier(nn.Module):
    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.stages = nn.Sequential(Block(w, w, 1), Block(w, 2 * w, 2), Block(2 * w, 4 * w, 2), Block(4 * w, 8 * w, 2))
        self.head = nn.Linear(8 * w, cfg.num_classes)

    def features(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        """x in [0, 1] (any size; resized to 64) -> penultimate features [B, 8w]."""
        if x_BCHW.shape[-2:] != (SIZE, SIZE):
            x_BCHW = F.interpolate(x_BCHW, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)
        h = self.stages(self.stem((x_BCHW - 0.5) / 0.25))
        return h.mean((2, 3))

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x_BCHW))


# ---------------------------------------------------------------- augmentations (batched, on tensors in [0, 1])


def augment(x_BCHW: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """The training augmentations; `strength` scales every range (0 = identity). Deterministic given `gen`."""
    B, _, H, W = x_BCHW.shape

    def u(lo, hi, n=B):
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    s = strength
    # random resized crop + rotation + shift, as one affine map; white outside the picture (emoji sit on white)
    scale = torch.exp(u(np.log(1 - 0.35 * s), np.log(1 + 0.25 * s)))  # >1 zooms out: smaller emoji
    aspect = torch.exp(u(-0.15 * s, 0.15 * s))
    angle = u(-0.2 * s, 0.2 * s)  # radians, ~ +-11 degrees
    sx, sy = scale * aspect, scale / aspect
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([sx * cos, -sy * sin, u(-0.12 * s, 0.12 * s)], 1),
                         torch.stack([sx * sin, sy * cos, u(-0.12 * s, 0.12 * s)], 1)], 1)  # [B, 2, 3]
    grid = F.affine_grid(theta, list(x_BCHW.shape), align_corners=False)
    x = F.grid_sample(x_BCHW - 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1
    # mild colour jitter: keeps hue, so colour-defined classes stay themselves
    x = x * u(1 - 0.15 * s, 1 + 0.15 * s).view(B, 1, 1, 1)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * u(1 - 0.2 * s, 1 + 0.2 * s).view(B, 1, 1, 1) + mean
    grey = x.mean(1, keepdim=True)
    x = (x - grey) * u(1 - 0.25 * s, 1 + 0.25 * s).view(B, 1, 1, 1) + grey
    # blur (30%): a per-sample Gaussian, as one grouped convolution
    sigma = torch.where(torch.rand(B, generator=gen) < 0.3 * min(s, 1), u(0.3, 1.4 * s + 1e-3), torch.zeros(B))
    r = torch.arange(-2, 3, dtype=torch.float32)
    k = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    k = k / k.sum(1, keepdim=True)  # sigma 0 -> a delta
    k2 = (k[:, :, None] * k[:, None, :]).repeat_interleave(3, 0)[:, None]  # [B*3, 1, 5, 5]
    x = F.conv2d(F.pad(x.reshape(1, B * 3, H, W), (2, 2, 2, 2), mode="replicate"), k2, groups=B * 3).view(B, 3, H, W)
    # down-and-up resampling (20%): the soft look of a low-resolution generator
    low = torch.rand(B, generator=gen) < 0.2 * min(s, 1)
    if low.any():
        side = int(torch.randint(20, 48, (1,), generator=gen))
        small = F.interpolate(x[low], size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        x[low] = F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)
    # Gaussian noise (30%)
    noisy = (torch.rand(B, generator=gen) < 0.3 * min(s, 1)).float() * u(0.01, 0.08 * s + 1e-3)
    x = x + noisy.view(B, 1, 1, 1) * torch.randn(x.shape, generator=gen)
    x = x.clamp(0, 1)
    # JPEG (25%), through PIL
    jpeg = torch.rand(B, generator=gen) < 0.25 * min(s, 1)
    quality = torch.randint(25, 86, (B,), generator=gen)
    for i in torch.nonzero(jpeg).flatten().tolist():
        buf = io.BytesIO()
        to_pil(x[i]).save(buf, format="JPEG", quality=int(quality[i]))
        x[i] = torch.from_numpy(np.asarray(Image.open(buf).convert("RGB")).copy()).permute(2, 0, 1).float() / 255
    return x


def to_pil(x_CHW: torch.Tensor) -> Image.Image:
    return Image.fromarray((x_CHW.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


def from_pil(img: Image.Image) -> torch.Tensor:
    """PIL image -> float [3, 64, 64] in [0, 1] (flattened onto white if transparent)."""
    if img.mode in ("RGBA", "LA", "P"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(canvas, rgba)
    img = img.convert("RGB")
    if img.size != (SIZE, SIZE):
        img = img.resize((SIZE, SIZE), Image.LANCZOS)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255


def images_to_tensor(images) -> torch.Tensor:
    """A list of PIL images or a uint8 array [N, H, W, 3] -> float [N, 3, 64, 64] in [0, 1]."""
    if isinstance(images, np.ndarray):
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        if x.shape[-2:] != (SIZE, SIZE):
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)
        return x
    return torch.stack([from_pil(im) for im in images]) if images else torch.zeros(0, 3, SIZE, SIZE)


# ---------------------------------------------------------------- data: which real images train and which judge


def is_val(style: str, hexcode: str) -> bool:
    """The deterministic ~1-in-12 slice of the train split that the classifier never trains on."""
    return int(hashlib.sha256(f"cls-val/{style}/{hexcode}".encode()).hexdigest(), 16) % 12 == 0


def _split_or_empty(root: Path, split: str) -> tuple[np.ndarray, list[dict]]:
    index = json.loads((root / "index.json").read_text()) if (root / "index.json").exists() else None
    if index is not None and not index["shards"].get(split):
        return np.zeros((0, index["size"], index["size"], 3), np.uint8), []
    return load_split(root, split)


def classifier_splits(root: Path) -> dict[str, tuple[np.ndarray, list[dict]]]:
    """train (classifier training), val (held-out slice of the train split) and combo (the heldout_combo split)."""
    images, metas = _split_or_empty(root, "train")
    per_emoji: dict[str, int] = {}
    for m in metas:
        per_emoji[m["hexcode"]] = per_emoji.get(m["hexcode"], 0) + 1
    val = np.array([per_emoji[m["hexcode"]] >= 3 and is_val(m["style"], m["hexcode"]) for m in metas], dtype=bool)
    combo_images, combo_metas = _split_or_empty(root, "heldout_combo")
    return {"train": (images[~val], [m for m, v in zip(metas, val) if not v]),
            "val": (images[val], [m for m, v in zip(metas, val) if v]),
            "combo": (combo_images, combo_metas)}


# ---------------------------------------------------------------- loading and scoring


@dataclass
class Judge:
    """A loaded classifier with its class list (hexcodes) and the English label of each class."""

    model: EmojiClassifier
    classes: list[str]
    labels: dict[str, str]  # hexcode -> English label
    meta: dict
    device: torch.device
    positions: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.positions = {h: i for i, h in enumerate(self.classes)}

    def index(self, hexcode: str) -> int:
        return self.positions[hexcode]

    def knows(self, hexcode: str) -> bool:
        return hexcode in self.positions

    @torch.no_grad()
    def run(self, x_BCHW: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (logits [B, num_classes], features [B, 8w]) on the CPU, in float32."""
        logits, feats = [], []
        for i in range(0, len(x_BCHW), batch):
            f = self.model.features(x_BCHW[i: i + batch].to(self.device))
            feats.append(f.float().cpu())
            logits.append(self.model.head(f).float().cpu())
        if not logits:
            return torch.zeros(0, len(self.classes)), torch.zeros(0, self.model.cfg.feature_dim)
        return torch.cat(logits), torch.cat(feats)


def load_classifier(path: str | Path | None = None, device: str = "cpu") -> Judge:
    from incasa.train.checkpoint import read_file

    path = Path(path) if path else DEFAULT_CLASSIFIER
    tensors, meta = read_file(path)
    if meta.get("kind") != KIND:
        raise ValueError(f"{path} is not an incasa emoji classifier (kind={meta.get('kind')!r}); "
                         f"train one with `incasa eval train-classifier`")
    model = EmojiClassifier(ClassifierConfig(**meta["config"]))
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    return Judge(model.to(dev).eval(), list(meta["classes"]), dict(meta["labels"]), meta, dev)


def topk_accuracy(logits_BK: torch.Tensor, target_B: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    if len(target_B) == 0:
        return {f"top{k}": float("nan") for k in ks}
    top = logits_BK.topk(min(max(ks), logits_BK.shape[1]), dim=1).indices
    return {f"top{k}": float((top[:, :k] == target_B[:, None]).any(1).float().mean()) for k in ks}


def score_real(judge: Judge, images: np.ndarray, metas: list[dict]) -> dict[str, float]:
    """Top-1/top-5 of the judge on real images whose emoji it knows (the rest are skipped and counted)."""
    keep = [i for i, m in enumerate(metas) if judge.knows(m["hexcode"])]
    logits, _ = judge.run(images_to_tensor(images[keep]))
    target = torch.tensor([judge.index(metas[i]["hexcode"]) for i in keep], dtype=torch.long)
    return {**topk_accuracy(logits, target), "num_images": len(keep), "num_unknown": len(metas) - len(keep)}


def copy_distances(judge: Judge, images: np.ndarray, seed: int = 0) -> np.ndarray:
    """Cosine feature distance between real images and lightly augmented copies of themselves (strength 0.25).

    Its upper percentiles calibrate collapse detection: variants closer than this are, to the judge, one picture.
    """
    x = images_to_tensor(images)
    y = augment(x, torch.Generator().manual_seed(seed), strength=0.25)
    _, fx = judge.run(x)
    _, fy = judge.run(y)
    return (1 - F.cosine_similarity(fx, fy)).numpy()


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class ClassifierTrainConfig:
    data: str  # folder written by `incasa data emoji`
    out: str  # run folder: model.safetensors, metrics.jsonl, curve.png
    preset: str = "small"
    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 150
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    eval_every: int = 250
    threads: int = 1  # CPU threads (the shared CPU machine asks for 1)
    seed: int = 0
    device: str = "auto"


def train_classifier(cfg: ClassifierTrainConfig, *, console=None) -> dict:
    """Train the judge on real artwork; writes out/model.safetensors (fp16), metrics.jsonl and curve.png."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from incasa.train.checkpoint import save_weights
    from incasa.train.metrics import MetricsLog, plot_curve
    from incasa.train.schedule import lr_at

    if cfg.preset not in PRESETS:
        raise ValueError(f"unknown classifier preset {cfg.preset!r}; choose from {', '.join(PRESETS)}")
    if cfg.steps < 1 or cfg.batch_size < 2:
        raise ValueError("need steps >= 1 and batch_size >= 2")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    root, out = Path(cfg.data), Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = classifier_splits(root)
    train_images, train_metas = splits["train"]
    classes = sorted({m["hexcode"] for m in train_metas})
    index = {h: i for i, h in enumerate(classes)}
    labels = {m["hexcode"]: m["labels"]["en"] for m in train_metas}
    x_all = torch.from_numpy(train_images).permute(0, 3, 1, 2).contiguous()  # uint8 [N, 3, H, W]
    y_all = torch.tensor([index[m["hexcode"]] for m in train_metas])
    model = EmojiClassifier(ClassifierConfig(num_classes=len(classes), width=PRESETS[cfg.preset])).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    log = MetricsLog(out / "metrics.jsonl")
    data_version = json.loads((root / "index.json").read_text())["data_version"]
    meta = {"kind": KIND, "config": asdict(model.cfg), "preset": cfg.preset, "classes": classes, "labels": labels,
            "data_version": data_version, "train": asdict(cfg), "num_train_images": len(train_metas)}

    def judge() -> Judge:
        return Judge(model.eval(), classes, labels, meta, device)

    def held_out_scores() -> dict[str, float]:
        scores = {}
        for name in ("val", "combo"):
            s = score_real(judge(), *splits[name])
            scores.update({f"{name}_top1": s["top1"], f"{name}_top5": s["top5"]})
        model.train()
        return scores

    t0, seen, losses, correct = time.time(), 0, [], []
    columns = [TextColumn("[bold]train classifier"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeRemainingColumn()]
    model.train()
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("train", total=cfg.steps, info="")
        for step in range(1, cfg.steps + 1):
            idx = torch.randint(len(y_all), (cfg.batch_size,), generator=gen)
            x = augment(x_all[idx].float() / 255, gen).to(device)
            y = y_all[idx].to(device)
            lr = lr_at(step - 1, base=cfg.lr, warmup=cfg.warmup, total=cfg.steps, min_ratio=0.02)
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(y)
            losses.append(loss.item())
            correct.append(float((logits.argmax(1) == y).float().mean()))
            row = {}
            if step % 10 == 0 or step == cfg.steps:
                row = {"loss": float(np.mean(losses[-10:])), "train_top1": float(np.mean(correct[-10:])), "lr": lr,
                       "images_per_s": seen / (time.time() - t0)}
            if step % cfg.eval_every == 0 or step == cfg.steps:
                row.update(held_out_scores())
            if row:
                log.log(step=step, **row)
                held = (f"  val top1 {row['val_top1']:.3f}  combo top1 {row['combo_top1']:.3f}"
                        if "val_top1" in row else "")
                progress.update(task, info=f"loss {row['loss']:.3f}{held}")
            progress.update(task, completed=step)
    model.eval()
    final = held_out_scores()
    model.eval()
    # collapse calibration on held-out pictures (on the training pictures when the data has no held-out slice)
    dist = copy_distances(judge(), splits["val"][0] if len(splits["val"][0]) else train_images[:512])
    meta.update({"step": cfg.steps, "metrics": final, "train_seconds": round(time.time() - t0, 1),
                 "copy_distance": {"p50": float(np.percentile(dist, 50)), "p90": float(np.percentile(dist, 90))}})
    save_weights(model, out / "model.safetensors", meta)
    plot_curve(out / "metrics.jsonl", out / "curve.png", title=f"emoji classifier ({cfg.preset}): cross-entropy")
    return {"out": str(out), "metrics": final, "losses": losses}
