"""Command-line entry points for incasa.data (registered in incasa/cli.py as `incasa curate`). Heavy imports stay
inside the commands, so `incasa --help` stays fast.

    incasa curate run SOURCES... -o OUT [--engine ray] [--shares photo=40,render=30,painting=20,technical=10]
    incasa curate train-classifier EXAMPLES -o classifier.safetensors
    incasa curate report OUT
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Curate a balanced, de-duplicated corpus (local workers or Ray).")


@app.command("run")
def run_command(
    sources: list[Path] = typer.Argument(..., help="Folders, .tar (WebDataset) shards or .parquet/.csv manifests "
                                                   "(columns: path, optional caption and label)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: shards/, manifest.parquet, rejections.parquet, "
                                                      "summary.json, contact_sheet.png. Re-run to resume."),
    engine: str = typer.Option("local", help="local (worker processes) or ray (Ray Data; needs the 'ray' extra; "
                                             "RAY_ADDRESS selects a cluster)."),
    workers: int = typer.Option(0, help="Worker processes / Ray CPUs (0 = all cores)."),
    shares: str = typer.Option("photo=40,render=30,painting=20,technical=10",
                               help="Target category shares, CATEGORY=SHARE separated by commas."),
    size: int = typer.Option(0, help="Number of output samples (0 = as many as the shares allow)."),
    index: Path = typer.Option(None, help="Deja-vu index folder shared across runs (default OUT/index)."),
    reference: list[Path] = typer.Option([], help="Reference sources (e.g. a previous model's corpus): never "
                                                  "output, but anything similar to them is rejected. Repeatable."),
    classifier: Path = typer.Option(None, help="Category classifier from `incasa curate train-classifier`."),
    verify_threshold: float = typer.Option(None, help="Deja-vu: the verifier's P(copy) at which an image is a "
                                                      "near-duplicate (default 0.51; our benchmark's point for "
                                                      "precision 0.99 is 0.84: precision 0.987, recall 0.971)."),
    min_cosine: float = typer.Option(None, help="Deja-vu: nearest neighbours below this embedding cosine are not "
                                                "verified (default 0.6)."),
    neighbours: int = typer.Option(None, help="Deja-vu: how many nearest neighbours are verified (default 2)."),
    tone_rivals: bool = typer.Option(True, help="Deja-vu: weigh each candidate against made-up other skin tones of "
                                                "it (another skin tone is not a copy); --no-tone-rivals decides "
                                                "pictures with skin 3x faster and a little less precisely."),
    keep_personal_exif: bool = typer.Option(False, help="Keep GPS and other personal EXIF fields in stored images."),
    max_pixels: int = typer.Option(89_478_485, help="Reject images with more pixels (decompression bombs)."),
    shard_size: int = typer.Option(1000, help="Samples per output shard."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Ingest SOURCES, strip personal EXIF, categorise, drop copies of anything seen before, mix to the target
    shares and write WebDataset shards. Every input ends in the manifest or in the rejection log."""
    import os

    from incasa.data import dejavu
    from incasa.data.metadata import MetadataConfig
    from incasa.data.mix import parse_shares
    from incasa.data.pipeline import CurateConfig, run

    try:
        defaults = dejavu.DejaVuConfig()
        cfg = CurateConfig(
            shares=parse_shares(shares), size=size or None, shard_size=shard_size,
            workers=workers or max(1, os.cpu_count() or 1), engine=engine, index=index,
            reference=tuple(str(r) for r in reference), classifier=classifier,
            metadata=MetadataConfig(max_pixels=max_pixels, keep_personal_exif=keep_personal_exif),
            dejavu=dejavu.DejaVuConfig(
                verify_threshold=defaults.verify_threshold if verify_threshold is None else verify_threshold,
                min_cosine=defaults.min_cosine if min_cosine is None else min_cosine,
                num_neighbours=defaults.num_neighbours if neighbours is None else neighbours,
                tone_rivals=tone_rivals),
            progress=progress)
        summary = run([str(s) for s in sources], out, cfg)
    except (ValueError, OSError) as e:  # bad settings or sources; an unwritable output folder; a full disk
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    _print_summary(summary)


@app.command("train-classifier")
def train_classifier_command(
    examples: Path = typer.Argument(..., help="Folder with one sub-folder per category (photo/, render/, "
                                              "painting/, technical/) of example images."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the classifier (.safetensors)."),
    min_confidence: float = typer.Option(0.6, help="Below this probability a sample stays 'unknown'."),
) -> None:
    """Train the small category classifier used for samples without a label or a metadata cue."""
    from incasa.data import categories as cat

    try:
        if not examples.is_dir():
            raise ValueError(f"{examples} is not a folder")
        raw, labels = cat.examples_from_folder(examples)
        clf = cat.train(raw, labels, min_confidence=min_confidence)
        clf.save(out)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    accuracy = sum(clf.predict(x)[0] == y for x, y in zip(raw, labels)) / len(labels)
    typer.echo(f"trained on {len(labels)} examples of {', '.join(clf.classes)}; training accuracy {accuracy:.3f}; "
               f"wrote {out}")


@app.command("report")
def report_command(out: Path = typer.Argument(..., help="An output folder of `incasa curate run`.")) -> None:
    """Print the summary of a finished run: counts and shares per category, shortfalls, rejections per reason."""
    path = out / "summary.json"
    if not path.is_file():
        typer.echo(f"error: {path} not found (the run has not finished; re-run it to resume)", err=True)
        raise typer.Exit(2)
    _print_summary(json.loads(path.read_text()))


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{summary['output']} of {summary['inputs']} inputs in {summary['shards']} shards")
    for col in ("category", "count", "share", "target", "available"):
        table.add_column(col)
    for name, c in summary["categories"].items():
        table.add_row(name, str(c["count"]), f"{100 * c['share']:.1f}%", f"{100 * c['target']:.1f}%",
                      str(c["available"]))
    console = Console()
    console.print(table)
    if summary["shortfall"]:
        console.print(f"stopped: {summary['stopped_by']} ran out; missing for the target: {summary['shortfall']}")
    console.print(f"unknown category: {summary['unknown']}")
    console.print("rejections: " + (", ".join(f"{k} {v}" for k, v in summary["rejections"].items()) or "none"))
