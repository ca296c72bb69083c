"""A real Prometheus server scrapes a real inference server; our rules and metrics pass promtool."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest

from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc

from .conftest import free_port, start_server
from .samples import link_history, node_metrics

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed, and CI must run the Prometheus tests (.ci/run installs it)")
        pytest.skip(f"{name} is not installed (apt-get install prometheus)")
    return path



def test_rules_and_config_pass_promtool():
    promtool = _tool("promtool")
    subprocess.run([promtool, "check", "rules", str(DEPLOY / "alerts.yml")], check=True, capture_output=True)
    subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus.yml")], check=True, capture_output=True)


def test_metrics_pass_promtool(server, stub):
    promtool = _tool("promtool")
    stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history()))
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read()
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def test_prometheus_scrapes_latency_versions_accuracy_and_drift(trained_repo, tmp_path):
    binary = _tool("prometheus")
    running = start_server(trained_repo)
    web = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{DEPLOY / 'alerts.yml'}"]
scrape_configs:
  - job_name: dwcp-inference
    static_configs: [{{targets: ["127.0.0.1:{running.metrics_port}"]}}]
""")
    prom = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{web}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = pb_grpc.InferenceServiceStub(ch)
            for _ in range(20):
                p = stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history())).prediction
                stub.ReportOutcome(pb.ReportOutcomeRequest(prediction_id=p.prediction_id,
                                                           actual_network=pb.NetworkSample(bandwidth_mbps=500)))
            v = stub.DetectAnomaly(pb.DetectAnomalyRequest(metrics=node_metrics(error_rate=0.2))).verdict
            stub.ReportOutcome(pb.ReportOutcomeRequest(prediction_id=v.prediction_id, was_anomaly=True))

        def query(expr: str) -> list:
            url = f"http://127.0.0.1:{web}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            try:
                body = json.loads(urllib.request.urlopen(url, timeout=5).read())
            except OSError:
                return []
            return body["data"]["result"] if body.get("status") == "success" else []

        wanted = {
            "latency": 'dwcp_inference_request_duration_seconds_count{rpc="PredictBandwidth",model="bandwidth_predictor"}',
            "versions": "dwcp_inference_model_info == 1",
            "mape": 'dwcp_inference_live_accuracy{model="bandwidth_predictor",metric="mape"}',
            "recall": 'dwcp_inference_live_accuracy{model="reliability_detector",metric="recall"}',
            "drift": 'dwcp_inference_input_drift_rms{model="bandwidth_predictor",feature="bandwidth"}',
            "p99": 'histogram_quantile(0.99, sum by (le) (dwcp_inference_request_duration_seconds_bucket))',
        }
        results: dict[str, list] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(results) < len(wanted):
            for name, expr in wanted.items():
                if name not in results and (r := query(expr)):
                    results[name] = r
            time.sleep(0.5)
        assert set(results) == set(wanted), f"missing: {set(wanted) - set(results)}"
        assert float(results["latency"][0]["value"][1]) >= 20
        assert {r["metric"]["model"] for r in results["versions"]} == {
            "bandwidth_predictor", "compression_selector", "reliability_detector", "consensus_latency"}
        assert 0 < float(results["mape"][0]["value"][1]) < 100
        assert float(results["recall"][0]["value"][1]) == 1.0
        assert 0 < float(results["p99"][0]["value"][1]) < 1
    finally:
        prom.terminate()
        prom.wait(timeout=30)
        running.stop(0)


def _two_free_ports() -> int:
    """A port p with p + 1 free as well (worker i serves metrics on metrics_port + i)."""
    import socket

    for _ in range(50):
        p = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise AssertionError("no two consecutive free ports")


