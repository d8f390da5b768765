"""Schemathesis against the app's own OpenAPI document: generated requests (valid and not) to every operation never
get a 5xx, and every 4xx is in the OpenAI error shape. A bounded number of examples keeps it fast; the engine
here is the in-test SolidEngine, because what is under test is the HTTP layer (validation, routing, errors)."""

import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from incasa.serve.app import create_app
from incasa.serve.engines import Registry

from .conftest import LiveServer, tiny_settings
from .helpers import SolidEngine


@pytest.fixture(scope="module")
def solid_server(tmp_path_factory):
    app = create_app(tiny_settings(tmp_path_factory.mktemp("st"), request_timeout_s=30),
                     Registry(image={"solid": SolidEngine()}))
    server = LiveServer(app)
    yield server
    server.stop()


def _openapi() -> dict:
    """The document, from an app built at collection time (its keys and audit log in a throwaway folder)."""
    root = Path(tempfile.mkdtemp(prefix="incasa-st-"))
    settings = tiny_settings(root, keys_dir=root / "keys", audit_log=root / "audit.jsonl")
    return create_app(settings, Registry(image={"solid": SolidEngine()})).openapi()


schema = schemathesis.openapi.from_dict(_openapi())


def _check(case, server) -> None:
    response = case.call(base_url=server.url, timeout=60)
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]


IMAGES = "^/v1/images/"
FUZZ = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@schema.exclude(path_regex=IMAGES).parametrize()
@settings(max_examples=15, **FUZZ)
def test_no_server_errors(case, solid_server):
    _check(case, solid_server)


@schema.include(path_regex=IMAGES).parametrize()
@settings(max_examples=4, **FUZZ)  # a valid request renders and signs up to 10 pictures: fewer examples
def test_no_server_errors_on_image_routes(case, solid_server):
    _check(case, solid_server)
