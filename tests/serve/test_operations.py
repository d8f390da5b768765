"""Operations: API keys, the bounded queue's 429 + Retry-After, request timeouts, Idempotency-Key, /metrics,
health and readiness, and a graceful shutdown that finishes in-flight requests. In-test engines stand in for the
model so that each test controls exactly when rendering happens."""

import concurrent.futures
import threading
import time

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from incasa.serve.app import create_app
from incasa.serve.engines import Registry

from .conftest import tiny_settings
from .helpers import SolidEngine

BODY = {"prompt": "a red square", "n": 1, "size": "64x64"}


def _app(tmp_path, engine=None, **settings):
    engine = engine or SolidEngine()
    return create_app(tiny_settings(tmp_path, **settings), Registry(image={engine.name: engine})), engine


def test_api_keys_guard_v1_but_not_health_or_studio(tmp_path, live_server):
    app, _ = _app(tmp_path, api_keys=["k-one", "k-two"])
    server = live_server(app)
    denied = httpx.get(server.url + "/v1/models")
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/studio").status_code == 200
    good = openai.OpenAI(base_url=server.url + "/v1", api_key="k-two", max_retries=0)
    assert [m.id for m in good.models.list().data] == ["solid"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0).models.list()


def test_full_queue_answers_429_with_retry_after_quickly(tmp_path, live_server):
    app, engine = _app(tmp_path, queue_size=2, batch_wait_ms=0.0)
    engine.gate.clear()
    server = live_server(app)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        running = pool.submit(httpx.post, server.url + "/v1/images/generations", json=BODY, timeout=30)
        assert engine.started.wait(10)
        waiting = [pool.submit(httpx.post, server.url + "/v1/images/generations",
                               json={**BODY, "steps": s}, timeout=30) for s in (2, 3)]
        deadline = time.monotonic() + 10
        while app.state.ctx.queues["solid"].depth() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        start = time.perf_counter()
        with pytest.raises(openai.RateLimitError) as e:
            client.images.generate(prompt="one too many", size="64x64")
        assert time.perf_counter() - start < 0.5
        assert int(e.value.response.headers["retry-after"]) >= 1
        assert e.value.body["code"] == "queue_full" and e.value.body["type"] == "rate_limit_error"
        engine.gate.set()
        assert [f.result().status_code for f in [running, *waiting]] == [200, 200, 200]
    metrics = httpx.get(server.url + "/metrics").text
    assert 'incasa_serve_rejected_total{reason="queue_full"} 1.0' in metrics
    assert 'incasa_serve_images_total{model="solid"} 3.0' in metrics
    assert 'incasa_serve_requests_total{route="/v1/images/generations",status="429"} 1.0' in metrics
    assert 'incasa_serve_queue_depth{model="solid"} 0.0' in metrics
    assert "incasa_serve_request_seconds_bucket" in metrics and "incasa_serve_batch_images_bucket" in metrics


def test_timeout_is_504_and_the_abandoned_job_is_never_rendered(tmp_path, live_server):
    app, engine = _app(tmp_path, request_timeout_s=0.3, batch_wait_ms=0.0)
    engine.gate.clear()
    server = live_server(app)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(httpx.post, server.url + "/v1/images/generations", json=BODY, timeout=30)
        assert engine.started.wait(10)
        r = httpx.post(server.url + "/v1/images/generations", json={**BODY, "prompt": "abandoned", "steps": 9},
                       timeout=30)
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        engine.gate.set()
        assert first.result().status_code == 504  # its renderer was held past the timeout as well
    time.sleep(0.2)
    assert "abandoned" not in [j.prompt for b in engine.batches for j in b]


def test_idempotency_key_renders_once_and_replays(tmp_path, live_server):
    app, engine = _app(tmp_path, batch_wait_ms=0.0)
    server = live_server(app)
    url = server.url + "/v1/images/generations"
    engine.gate.clear()
    headers = {"Idempotency-Key": "retry-1"}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # a retry that arrives while the first still renders
        a = pool.submit(httpx.post, url, json=BODY, headers=headers, timeout=30)
        assert engine.started.wait(10)
        b = pool.submit(httpx.post, url, json=BODY, headers=headers, timeout=30)
        time.sleep(0.2)
        engine.gate.set()
        first, second = a.result(), b.result()
    third = httpx.post(url, json=BODY, headers=headers, timeout=30)  # and one long after
    assert first.status_code == second.status_code == third.status_code == 200
    assert first.content == second.content == third.content
    assert len(engine.batches) == 1
    other = httpx.post(url, json={**BODY, "prompt": "something else"}, headers=headers, timeout=30)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    fresh = httpx.post(url, json=BODY, headers={"Idempotency-Key": "retry-2"}, timeout=30)
    assert fresh.status_code == 200 and len(engine.batches) == 2
    assert app.state.ctx.idempotency.replays == 2


def test_health_and_readiness_follow_the_lifespan(tmp_path):
    app, _ = _app(tmp_path)
    client = TestClient(app)
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 503  # lifespan not started: workers not running
    with TestClient(app) as running:
        r = running.get("/ready")
        assert r.status_code == 200 and r.json()["queues"] == {"solid": {"waiting": 0, "in_flight": 0}}
    assert client.get("/ready").status_code == 503  # after shutdown


def test_graceful_shutdown_finishes_in_flight_requests(tmp_path, live_server):
    app, engine = _app(tmp_path, batch_wait_ms=0.0)
    engine.gate.clear()
    server = live_server(app)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        inflight = [pool.submit(httpx.post, server.url + "/v1/images/generations",
                                json={**BODY, "steps": s}, timeout=30) for s in (1, 2)]
        assert engine.started.wait(10)
        time.sleep(0.2)
        stopper = threading.Thread(target=server.stop)
        stopper.start()  # SIGTERM-equivalent while one request renders and one waits
        time.sleep(0.3)
        engine.gate.set()
        stopper.join(30)
        assert [f.result().status_code for f in inflight] == [200, 200]
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health", timeout=2)