@pytest.fixture(scope="module")
def workers_scraped(tmp_path_factory):
    """`dwcp-inference serve --workers 2` on the bundled models, scraped by a real Prometheus with
    deploy/prometheus/prometheus.yml (its targets moved to the test's ports), after some inference and admin
    traffic. Yields a PromQL query function, each worker's /metrics text and Prometheus' web port."""
    import sys
    import threading

    import yaml

    from dwcp_inference.api import admin_pb2 as apb
    from dwcp_inference.api import admin_pb2_grpc as apb_grpc

    binary = _tool("prometheus")
    tmp = tmp_path_factory.mktemp("workers")
    port, metrics, admin, web = free_port(), _two_free_ports(), free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dwcp_inference.commands.cli", "serve", "--workers", "2", "--host",
                             "127.0.0.1", "--port", str(port), "--metrics-host", "127.0.0.1", "--metrics-port",
                             str(metrics), "--admin-port", str(admin), "--poll-seconds", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(DEPLOY / "alerts.yml")]
    config["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{metrics}", f"127.0.0.1:{metrics + 1}"]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom = subprocess.Popen([binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
                             f"--web.listen-address=127.0.0.1:{web}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while sum("serving on" in ln for ln in list(lines)) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            time.sleep(0.2)
        # Each connection lands on one worker (SO_REUSEPORT): several channels reach both.
        for _ in range(8):
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                stub = pb_grpc.InferenceServiceStub(ch)
                for _ in range(5):
                    p = stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history())).prediction
                    stub.ReportOutcome(pb.ReportOutcomeRequest(prediction_id=p.prediction_id,
                                                               actual_network=pb.NetworkSample(bandwidth_mbps=500)))
                stub.PredictBandwidthBatch(pb.PredictBandwidthBatchRequest(
                    histories=[link_history() for _ in range(4)]))
                v = stub.DetectAnomaly(pb.DetectAnomalyRequest(metrics=node_metrics(error_rate=0.2))).verdict
                stub.ReportOutcome(pb.ReportOutcomeRequest(prediction_id=v.prediction_id, was_anomaly=True))
        with grpc.insecure_channel(f"127.0.0.1:{admin}") as ch:
            apb_grpc.AdminServiceStub(ch).ListModels(apb.ListModelsRequest())

        def query(expr: str) -> list:
            url = f"http://127.0.0.1:{web}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            try:
                body = json.loads(urllib.request.urlopen(url, timeout=5).read())
            except OSError:
                return []
            return body["data"]["result"] if body.get("status") == "success" else []

        texts = [urllib.request.urlopen(f"http://127.0.0.1:{metrics + i}/metrics", timeout=5).read().decode()
                 for i in (0, 1)]
        yield query, texts, web
    finally:
        prom.terminate()
        proc.terminate()
        prom.wait(timeout=30)
        proc.wait(timeout=60)


def _wait_for(query, expr: str, check, seconds: float = 60) -> list:
    deadline = time.monotonic() + seconds
    while True:
        result = query(expr)
        if result and check(result):
            return result
        assert time.monotonic() < deadline, f"{expr}: {result}"
        time.sleep(0.5)


def test_prometheus_scrapes_every_worker_with_process_metrics(workers_scraped):
    query, _, _ = workers_scraped
    for metric in ("process_resident_memory_bytes", "process_open_fds", "python_gc_objects_collected_total",
                   "dwcp_inference_model_serving", "dwcp_inference_refused_versions"):
        _wait_for(query, f"count by (instance) ({metric})", lambda r: len(r) == 2)
    serving = _wait_for(query, "dwcp_inference_model_serving", lambda r: len(r) == 8)
    assert {float(r["value"][1]) for r in serving} == {1.0}
    _wait_for(query, "sum by (instance) (dwcp_inference_requests_total)", lambda r: len(r) == 2)


def test_admin_rpcs_are_counted_apart_from_inference(workers_scraped):
    query, _, _ = workers_scraped
    _wait_for(query, 'dwcp_inference_admin_requests_total{rpc="ListModels",code="OK"}', lambda r: len(r) == 1)
    _wait_for(query, 'dwcp_inference_admin_request_duration_seconds_count{rpc="ListModels"}', lambda r: len(r) == 1)
    assert query('dwcp_inference_requests_total{rpc="ListModels"}') == []
    assert {r["metric"]["rpc"] for r in query("dwcp_inference_requests_total")} <= {
        m.name for m in pb.DESCRIPTOR.services_by_name["InferenceService"].methods}


