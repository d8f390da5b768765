"""Prometheus metrics of one server (its own registry, so several apps in one process do not collide).

    incasa_serve_requests_total{route, status}          requests answered
    incasa_serve_request_seconds{route, status}         latency histogram, from first byte in to response out
    incasa_serve_queue_depth{model}                     jobs waiting per model (read at scrape time)
    incasa_serve_batch_images{model}                    images per micro-batch (histogram)
    incasa_serve_batch_seconds{model}                   one sampler call (histogram)
    incasa_serve_images_total{model}                    images rendered: rate() of it is images/s
    incasa_serve_rejected_total{reason}                 429 queue_full, 503 shutting_down, 504 timeout
    incasa_serve_resident_model_bytes                   weights currently loaded
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("incasa_serve_requests", "Requests answered", ["route", "status"], registry=r)
        self.latency = Histogram("incasa_serve_request_seconds", "Request latency", ["route", "status"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("incasa_serve_queue_depth", "Jobs waiting", ["model"], registry=r)
        self.batch_images = Histogram("incasa_serve_batch_images", "Images per micro-batch", ["model"],
                                      buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.batch_seconds = Histogram("incasa_serve_batch_seconds", "Sampler call duration", ["model"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.images = Counter("incasa_serve_images", "Images rendered", ["model"], registry=r)
        self.rejected = Counter("incasa_serve_rejected", "Requests refused for load or time", ["reason"], registry=r)
        self.resident_bytes = Gauge("incasa_serve_resident_model_bytes", "Model weights loaded", registry=r)

    def on_batch(self, model: str, jobs: int, images: int, seconds: float) -> None:
        self.batch_images.labels(model).observe(images)
        self.batch_seconds.labels(model).observe(seconds)
        self.images.labels(model).inc(images)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
