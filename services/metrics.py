"""Prometheus metrics of one server, in their own registry, served on the metrics port."""

from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client import (CollectorRegistry, Counter, Gauge, GCCollector, Histogram, PlatformCollector,
                               ProcessCollector, make_wsgi_app, start_http_server)
from prometheus_client.core import GaugeMetricFamily

# Sub-millisecond answers need fine buckets at the bottom.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self) -> None:
        self._children: dict[tuple, Any] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        # process_* (memory, open files, CPU), python_info and python_gc_*, as on prometheus_client's default registry.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.latency = Histogram("dwcp_inference_request_duration_seconds",
                                 "Time to answer an inference RPC, by RPC, model and version.",
                                 ["rpc", "model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("dwcp_inference_requests_total", "Inference RPCs answered, by RPC and status code.",
                                ["rpc", "code"], registry=r)
        # Apart from the inference series: requests_total feeds the HPA's requests per second.
        self.admin_requests = Counter("dwcp_inference_admin_requests_total",
                                      "Admin RPCs answered, by RPC and status code.", ["rpc", "code"], registry=r)
        self.admin_latency = Histogram("dwcp_inference_admin_request_duration_seconds",
                                       "Time to answer an admin RPC (a load or promote includes verification).",
                                       ["rpc"], buckets=(0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30), registry=r)
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
        self.coalesced = Histogram("dwcp_inference_coalesced_calls",
                                   "Single calls that waited together taken as one batch: calls per batch, by RPC "
                                   "(serve --coalesce-max; a call computed alone is not observed; a batch that "
                                   "fails is computed again call by call).", ["rpc"],
                                   buckets=(2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.model_info = Gauge("dwcp_inference_model_info",
                                "A loaded model version (1 when it serves by default, 0 when only on request), "
                                "with its labels.", ["model", "version", "labels", "loaded_at"], registry=r)
        self.decoder_info = Gauge("dwcp_inference_decoder_info",
                                  "1 for the request decoder this process uses: native (the Rust extension) or "
                                  "python (no compiler at install, or --decoder python).", ["decoder"], registry=r)
        self.front_info = Gauge("dwcp_inference_front_info",
                                "1 for the inference port's transport: native (the Rust front) or grpcio (no compiler "
                                "at install, or --front grpcio).", ["front"], registry=r)
        self.model_serving = Gauge("dwcp_inference_model_serving",
                                   "1 when the model has a version serving by default, 0 when the repository holds "
                                   "the model but no version of it serves.", ["model"], registry=r)
        self.split_weight = Gauge("dwcp_inference_split_weight",
                                  "Share (0-1) of the calls that name no version answered by each version: the "
                                  "traffic split over labels on loaded versions, else 1 for the default version "
                                  "(label \"default\").", ["model", "label", "version"], registry=r)
        self.loads = Counter("dwcp_inference_model_loads_total",
                             "Model version events: loaded, refused (failed verification) or unloaded.",
                             ["model", "result"], registry=r)
        self.reloads = Counter("dwcp_inference_repository_reloads_total",
                               "Rescans of the repository that changed what is loaded.", registry=r)
        self.refused = Gauge("dwcp_inference_refused_versions", "Versions on disk that failed verification.",
                             ["model"], registry=r)
        self.outcomes = Counter("dwcp_inference_outcomes_total", "Outcomes reported, by model and version.",
                                ["model", "version"], registry=r)
        self.nonfinite = Counter("dwcp_inference_nonfinite_outputs_total",
                                 "Calls failed with INTERNAL because the model gave a NaN or infinite output, by "
                                 "model and version.", ["model", "version"], registry=r)
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

    def observe_admin(self, rpc: str, code: str, seconds: float) -> None:
        self.child(self.admin_requests, rpc, code).inc()
        self.child(self.admin_latency, rpc).observe(seconds)

    def show_versions(self, loaded: dict, policies: dict, serving: dict) -> None:
        """Set model_info, model_serving and split_weight from what the repository holds now (its `loaded()`,
        `policies()` and `serving()`)."""
        for gauge in (self.model_info, self.model_serving, self.split_weight):
            gauge.clear()
        for name, versions in loaded.items():
            policy = policies.get(name)
            labels = policy.labels if policy else {}
            default = serving.get(name)
            for version, rt in versions.items():
                tags = ",".join(sorted(lb for lb, v in labels.items() if v == version))
                self.model_info.labels(name, version, tags, f"{rt.loaded_at:.0f}").set(1 if default is rt else 0)
            self.model_serving.labels(name).set(1 if default is not None else 0)
            split = {lb: w for lb, w in (policy.split if policy else {}).items() if labels.get(lb) in versions}
            total = sum(split.values())
            if total > 0:
                for label, weight in split.items():
                    self.split_weight.labels(name, label, labels[label]).set(weight / total)
            elif default is not None:
                self.split_weight.labels(name, "default", default.version).set(1)

    def forget_version(self, model: str, version: str) -> None:
        """Drop an unloaded version's latency series."""
        for key in [k for k in list(self._children) if k[0] is self.latency and k[1][1:] == (model, version)]:
            self._children.pop(key, None)
            try:
                self.latency.remove(*key[1])
            except KeyError:
                pass

    def serve(self, port: int, addr: str = "0.0.0.0", health: Callable[[str], bool] | None = None,
              loaded: Callable[[], dict] | None = None):
        """/metrics on addr:port; with `health` (grpc.health's state of a service), also the Open Inference
        Protocol's HTTP health paths (v2_health.py), the versioned one from `loaded` (Repository.loaded)."""
        if health is None:
            return start_http_server(port, addr=addr, registry=self.registry)
        from . import v2_health
        return v2_health.serve(v2_health.with_health(make_wsgi_app(self.registry), health, loaded), port, addr)


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
