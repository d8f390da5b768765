"""The `incasa` command: one sub-app per capability.

Each sub-app module imports only typer at import time and loads torch, web frameworks or databases inside its
commands, so `incasa --help` and `incasa generate` start fast.
"""

import typer

from incasa.arena.cli import app as arena_app
from incasa.data.cli import app as curate_app
from incasa.image.cli import data_app, generate, train_app
from incasa.safety.cli import app as safety_app
from incasa.safety.cli import keys_app, provenance_app

app = typer.Typer(
    name="incasa",
    help="Build, evaluate and serve generative models in-house: curate -> train -> evaluate -> serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command(help="Generate images from a prompt with an image checkpoint (the shipped default unless --checkpoint).")(generate)
app.add_typer(train_app, name="train", help="Train models from scratch (image, autoencoder, ...).")
app.add_typer(data_app, name="data", help="Build training sets from data the project can obtain (emoji artwork, ...).")
app.add_typer(curate_app, name="curate", help="Curate a balanced, de-duplicated corpus (local workers or Ray).")
app.add_typer(safety_app, name="safety", help="Guardrails: check prompts and images against the policy.")
app.add_typer(keys_app, name="keys", help="Signing keys for C2PA content credentials.")
app.add_typer(provenance_app, name="provenance", help="Verify or strip C2PA content credentials and watermarks.")
app.add_typer(arena_app, name="arena", help="Blind side-by-side battles and a leaderboard with confidence intervals.")

if __name__ == "__main__":
    app()
