"""Prometheus metrics of one server process, in their own registry (so two apps in one process, as in tests,
never share counters). With `--workers N` each worker process counts its own requests; Prometheus adds
the pods' series up, and `/metrics` answers for the worker that serves the scrape."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# serve.monitor.window: the last comparison of recent inputs with the training reference (name: help, labels)
DRIFT_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "dlforge_drift_window_items": ("Inputs in the last drift comparison", ()),
    "dlforge_drift_share": ("Share of input columns drifted in the window", ()),
    "dlforge_drift_detected": ("1 when the window drifted (inputs or embeddings)", ()),
    "dlforge_drift_column_drifted": ("1 when this input column drifted", ("column",)),
    "dlforge_embedding_drift_auc": ("Domain-classifier ROC-AUC, window vs reference embeddings (0.5: "
                                    "indistinguishable; drift above 0.55 with MMD p < 0.05)", ()),
    "dlforge_embedding_drift_p_value": ("MMD permutation-test p-value, window vs reference embeddings", ()),
    "dlforge_estimated_accuracy": ("Label-free accuracy estimate on the window (mean calibrated confidence)", ()),
    "dlforge_drift_checked_timestamp_seconds": ("When the window was last compared", ()),
}


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("dlforge_requests", "HTTP requests by route template, method and status",
                                ("route", "method", "status"), registry=r)
        self.latency = Histogram("dlforge_request_duration_seconds", "Request latency, by route template",
                                 ("route",), buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("dlforge_requests_in_flight", "Requests being handled now", registry=r)
        self.batch_size = Histogram("dlforge_batch_size", "Items per forward pass (dynamic batching)",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("dlforge_batch_duration_seconds", "Time of one batched prediction",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.load_seconds = Gauge("dlforge_model_load_seconds", "Time to load the model at start", registry=r)
        self.log_dropped = Gauge("dlforge_request_log_dropped", "Request-log rows dropped (queue full or unwritable)",
                                 registry=r)
        self.model = Info("dlforge_model", "The model served", registry=r)
        self._drift: dict[str, Gauge] = {}

    def drift_gauge(self, name: str) -> Gauge:
        """One of `DRIFT_GAUGES`, registered when first set: a server without the drift window (or a comparison
        without embeddings) exports no such series, rather than a 0 that an alert rule reads as healthy."""
        if name not in self._drift:
            documentation, labels = DRIFT_GAUGES[name]
            self._drift[name] = Gauge(name, documentation, labels, registry=self.registry)
        return self._drift[name]

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
