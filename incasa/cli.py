"""The `incasa` command: one sub-app per capability.

Each sub-app module imports only typer at import time and loads torch, web frameworks or databases inside its
commands, so `incasa --help` and `incasa generate` start fast.
"""

import typer

from incasa.arena.cli import app as arena_app
from incasa.data.cli import app as curate_app
from incasa.eval_cli import app as eval_app
from incasa.export_cli import app as export_app
from incasa.image.cli import data_app, generate, train_app
from incasa.image.distill_cli import train_distill
from incasa.safety.cli import app as safety_app
from incasa.safety.cli import keys_app, provenance_app
from incasa.serve.cli import app as serve_app
from incasa.text.cli import chat, train_text
from incasa.voice.cli import speak, train_voice, voices

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
app.command(name="speak", help="Speak text with a voice model (the shipped default unless --checkpoint).")(speak)
app.command(name="voices", help="List the voices of a voice model.")(voices)
app.command(name="chat", help="Chat with a text model in the terminal (the shipped default unless --checkpoint).")(chat)
train_app.command(name="voice", help="Train a text-to-speech model from scratch.")(train_voice)
train_app.command(name="distill", help="Distil a few-step student from an image checkpoint (reflow).")(train_distill)
train_app.command(name="text", help="Train a mixture-of-experts language model from scratch.")(train_text)
app.add_typer(eval_app, name="eval", help="Measure checkpoints: prompt fidelity, memorisation, diversity, ...")
app.add_typer(export_app, name="export", help="Export an image checkpoint for Diffusers or ONNX Runtime.")
app.add_typer(serve_app, name="serve", help="Serve every model behind one OpenAI-compatible HTTP API + studio page.")
app.add_typer(arena_app, name="arena", help="Blind side-by-side battles and a leaderboard with confidence intervals.")

# optional packages -> the extra that installs them (pyproject.toml [project.optional-dependencies])
EXTRA_OF = {"gruut": "voice", "soundfile": "voice", "num2words": "voice", "pocketsphinx": "voice", "jiwer": "voice",
            "fastapi": "serve", "uvicorn": "serve", "pydantic_settings": "serve", "prometheus_client": "serve",
            "openai": "serve", "diffusers": "export", "onnx": "export", "onnxruntime": "export",
            "onnxscript": "export", "torchao": "gpu", "sklearn": "safety", "usearch": "curate", "pyarrow": "curate",
            "imagehash": "curate", "OpenEXR": "curate", "ray": "ray", "sqlalchemy": "arena", "alembic": "arena",
            "jinja2": "arena", "scipy": "eval"}


def main() -> None:
    """The console script: the Typer app, with a missing optional package turned into one line that names the
    extra to install, instead of a traceback."""
    try:
        app()
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if top not in EXTRA_OF:
            raise
        typer.secho(f"Error: this command needs the optional package {top!r}: pip install 'incasa[{EXTRA_OF[top]}]' "
                    f"(or -e '.[{EXTRA_OF[top]}]' in a checkout)", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
