"""Prometheus metrics of one server, in their own registry, served on the metrics port."""

from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

# Sub-millisecond answers need fine buckets at the bottom.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self) -> None:
        self._children: dict[tuple, Any] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram("dwcp_inference_request_duration_seconds",
                                 "Time to answer an inference RPC, by RPC, model and version.",
                                 ["rpc", "model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("dwcp_inference_requests_total", "Inference RPCs answered, by RPC and status code.",
                                ["rpc", "code"], registry=r)
        self.session_rows = Histogram("dwcp_inference_session_batch_rows",
                                      "Rows per onnxruntime call (micro-batching gathers concurrent calls), "
                                      "observed once per RPC.", ["model"],
                                      buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r)
        self.batch_queue = Histogram("dwcp_inference_batch_queue_seconds",
                                     "Time an RPC waited for its onnxruntime call (micro-batching queue).",
                                     ["model"], buckets=(0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                         0.005, 0.01, 0.025, 0.1), registry=r)
        self.batch_size = Histogram("dwcp_inference_batch_size", "Items per batch RPC.", ["rpc"],
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r)
        self.model_info = Gauge("dwcp_inference_model_info",
                                "A loaded model version (1 when it serves by default, 0 when only on request), "
                                "with its labels.", ["model", "version", "labels", "loaded_at"], registry=r)
        self.loads = Counter("dwcp_inference_model_loads_total",
                             "Model version events: loaded, refused (failed verification) or unloaded.",
                             ["model", "result"], registry=r)
        self.reloads = Counter("dwcp_inference_repository_reloads_total",
                               "Rescans of the repository that changed what is loaded.", registry=r)
        self.refused = Gauge("dwcp_inference_refused_versions", "Versions on disk that failed verification.",
                             ["model"], registry=r)
        self.outcomes = Counter("dwcp_inference_outcomes_total", "Outcomes reported, by model and version.",
                                ["model", "version"], registry=r)
        self.live = Gauge("dwcp_inference_live_accuracy",
                          "Accuracy from reported outcomes (mape in percent for bandwidth; accuracy and "
                          "regret_pct for the selector; precision and recall for the detectors), per model version.",
                          ["model", "version", "metric"], registry=r)

    def child(self, metric: Any, *labels: str) -> Any:
        """A labelled child, looked up once: `labels()` takes a lock and builds a key on every call."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe_batch(self, model: str, rows: int, queued_seconds: float) -> None:
        self.child(self.session_rows, model).observe(rows)
        self.child(self.batch_queue, model).observe(queued_seconds)

    def forget_version(self, model: str, version: str) -> None:
        """Drop an unloaded version's latency series."""
        for key in [k for k in list(self._children) if k[0] is self.latency and k[1][1:] == (model, version)]:
            self._children.pop(key, None)
            try:
                self.latency.remove(*key[1])
            except KeyError:
                pass

    def serve(self, port: int, addr: str = "0.0.0.0"):
        return start_http_server(port, addr=addr, registry=self.registry)


class DriftCollector:
    """dwcp_inference_input_drift_rms{model,version,feature}, read from each loaded version at scrape time."""

    def __init__(self, loaded: Callable[[], dict]):
        self.loaded = loaded

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily("dwcp_inference_input_drift_rms",
                              "Root mean square of recent standardised inputs per numeric feature; 1 is the "
                              "training distribution.", labels=["model", "version", "feature"])
        for model, versions in self.loaded().items():
            for version, rt in versions.items():
                if rt.drift.seen:
                    for feature, value in rt.drift.rms().items():
                        g.add_metric([model, version, feature], value)
        yield g
