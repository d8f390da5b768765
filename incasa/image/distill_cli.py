"""`incasa train distill`: a few-step student distilled from an image checkpoint (placeholder, being written)."""

import typer


def train_distill() -> None:
    """Distil a few-step sampler from an image checkpoint."""
    typer.echo("Error: not written yet", err=True)
    raise typer.Exit(2)
