"""`incasa eval ...`: measure checkpoints instead of eyeballing them.

    incasa eval image --checkpoint runs/x/model.safetensors     fidelity, Fréchet distance, memorisation, diversity,
                                                                compositional probes -> JSON + a one-page PNG report
    incasa eval train-classifier data/emoji64 runs/judge        (re)train the independent emoji classifier (the judge)

Only typer and the standard library are imported here; torch and the evaluation code load inside the commands.
Expected failures (missing files, bad options) are one red line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True)


def fail(message: str, code: int = 2):
    typer.secho(f"Error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command("train-classifier")
def train_classifier_cmd(
    data: Path = typer.Argument(..., help="Emoji dataset folder written by `incasa data emoji` (index.json + shards)."),
    out: Path = typer.Argument(..., help="Run folder: model.safetensors, metrics.jsonl, curve.png."),
    preset: str = typer.Option("small", "--preset", help="Classifier size: tiny (tests) or small (the shipped one)."),
    steps: int = typer.Option(2000, "--steps", help="Optimiser steps."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per step."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak AdamW learning rate (linear warmup, cosine decay)."),
    threads: int = typer.Option(1, "--threads", help="CPU threads for torch."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data order and augmentations."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA + bf16 when present), cpu or cuda."),
) -> None:
    """Train the independent emoji classifier that judges prompt fidelity: real artwork of all styles with strong
    augmentations, never generated images. Prints its top-1/top-5 on held-out real images at the end."""
    from incasa.image.eval_classifier import PRESETS, ClassifierTrainConfig, train_classifier

    if preset not in PRESETS:
        fail(f"unknown --preset {preset!r}; choose from {', '.join(PRESETS)}")
    if not (data / "index.json").is_file():
        fail(f"{data} is not an emoji dataset (no index.json); build one with `incasa data emoji {data}`")
    if steps < 1 or batch_size < 2 or threads < 1:
        fail("--steps and --threads must be >= 1 and --batch-size >= 2")
    cfg = ClassifierTrainConfig(data=str(data), out=str(out), preset=preset, steps=steps, batch_size=batch_size,
                                lr=lr, threads=threads, seed=seed, device=device)
    try:
        result = train_classifier(cfg)
    except (ValueError, FileNotFoundError, PermissionError) as e:
        fail(str(e))
    m = result["metrics"]
    typer.echo(f"held-out real images: val top-1 {m['val_top1']:.3f} top-5 {m['val_top5']:.3f}; "
               f"held-out style x emoji top-1 {m['combo_top1']:.3f} top-5 {m['combo_top5']:.3f}")
    typer.echo(str(out / "model.safetensors"))


@app.command("image")
def image_cmd(
    checkpoint: Optional[list[Path]] = typer.Option(None, "--checkpoint", "-c", help="An image model.safetensors; "
                                                    "repeat for several (e.g. one run's checkpoints). Default: the "
                                                    "shipped default."),
    data: Path = typer.Option(Path("data/emoji64"), "--data", help="The emoji dataset the model was trained on "
                                                                   "(prompts, held-out real pictures, memorisation)."),
    out: Path = typer.Option(Path("eval_out"), "--out", "-o", help="Folder for eval-<model hash>.json and "
                                                                  "report-<model hash>.png. Earlier results there "
                                                                  "become the report's curves across checkpoints."),
    classifier: Optional[Path] = typer.Option(None, "--classifier", help="Judge weights from `incasa eval "
                                                                        "train-classifier` (default: shipped)."),
    num_prompts: int = typer.Option(30, "--num-prompts", help="Prompts per fidelity family (languages get half "
                                                             "each); the run draws about 6x this many prompts."),
    variants: int = typer.Option(5, "--variants", help="Pictures per prompt (diversity needs >= 2)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampler steps (default: the checkpoint's own, "
                                                               "else 25)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-free guidance scale (default: "
                                                                     "the checkpoint's own, else 4.0)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the prompt sample and of the pictures."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """Evaluate image checkpoints: prompt fidelity (judged by an independent emoji classifier) per caption family,
    a Fréchet distance on the classifier's features (not Inception-FID), memorisation (deja-vu against the
    training pictures), variant diversity with collapse detection and GenEval-style compositional probes.
    Writes one JSON per checkpoint and a one-page PNG report."""
    import hashlib
    import json

    from incasa.image.eval import EvalConfig, TrainingMemory, evaluate_checkpoint, load_real_data
    from incasa.image.generate import DEFAULT_CHECKPOINT

    if not (data / "index.json").is_file():
        fail(f"{data} is not an emoji dataset (no index.json); build one with `incasa data emoji {data}` or pass "
             f"--data")
    for ck in checkpoint or []:
        if not ck.is_file():
            fail(f"checkpoint {ck} does not exist")
    if classifier is not None and not classifier.is_file():
        fail(f"classifier {classifier} does not exist")
    try:
        cfg = EvalConfig(data=str(data), classifier=str(classifier or ""), num_prompts=num_prompts,
                         variants=variants, steps=steps, guidance=guidance, seed=seed, device=device)
        out.mkdir(parents=True, exist_ok=True)
        history = []
        for p in sorted(out.glob("eval-*.json")):
            try:
                history.append(json.loads(p.read_text()))
            except json.JSONDecodeError:
                fail(f"{p} is not valid JSON; move it away from --out")
        real = load_real_data(data)
        memory = TrainingMemory(real.train_images, [f"{m['style']}_{m['hexcode']}" for m in real.train_metas])
        for ck in checkpoint or [None]:
            model_hash = hashlib.sha256((ck or DEFAULT_CHECKPOINT).read_bytes()).hexdigest()[:10]  # as generate's
            history = [h for h in history if h.get("model_hash") != model_hash]
            result = evaluate_checkpoint(ck, cfg, report=out / f"report-{model_hash}.png", history=history,
                                         real=real, memory=memory)
            path = out / f"eval-{model_hash}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False))
            tmp.replace(path)
            history.append(result)
            print_summary(result)
            typer.echo(str(path))
            typer.echo(str(out / f"report-{model_hash}.png"))
    except (ValueError, FileNotFoundError, PermissionError) as e:
        fail(str(e))


def print_summary(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    def num(v, spec: str = ".3f") -> str:  # undefined measures are None in the JSON
        return "n/a" if v is None else format(v, spec)

    table = Table(title=f"{result['checkpoint']} (step {result.get('step')}): {result['num_prompts']} prompts x "
                        f"{result['variants']} variants")
    for col in ("family", "top-1", "top-5", "p(target)", "median rank", "within-family retrieval (chance)"):
        table.add_column(col, justify="right" if col != "family" else "left")
    for fam, r in result["fidelity"].items():
        table.add_row(fam, num(r["top1"]), num(r["top5"]), num(r["target_prob"], ".4f"), num(r["median_rank"], ".0f"),
                      f"{num(r['retrieval_top1'])} ({num(r['retrieval_chance'])})")
    c = result["fidelity_chance"]
    table.add_row("chance", num(c["top1"], ".4f"), num(c["top5"], ".4f"), num(c["target_prob"], ".4f"),
                  num(c["median_rank"], ".0f"), "")
    Console().print(table)
    fd, mem, div = result["frechet"], result["memorisation"], result["diversity"]
    lines = [f"Fréchet distance on the judge's features (NOT Inception-FID): {num(fd.get('generated'))} "
             f"(floors: as many real training pictures {num(fd.get('floor_real_training'))}; the real picture "
             f"of each prompt, per variant {num(fd.get('floor_same_prompts'))})",
             f"memorised: {num(mem.get('share'))} (exact copies {num(mem.get('exact_share'))})",
             f"diversity within prompts {num(div['within_prompt_mean'], '.4f')}; collapsed prompts "
             f"{num(div['collapsed_share'])}; mode collapse {div['mode_collapse']}",
             "probes: " + ", ".join(f"{k} {v['accuracy']:.2f} (chance {v['chance']:.2f})"
                                    for k, v in result["probes"].items())]
    for line in lines:
        typer.echo(line)