GRAFANA = DEPLOY.parent / "grafana" / "dwcp-inference.json"
_NOT_METRICS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def _dashboard_queries() -> list[str]:
    """Every PromQL expression in the dashboard, its template variables and $__rate_interval substituted."""
    dashboard = json.loads(GRAFANA.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"].removeprefix("label_values(").rsplit(",", 1)[0]
              for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return [e.replace("$__rate_interval", "1m").replace("$instance", ".*").replace("$model", ".*") for e in exprs]


def _metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers left once strings, label matchers, ranges,
    grouping clauses and function calls are taken out."""
    import re

    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    return {n for n in re.findall(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", expr)} - _NOT_METRICS


def test_dashboard_queries_parse(tmp_path):
    import yaml

    queries = _dashboard_queries()
    assert len(queries) >= 15
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query_{i}", "expr": q}
                                                         for i, q in enumerate(queries)]}]}
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    proc = subprocess.run([_tool("promtool"), "check", "rules", str(tmp_path / "dashboard.yml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _metric_names('sum by (le) (rate(a_bucket{x="y"}[5m])) / on (j) b_total') == {"a_bucket", "b_total"}


def test_dashboard_names_only_metrics_a_real_scrape_shows(workers_scraped):
    from prometheus_client.parser import text_string_to_metric_families

    _, texts, web = workers_scraped
    scraped = {s.name for text in texts for f in text_string_to_metric_families(text) for s in f.samples}
    used = set().union(*map(_metric_names, _dashboard_queries()))
    assert used - scraped == set(), "the dashboard reads metrics the server does not export"
    # and Prometheus answers each (substituted) query without an error
    for q in _dashboard_queries():
        url = f"http://127.0.0.1:{web}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        assert json.loads(urllib.request.urlopen(url, timeout=5).read())["status"] == "success", q


def test_metrics_show_a_canary_split_and_a_model_without_a_serving_version(tmp_path):
    """What the Serving versions panel and DwcpInferenceNoModel read: each version's share of default traffic,
    and model_serving 0 for a model whose only version is refused while the others serve."""
    from prometheus_client.parser import text_string_to_metric_families

    from dwcp_inference.api import admin_pb2 as apb
    from dwcp_inference.api import admin_pb2_grpc as apb_grpc
    from dwcp_inference.commands.soak import publish_copy

    repo = tmp_path / "repo"
    shutil.copytree(Path(__file__).resolve().parents[1] / "dwcp_inference" / "models", repo)
    publish_copy(repo, "bandwidth_predictor", "2", source="1")
    (repo / "consensus_latency" / "1" / "model.onnx").write_bytes(b"broken")
    running = start_server(repo, poll_seconds=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.admin_port}") as ch:
            admin = apb_grpc.AdminServiceStub(ch)
            admin.Promote(apb.PromoteRequest(model="bandwidth_predictor", label="stable", version="1"))
            admin.Promote(apb.PromoteRequest(model="bandwidth_predictor", label="canary", version="2"))
            admin.SetSplit(apb.SetSplitRequest(model="bandwidth_predictor", weights={"stable": 90, "canary": 10}))
        text = urllib.request.urlopen(f"http://127.0.0.1:{running.metrics_port}/metrics", timeout=5).read().decode()
    finally:
        running.stop(0)
    samples = {f.name: f.samples for f in text_string_to_metric_families(text)}
    split = {(s.labels["model"], s.labels["label"], s.labels["version"]): s.value
             for s in samples["dwcp_inference_split_weight"]}
    assert split == {("bandwidth_predictor", "stable", "1"): pytest.approx(0.9),
                     ("bandwidth_predictor", "canary", "2"): pytest.approx(0.1),
                     ("compression_selector", "default", "1"): 1.0, ("reliability_detector", "default", "1"): 1.0}
    serving = {s.labels["model"]: s.value for s in samples["dwcp_inference_model_serving"]}
    assert serving == {"bandwidth_predictor": 1, "compression_selector": 1, "reliability_detector": 1,
                       "consensus_latency": 0}
