"""N replicas on one port: `incasa serve --workers 2` (uvicorn's process manager, no cluster code of ours). Two
processes answer, and an image URL made by one replica is served by either, because they share the URL store.
Slow (two fresh processes import torch and load the model): not in the default run."""

import os
import subprocess
import sys
import time

import httpx
import pytest

from .conftest import free_port


@pytest.mark.slow
def test_two_workers_share_the_port_and_the_store(tiny_checkpoint, tmp_path):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    incasa = [sys.executable, "-m", "incasa.cli"]
    proc = subprocess.Popen([*incasa, "serve", "--workers", "2", "--port", str(port), "--image-model",
                             f"tiny={tiny_checkpoint}", "--store-dir", str(tmp_path / "store"),
                             "--log-level", "warning"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        replicas = set()
        deadline = time.monotonic() + 120
        while len(replicas) < 2 and time.monotonic() < deadline:
            try:  # a new connection each time: the kernel hands them to whichever worker accepts first
                r = httpx.get(url + "/ready", timeout=2)
                if r.status_code == 200:
                    replicas.add(r.headers["x-incasa-replica"])
            except httpx.HTTPError:
                time.sleep(0.5)
        assert len(replicas) == 2
        made = httpx.post(url + "/v1/images/generations", timeout=60,
                          json={"prompt": "red", "size": "64x64", "steps": 2, "response_format": "url"})
        assert made.status_code == 200
        image_url = made.json()["data"][0]["url"]
        seen = set()
        for _ in range(40):
            r = httpx.get(image_url, timeout=10)
            assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
            seen.add(r.headers["x-incasa-replica"])
            if len(seen) == 2:
                break
        assert len(seen) == 2
    finally:
        proc.terminate()
        assert proc.wait(60) == 0
