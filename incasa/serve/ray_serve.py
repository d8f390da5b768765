"""Ray Serve deployment of the same app: N replicas across a Ray cluster, one proxy in front (optional extra:
`pip install "ray[serve]"`).

    incasa serve ray --replicas 4 --gpus-per-replica 1 --port 8000     # on the head node of a Ray cluster

Nothing here re-implements the server: `serve.ingress` is given a *builder* that calls `create_app` inside each
replica, so every replica has its own bounded queues, micro-batching, guardrails and signing, exactly as a
single `incasa serve` process; Ray adds placement (GPUs per replica), the HTTP proxy that spreads requests, and
restarts. Settings travel to the replicas as the `ServeSettings` object. What a replica keeps in memory
(Idempotency-Key answers, the URL store) is per replica: give every replica the same `store_dir` on shared
storage, and expect a retry that lands on another replica to render again.
"""

from __future__ import annotations

from incasa.serve.settings import ServeSettings


def deployment(settings: ServeSettings, *, replicas: int = 2, gpus_per_replica: float = 0.0,
               cpus_per_replica: float = 1.0):
    """The bound Ray Serve application (pass to `serve.run`)."""
    from ray import serve

    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas}")
    if gpus_per_replica < 0 or cpus_per_replica <= 0:
        raise ValueError("gpus_per_replica must be >= 0 and cpus_per_replica > 0")

    def build():
        from incasa.serve.app import create_app

        return create_app(settings)

    ingress = serve.ingress(build)()
    # Ray's own admission bound per replica: a little above ours, so that our 429 with Retry-After (not Ray's
    # 503) is what a client sees when a replica's queue is full.
    options = dict(name="incasa", num_replicas=replicas, max_ongoing_requests=settings.queue_size + 16,
                   ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica})
    return serve.deployment(ingress, **options).bind()


def run(settings: ServeSettings, *, replicas: int = 2, gpus_per_replica: float = 0.0, cpus_per_replica: float = 1.0,
        address: str | None = None, blocking: bool = True):
    """Connect to (or start) Ray, start Serve's proxy on settings.host:port, deploy, and block until interrupted."""
    import ray
    from ray import serve

    ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    app = deployment(settings, replicas=replicas, gpus_per_replica=gpus_per_replica,
                     cpus_per_replica=cpus_per_replica)
    return serve.run(app, name="incasa", route_prefix="/", blocking=blocking)
