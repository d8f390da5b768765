"""`incasa train distill`: a few-step student distilled from an image checkpoint (reflow + guidance distillation).

    incasa train distill --data data/emoji64 --out runs/reflow --pairs 8192 --steps 3000
    incasa generate "a red apple, noto style" -c runs/reflow/model.safetensors      # 4 steps, no CFG, by default

The method is explained in incasa/image/distill.py. Only typer and the standard library are imported here; expected
failures (bad options, missing files, a run folder of another run) are one red line on stderr and exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def fail(message: str, code: int = 2):
    typer.secho(f"Error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def train_distill(
    data: Path = typer.Option(Path("data/emoji64"), "--data", help="The emoji dataset the teacher was trained on "
                                                                   "(its training captions are the prompts)."),
    out: Path = typer.Option(..., "--out", help="Run folder (pairs/, model.safetensors, metrics.jsonl, curve.png); "
                                                "re-running with the same folder resumes."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Teacher model.safetensors (default: shipped)."),
    pairs: int = typer.Option(4096, "--pairs", help="(noise, teacher picture) pairs to draw; rounded up to whole "
                                                    "chunks. The last 1/8 (at most --val-pairs) are held out."),
    chunk: int = typer.Option(256, "--chunk", help="Pairs per stored file = the teacher's batch (GPU: 2048+)."),
    teacher_steps: int = typer.Option(25, "--teacher-steps", help="Euler steps of the teacher's sampler."),
    teacher_guidance: float = typer.Option(4.0, "--teacher-guidance", help="The teacher's guidance scale (baked "
                                                                           "into the student)."),
    steps: int = typer.Option(2000, "--steps", help="Student optimiser steps."),
    batch_size: int = typer.Option(64, "--batch-size"),
    lr: float = typer.Option(1e-4, "--lr", help="Peak learning rate (warmup, then cosine)."),
    warmup: int = typer.Option(100, "--warmup"),
    ema_decay: float = typer.Option(0.999, "--ema-decay"),
    student_steps: int = typer.Option(4, "--student-steps", help="Sampler steps the student is tuned for and "
                                                                 "that its checkpoint makes the default."),
    grid_share: float = typer.Option(0.5, "--grid-share", help="Share of training times drawn from the student's "
                                                               "sampling grid (the rest: logit-normal)."),
    val_pairs: int = typer.Option(256, "--val-pairs", help="Held-out pairs for val_mse_1/2/4."),
    sample_every: int = typer.Option(500, "--sample-every", help="Grid PNG and held-out error every N steps."),
    ckpt_every: int = typer.Option(500, "--ckpt-every", help="Save the resumable state every N steps."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise, caption order and training."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA + bf16 when present), cpu or cuda."),
    max_minutes: float = typer.Option(0.0, "--max-minutes", help="Stop cleanly after this many minutes (pairs and "
                                                                 "state kept, weights exported); 0 = no limit."),
) -> None:
    """Distil a few-step sampler from an image checkpoint: the teacher draws (noise, picture) pairs with its full
    guided sampler, the student learns the straight lines between them and samples in 1-4 steps without guidance."""
    if teacher is not None and not teacher.is_file():
        fail(f"teacher {teacher} does not exist")
    if not (data / "index.json").is_file():
        fail(f"{data} is not an emoji dataset (no index.json); build one with `incasa data emoji {data}`")
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        fail(f"--device must be auto, cpu or cuda, got {device!r}")
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is a file, not a folder")
    from incasa.image.distill import DistillConfig, distill

    try:
        cfg = DistillConfig(data=str(data), out=str(out), teacher=str(teacher or ""), pairs=pairs, chunk=chunk,
                            teacher_steps=teacher_steps, teacher_guidance=teacher_guidance, steps=steps,
                            batch_size=batch_size, lr=lr, warmup=warmup, ema_decay=ema_decay,
                            student_steps=student_steps, grid_share=grid_share, val_pairs=val_pairs,
                            sample_every=sample_every, ckpt_every=ckpt_every, seed=seed, device=device,
                            max_seconds=max_minutes * 60)
        result = distill(cfg)
    except (ValueError, FileNotFoundError, PermissionError, RuntimeError) as e:
        fail(str(e).splitlines()[0] if str(e) else e.__class__.__name__)
    if not result["finished"] and result["step"] == 0:
        typer.echo(result["message"])
        return
    val = ", ".join(f"{k}={v:.4f}" for k, v in result["val"].items())
    typer.echo(f"student trained to step {result['step']} on {result['pairs']} pairs ({val}): "
               f"{out / 'model.safetensors'}")
