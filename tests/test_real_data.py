"""Loaders and evaluation on the real data sets in ../shared/data (present in CI; skipped elsewhere without it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dwcp_inference.training.data import real
from dwcp_inference.training.data.csv_schema import DataError

from .conftest import SHARED_DATA


@pytest.fixture(scope="module")
def shared() -> Path:
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED_DATA} is missing, and CI must run the real-data tests")
        pytest.skip(f"{SHARED_DATA} is absent: the real-data tests need ../shared/data")
    return SHARED_DATA


def test_mahimahi_throughput_counts_packets_per_interval(tmp_path):
    trace = tmp_path / "t.down"
    trace.write_text("0\n0\n10\n999\n1000\n2500\n")
    assert real.mahimahi_throughput(trace, 1000).tolist() == pytest.approx([4 * 0.012, 0.012, 0.012])
    (tmp_path / "bad").write_text("5\n3\n")
    with pytest.raises(DataError, match="non-decreasing"):
        real.mahimahi_throughput(tmp_path / "bad")


def test_real_traces_load(shared):
    cols = real.mahimahi_columns(shared / "bandwidth", 1000)
    assert len(np.unique(cols["link_id"])) == 7
    assert 0 < np.median(cols["bandwidth_mbps"]) < 100


def test_nab_windows_label_rows(shared):
    series = real.nab_series(shared / "anomaly" / "nab")
    assert len(series) >= 10
    s = series[0]
    assert s.in_window.any() and not s.in_window.all()
    a, b = s.windows[0]
    assert np.all(s.in_window[(s.timestamp >= a) & (s.timestamp <= b)])


def test_payload_corpus_loads(shared):
    files = dict(real.payload_files(shared / "payloads"))
    assert "alice29.txt" in files and "LICENSE" not in files


def test_train_and_evaluate_bandwidth_on_a_real_trace(shared, tmp_path):
    trace = shared / "bandwidth" / "TMobile-UMTS-driving.up"
    repo = tmp_path / "repo"
    from dwcp_inference.training import bandwidth, jobs

    columns, extra = jobs.load("bandwidth", trace, "mahimahi", 1000)
    bandwidth.train(columns, repo, source="test", epochs=3, hidden=16, quiet=True, force=True, **extra)
    other = shared / "bandwidth" / "Verizon-EVDO-driving.up"  # a trace training never saw (training/bandwidth_quantile.py)
    out = subprocess.run([sys.executable, "-m", "dwcp_inference.commands.cli", "evaluate", "bandwidth", "--repository",
                          str(repo), "--data", str(other), "--format", "mahimahi", "--all", "--json"],
                         capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    assert result["version"] == "1" and set(result["per_link"]) == {other.name}
    rows = result["rows"]
    assert rows["mlp (ours)"]["mape_pct"] < rows["moving_average"]["mape_pct"]
    assert "met" in result["target"]


def test_train_and_evaluate_the_selector_on_the_payload_corpus(shared, tmp_path):
    from dwcp_inference.training import compression, jobs

    columns, _ = jobs.load("compression", shared / "payloads", "payloads")
    assert set(np.unique(columns["split"])) == {0, 1, 2}
    compression.train(columns, tmp_path, source="test", epochs=8, hidden=32, quiet=True, force=True)
    out = subprocess.run([sys.executable, "-m", "dwcp_inference.commands.cli", "evaluate", "compression",
                          "--repository", str(tmp_path), "--data", str(shared / "payloads"), "--format", "payloads",
                          "--json"],
                         capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)["rows"]
    assert rows["mlp (ours)"]["throughput_regret_pct"] < rows["always zstd-3"]["throughput_regret_pct"]


@pytest.fixture(scope="module")
def nab_repo(shared, tmp_path_factory) -> Path:
    """Both detectors trained on the NAB training files (forced: on NAB they do not pass their gate)."""
    from dwcp_inference.training import jobs

    repo = tmp_path_factory.mktemp("nab")
    for model in ("reliability", "consensus"):
        jobs.run(model, repo, data=shared / "anomaly" / "nab", fmt="nab", size="quick", force=True)
    return repo


def test_nab_detectors_evaluate_through_the_served_runtime(shared, nab_repo):
    for model, name in (("reliability", "reliability_detector"), ("consensus", "consensus_latency")):
        out = subprocess.run([sys.executable, "-m", "dwcp_inference.commands.cli", "evaluate", model, "--repository",
                              str(nab_repo), "--data", str(shared / "anomaly" / "nab"), "--format", "nab", "--json"],
                             capture_output=True, text=True, check=True).stdout
        result = json.loads(out)
        meta = json.loads((nab_repo / name / "1" / "metadata.json").read_text())
        ours = result["rows"][f"{name} v1 (ours)"]
        trained = next(v for k, v in meta["metrics"]["test"].items() if k.endswith("(ours)"))
        assert ours == trained  # the served runtime decides as the training job did
        assert set(meta["metrics"]["held_out_files"]).isdisjoint(meta["training"]["files"])
        rolling = result["rows"]["rolling z-score (previous day, |z| > 3)"]
        assert rolling["windows_found"].endswith("/7") and 0 < rolling["false_alarms_per_day"] < 10
        assert isinstance(result["target"]["met"], bool)


def test_nab_detectors_answer_over_grpc_with_a_history(shared, nab_repo):
    import grpc

    from dwcp_inference.api import inference_pb2 as pb
    from dwcp_inference.api import inference_pb2_grpc as pb_grpc
    from dwcp_inference.services import decisions
    from dwcp_inference.services.repository import Repository
    from dwcp_inference.training import nab

    from .conftest import start_server

    series = next(s for s in real.nab_series(shared / "anomaly" / "nab") if "825cc2" in s.name)  # held out
    repo = Repository(nab_repo)
    repo.load_all()
    expected = decisions.anomaly(repo.get("reliability_detector", ""), {nab.FIELD: nab.windows_of(series, 289)})
    points = np.linspace(0, len(expected) - 1, 40).astype(int)
    running = start_server(nab_repo)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = pb_grpc.InferenceServiceStub(ch)

            def node(v: float) -> pb.NodeMetrics:
                return pb.NodeMetrics(node_id="i-825cc2", custom={"value": float(v)})

            def history(t: int) -> pb.NodeHistory:  # judged interval t: the 288 values before it
                return pb.NodeHistory(samples=[node(v) for v in series.value[nab.START + t - 288:nab.START + t]])

            for t in points:
                v = stub.DetectAnomaly(pb.DetectAnomalyRequest(metrics=node(series.value[nab.START + t]),
                                                               history=history(t))).verdict
                assert v.is_anomaly == expected[t].is_anomaly and v.score == pytest.approx(expected[t].score, abs=1e-4)
                assert v.contributions[0].feature.startswith("value_")
            batch = stub.DetectAnomalyBatch(pb.DetectAnomalyBatchRequest(
                metrics=[node(series.value[nab.START + t]) for t in points[:5]],
                histories=[history(t) for t in points[:5]]))
            assert [v.is_anomaly for v in batch.verdicts] == [expected[t].is_anomaly for t in points[:5]]

            window = pb.ConsensusWindow(samples=[pb.ConsensusSample(custom={"value": float(v)})
                                                 for v in series.value[:300]])
            assert stub.DetectHighLatency(pb.DetectHighLatencyRequest(window=window)).verdict.threshold > 0

            short = pb.NodeHistory(samples=history(0).samples[:10])
            with pytest.raises(grpc.RpcError) as e:
                stub.DetectAnomaly(pb.DetectAnomalyRequest(metrics=node(1.0), history=short))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "history.samples: expected at least 288 earlier intervals" in e.value.details()
            gap = history(0)
            del gap.samples[3].custom["value"]
            with pytest.raises(grpc.RpcError) as e:
                stub.DetectAnomaly(pb.DetectAnomalyRequest(metrics=node(1.0), history=gap))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "history.samples[3].custom['value']: missing" in e.value.details()
            nan = history(0)
            nan.samples[7].custom["value"] = float("nan")
            with pytest.raises(grpc.RpcError) as e:
                stub.DetectAnomaly(pb.DetectAnomalyRequest(metrics=node(1.0), history=nan))
            assert "history.samples[7].custom['value']: expected a finite number" in e.value.details()
            with pytest.raises(grpc.RpcError) as e:
                stub.DetectAnomalyBatch(pb.DetectAnomalyBatchRequest(metrics=[node(1.0)] * 2, histories=[gap]))
            assert "histories: this model version judges each item against its history: expected 2" \
                in e.value.details()
    finally:
        running.stop(0)
