"""The optional Ray Serve deployment: two replicas of the same app behind Ray's proxy, both answering, images made.
Slow (a local Ray cluster starts in ~20 s on two cores) and needs `pip install "ray[serve]"`: not in the default run."""

import pytest


@pytest.mark.slow
def test_two_ray_replicas_answer(tiny_checkpoint, tmp_path):
    serve = pytest.importorskip("ray.serve", reason='pip install "ray[serve]"')
    import httpx
    import ray

    from incasa.serve import ray_serve
    from incasa.serve.settings import ServeSettings

    from .conftest import free_port

    port = free_port()
    settings = ServeSettings(port=port, store_dir=tmp_path / "store", keys_dir=tmp_path / "keys",
                             audit_log=tmp_path / "audit.jsonl", image_models=[f"tiny={tiny_checkpoint}"])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(ray_serve.deployment(settings, replicas=2, cpus_per_replica=0.5), name="incasa", route_prefix="/",
                  blocking=False)
        url = f"http://127.0.0.1:{port}"
        replicas = {httpx.get(url + "/ready", timeout=30).headers["x-incasa-replica"] for _ in range(30)}
        assert len(replicas) == 2
        r = httpx.post(url + "/v1/images/generations", json={"prompt": "red", "size": "64x64", "steps": 2}, timeout=60)
        assert r.status_code == 200 and r.json()["data"][0]["b64_json"]
        bad = httpx.post(url + "/v1/images/generations", json={"prompt": "red", "n": 99}, timeout=30)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "n"  # our errors pass through Ray's proxy
    finally:
        serve.shutdown()
        ray.shutdown()
    with pytest.raises(ValueError, match="replicas"):
        ray_serve.deployment(settings, replicas=0)
