"""`incasa export diffusers|onnx`: hand an image checkpoint to Diffusers or ONNX Runtime (incasa/image/export.py).

Only typer and the standard library are imported here; torch, diffusers and onnx load inside the commands. Expected
failures (missing files, an unsupported checkpoint, a non-empty output folder, the `export` extra not installed)
become one red line on stderr and exit code 2 — never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True)

CHECKPOINT_HELP = "An image model.safetensors from `incasa train image` (default: the shipped model)."


def _fail(message: str):
    typer.secho(f"Error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _check_checkpoint(checkpoint: Optional[Path]) -> None:
    if checkpoint is not None and not checkpoint.is_file():
        _fail(f"--checkpoint {checkpoint} does not exist")


@app.command("diffusers")
def diffusers_cmd(
    out: Path = typer.Argument(..., help="New (or empty) folder to write the Diffusers pipeline into."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help=CHECKPOINT_HELP),
) -> None:
    """Write a folder that `DiffusionPipeline.from_pretrained(OUT, trust_remote_code=True)` loads: the DiT as a
    Diffusers model, a FlowMatchEulerDiscreteScheduler config, the MiniLM text encoder and tokenizer, and a pipeline
    that reproduces `incasa generate` for the same seeds. Pixel-space model: there is no VAE. Needs the export extra."""
    _check_checkpoint(checkpoint)
    from incasa.image.export import export_diffusers

    try:
        path = export_diffusers(checkpoint, out)
    except (ValueError, FileNotFoundError, PermissionError, RuntimeError) as e:
        _fail(str(e))
    typer.echo(f"{path}: load with DiffusionPipeline.from_pretrained({str(path)!r}, trust_remote_code=True)")


@app.command("onnx")
def onnx_cmd(
    out: Path = typer.Argument(..., help="New (or empty) folder for transformer.onnx and incasa_onnx.json."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help=CHECKPOINT_HELP),
    external_data: Optional[bool] = typer.Option(None, "--external-data/--no-external-data",
                                                 help="Weights in a separate transformer.onnx.data file (default: "
                                                      "only above ~1.8 GB, protobuf's limit is 2 GB)."),
) -> None:
    """Export the DiT with torch.onnx.export(dynamo=True), dynamic batch and text length; run it with
    `incasa generate --backend onnx --onnx-dir OUT` (the text encoder stays in PyTorch). Needs the export extra."""
    _check_checkpoint(checkpoint)
    from incasa.image.onnx_backend import export_onnx

    try:
        path = export_onnx(checkpoint, out, external_data=external_data)
    except (ValueError, FileNotFoundError, PermissionError, RuntimeError) as e:
        _fail(str(e))
    typer.echo(f"{path}: run with incasa generate PROMPT --backend onnx --onnx-dir {path}")
