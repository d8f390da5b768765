"""`incasa serve`: one OpenAI-compatible server for every incasa model, and the studio page at /studio.

    incasa serve                                   # the shipped image model on http://127.0.0.1:8000
    incasa serve --port 8000 --api-key s3cret      # clients send Authorization: Bearer s3cret
    incasa serve --image-model emoji=runs/x/model.safetensors --host 0.0.0.0 --workers 4

Every flag has an INCASA_SERVE_* environment variable (flags win). --workers N runs N replica processes that
share the port (uvicorn's process manager; the kernel spreads connections); for more machines, put replicas
behind a load balancer (README). Only typer and the standard library are imported here; the server loads in
the command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=False)


def _fail(message: str, code: int = 2):
    typer.secho(f"Error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _settings(given: dict):
    from pydantic import ValidationError

    from incasa.serve.settings import ServeSettings

    try:
        return ServeSettings(**given)
    except ValidationError as e:
        first = e.errors()[0]
        _fail(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")


@app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    host: Optional[str] = typer.Option(None, "--host", help="Interface to listen on (default 127.0.0.1; 0.0.0.0 "
                                                            "for every interface)."),
    port: Optional[int] = typer.Option(None, "--port", help="TCP port (default 8000)."),
    api_key: Optional[list[str]] = typer.Option(None, "--api-key", help="Accepted Bearer key; repeat for several. "
                                                                        "None = no authentication."),
    image_model: Optional[list[str]] = typer.Option(None, "--image-model", help="NAME=PATH (or PATH) of an image "
                                                    "checkpoint to serve; repeat for several. Default: shipped."),
    text_model: Optional[list[str]] = typer.Option(None, "--text-model", help="NAME=PATH (or PATH) of a text "
                                                   "checkpoint for /v1/chat/completions; repeat for several. "
                                                   "Default: shipped; 'none' for no chat model."),
    voice_model: Optional[list[str]] = typer.Option(None, "--voice-model", help="NAME=PATH (or PATH) of a voice "
                                                    "checkpoint for /v1/audio/speech; repeat for several. "
                                                    "Default: shipped; 'none' for no speech model."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    queue_size: Optional[int] = typer.Option(None, "--queue-size", help="Waiting requests per model before 429 "
                                                                        "(default 64)."),
    max_batch_images: Optional[int] = typer.Option(None, "--max-batch-images", help="Images per micro-batch "
                                                                                    "(default 16, at least 10)."),
    batch_wait_ms: Optional[float] = typer.Option(None, "--batch-wait-ms", help="How long a batch waits for "
                                                                                "compatible requests (default 0: "
                                                                                "batch what is waiting)."),
    request_timeout: Optional[float] = typer.Option(None, "--request-timeout", help="Seconds before a 504 "
                                                                                    "(default 300)."),
    memory_budget_mb: Optional[float] = typer.Option(None, "--memory-budget-mb", help="Resident model weights "
                                                                                      "before LRU unloading."),
    store_dir: Optional[Path] = typer.Option(None, "--store-dir", help="Where response_format=url images are "
                                                                       "kept (default: a temporary folder)."),
    policy: Optional[str] = typer.Option(None, "--policy", help="Guardrail policy file (TOML or JSON)."),
    workers: int = typer.Option(1, "--workers", help="Replica processes sharing the port (each loads its models)."),
    log_level: str = typer.Option("info", "--log-level", help="critical, error, warning, info or debug."),
) -> None:
    """Start the OpenAI-compatible API (images, chat, speech) and the studio page. Ctrl-C or SIGTERM drains: requests
    already accepted finish first. `incasa serve [flags] ray ...` deploys the same app on Ray Serve instead."""
    given = {"host": host, "port": port, "api_keys": api_key or None, "image_models": image_model or None,
             "text_models": text_model or None, "voice_models": voice_model or None,
             "device": device, "queue_size": queue_size, "max_batch_images": max_batch_images,
             "batch_wait_ms": batch_wait_ms, "request_timeout_s": request_timeout,
             "memory_budget_mb": memory_budget_mb, "store_dir": store_dir, "policy": policy}
    ctx.obj = {k: v for k, v in given.items() if v is not None}
    if ctx.invoked_subcommand is not None:
        return
    import logging

    import uvicorn

    if workers < 1:
        _fail(f"--workers must be at least 1, got {workers}")
    settings = _settings(ctx.obj)
    logging.basicConfig(level=log_level.upper(), format="%(message)s")
    config = dict(host=settings.host, port=settings.port, log_level=log_level, access_log=False,
                  timeout_graceful_shutdown=int(settings.graceful_timeout_s) or None)
    if workers == 1:
        from incasa.serve.app import create_app

        try:
            server_app = create_app(settings)
        except (ValueError, OSError) as e:
            _fail(str(e))
        reg = server_app.state.ctx.registry
        typer.echo(f"incasa serve: http://{settings.host}:{settings.port}/studio  (API at /v1, "
                   f"models: {', '.join([*reg.image, *reg.chat, *reg.speech]) or 'none'})")
        uvicorn.run(server_app, **config)
        return
    # N processes: hand the settings down through the environment, each worker builds its own app; the URL store
    # must be one folder for all of them (a URL may be fetched through any worker)
    if settings.store_dir is None:
        import tempfile

        settings = settings.model_copy(update={"store_dir": Path(tempfile.mkdtemp(prefix="incasa-serve-"))})
    for name, value in settings.model_dump(exclude_none=True).items():
        os.environ[f"INCASA_SERVE_{name.upper()}"] = ",".join(value) if isinstance(value, list) else str(value)
    typer.echo(f"incasa serve: {workers} workers on http://{settings.host}:{settings.port}")
    uvicorn.run("incasa.serve.app:create_app_from_env", factory=True, workers=workers, **config)


@app.command("ray")
def ray_cmd(
    ctx: typer.Context,
    replicas: int = typer.Option(2, "--replicas", help="Replicas of the whole app (each loads its models)."),
    gpus_per_replica: float = typer.Option(0.0, "--gpus-per-replica", help="GPUs Ray reserves per replica."),
    cpus_per_replica: float = typer.Option(1.0, "--cpus-per-replica", help="CPUs Ray reserves per replica."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join ('auto' on a node of a "
                                                                  "running cluster); default: a local Ray."),
) -> None:
    """Deploy the same app on Ray Serve: N replicas behind Ray's HTTP proxy on --host/--port (needs
    `pip install "ray\\[serve]"`). Flags before `ray` configure every replica, e.g.
    `incasa serve --port 8000 --image-model emoji=/models/emoji.safetensors ray --replicas 4 --gpus-per-replica 1`."""
    settings = _settings(ctx.obj or {})
    try:
        from incasa.serve import ray_serve
        import ray.serve  # noqa: F401 - fail here, with the install hint, rather than inside Ray
    except ImportError as e:
        _fail(f"Ray Serve is not installed ({e.name}); pip install \"ray[serve]\"")
    if settings.store_dir is None:
        _fail("Ray replicas need one shared --store-dir for response_format=url images")
    try:
        typer.echo(f"incasa serve on Ray: {replicas} replicas behind http://{settings.host}:{settings.port}")
        ray_serve.run(settings, replicas=replicas, gpus_per_replica=gpus_per_replica,
                      cpus_per_replica=cpus_per_replica, address=address)
    except ValueError as e:
        _fail(str(e))
