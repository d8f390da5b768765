"""Shared fixtures for the arena tests: a fresh SQLite store with stand-in variants, a live server on loopback,
and a throwaway PostgreSQL cluster. Binaries that come from apt (chromium, postgresql) make a test skip with the
reason outside CI; with CI=true their absence is a failure, as .ci/arena.sh must have installed them."""

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from incasa.arena import store


def need_binary(path_or_name: str) -> str:
    found = shutil.which(path_or_name) or (path_or_name if Path(path_or_name).is_file() else None)
    if found is None:
        message = f"{path_or_name} is not installed (run .ci/arena.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_standins(sessions, styles=("rings", "stripes", "checks")) -> None:
    with sessions.begin() as s:
        for style in styles:
            store.add_variant(s, "standin", style, "standin", {"style": style, "size": 32})


@pytest.fixture
def db_url(tmp_path) -> str:
    return store.sqlite_url(tmp_path / "arena.db")


@pytest.fixture
def sessions(db_url):
    sessions = store.open_store(db_url)
    add_standins(sessions)
    return sessions


class LiveServer:
    """uvicorn serving an ASGI app from a thread on 127.0.0.1:<free port>; stop() shuts it down cleanly."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture
def live_server():
    servers = []

    def start(app) -> LiveServer:
        servers.append(LiveServer(app))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL cluster in a temporary directory (trust auth, loopback only), stopped afterwards."""
    bindir = Path("/usr/lib/postgresql")
    versions = sorted(bindir.glob("*/bin/initdb"))
    initdb = str(versions[-1]) if versions else need_binary("initdb")
    pg_ctl = str(Path(initdb).with_name("pg_ctl"))
    root = Path(tempfile.mkdtemp(prefix="arena-pg-"))
    data = root / "data"
    as_root = os.geteuid() == 0
    if as_root:  # PostgreSQL refuses to run as root: hand the directory to the postgres user
        shutil.chown(root, "postgres", "postgres")

    def run(*args: str) -> None:
        cmd = list(args)
        if as_root:
            cmd = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{a}'" for a in cmd)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    port = free_port()
    user = "postgres" if as_root else os.environ.get("USER", "postgres")
    run(initdb, "-D", str(data), "--auth=trust", "-U", user, "--no-sync")
    run(pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", "start")
    try:
        yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/postgres"
    finally:
        run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
