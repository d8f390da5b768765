"""Fixtures for the server tests: an app over the tiny test checkpoint (hash text encoder, seconds to train), served
by uvicorn from a thread on loopback, and the official `openai` client pointed at it."""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from incasa.serve.app import create_app
from incasa.serve.engines import Registry, ResidentPipelines, image_registry
from incasa.serve.settings import ServeSettings

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def need_binary(path_or_name: str) -> str:
    found = shutil.which(path_or_name) or (path_or_name if Path(path_or_name).is_file() else None)
    if found is None:
        message = f"{path_or_name} is not installed (run .ci/serve.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving an ASGI app from a thread on 127.0.0.1:<free port>; stop() shuts it down gracefully."""

    def __init__(self, app, graceful_s: int = 20):
        import uvicorn

        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=graceful_s))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def tiny_settings(tmp_path, **overrides) -> ServeSettings:
    base = dict(store_dir=tmp_path / "store", access_log=False, batch_wait_ms=20.0)
    return ServeSettings(**{**base, **overrides})


def tiny_registry(checkpoint, **extra) -> Registry:
    return Registry(image=image_registry([("tiny", checkpoint)], ResidentPipelines(device="cpu")), **extra)


@pytest.fixture
def live_server():
    servers = []

    def start(app, **kw) -> LiveServer:
        servers.append(LiveServer(app, **kw))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def tiny_server(tiny_checkpoint, tmp_path_factory):
    """One shared server over the tiny checkpoint (module scope: most API tests only read from it)."""
    tmp = tmp_path_factory.mktemp("serve")
    app = create_app(tiny_settings(tmp), tiny_registry(tiny_checkpoint))
    server = LiveServer(app)
    yield server
    server.stop()


@pytest.fixture
def client(tiny_server):
    import openai

    return openai.OpenAI(base_url=tiny_server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
