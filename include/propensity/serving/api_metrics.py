"""The API's Prometheus metrics, in a registry of the app's own (several apps may live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Prometheus metrics in a registry of the app's own (several apps may live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "propensity_api_requests", "Requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "propensity_api_request_seconds",
            "Request latency inside the app",
            ["endpoint"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.stage = Histogram(
            "propensity_api_stage_seconds",
            "Time per stage of one lookup (a batch of concurrent requests)",
            ["stage"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1),
            registry=r,
        )
        self.errors = Counter("propensity_api_errors", "Errors by kind", ["kind"], registry=r)
        self.model = Gauge(
            "propensity_model_info", "Served model versions (value 1)", ["role", "version"], registry=r
        )
        self.shadow = Counter("propensity_shadow_scores", "Shadow scoring outcomes", ["outcome"], registry=r)
        self.logged = Counter(
            "propensity_prediction_log_rows", "Rows handed to the prediction log", registry=r
        )
        self.batch = Histogram(
            "propensity_api_batch_requests",
            "Requests served by one feature lookup and model call",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
