"""OpenAI-compatible HTTP serving of every incasa model, and the studio page (`incasa serve`).

Read in this order:
    protocol.py       the OpenAI request/response shapes (pydantic), our extensions fenced; APIError
    settings.py       ServeSettings: flags > INCASA_SERVE_* environment > defaults
    engines.py        what runs per model id: the batched image engine, chat/speech Protocols, the Registry
    scheduler.py      a bounded queue per model with micro-batching, 429 when full, graceful drain
    delivery.py       guardrails in; upscale + watermark + parameters + C2PA out; the URL store
    image_service.py  an image request from validated fields to delivered bytes (and SSE previews)
    idempotency.py    Idempotency-Key: one rendering per key
    metrics.py        Prometheus metrics
    app.py            create_app: middleware (auth, access log, metrics, load shedding), error shape, lifespan
    routes/           thin routers: models, images, chat, audio, operations, studio
    studio/           the page: plain HTML + JS + CSS
    ray_serve.py      the same app as a Ray Serve deployment (optional)

Scaling out: `incasa serve --workers N` runs N processes on one port; N machines go behind any HTTP load
balancer (each replica is stateless apart from its Idempotency-Key cache, so route by that header, and the URL
store, so share --store-dir); `incasa serve ray` deploys the same app on a Ray cluster.
"""
