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
