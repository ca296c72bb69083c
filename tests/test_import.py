"""Bring your own model: small Keras, scikit-learn, PyTorch and ONNX models, built here, imported as new versions,
served by the real server and called over gRPC; their answers against the source framework's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc
from dwcp_inference.export.importer import ImportRefused, import_model, read_scaler

from .conftest import start_server

NET = ["bandwidth_mbps", "latency_ms", "packet_loss", "jitter_ms", "time_of_day", "day_of_week"]
NODE = ["error_rate", "latency_p99_ms", "cpu_usage", "memory_usage"]
LAT = ["latency_p50_ms", "latency_p95_ms", "latency_p99_ms"]
MEAN = [300.0, 40.0, 0.01, 3.0, 12.0, 3.0]
SCALE = [120.0, 15.0, 0.01, 1.5, 7.0, 2.0]


def _keras_bandwidth(path: Path, features: int = 6):
    import keras

    keras.utils.set_random_seed(1)
    m = keras.Sequential([keras.Input((24, features)), keras.layers.LSTM(32, return_sequences=True),
                          keras.layers.LSTM(16), keras.layers.Dense(4)])
    m.save(path)
    return m


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Four sources imported into one repository; the source models kept to compare with."""
    import joblib
    import keras
    import torch
    from sklearn.ensemble import IsolationForest
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    d = tmp_path_factory.mktemp("import")
    repo = d / "repo"
    models = {}

    # Keras: a stacked LSTM shaped like DWCP's bandwidth model, with the JSON scaler its scripts wrote.
    models["keras_bw"] = _keras_bandwidth(d / "bw.keras")
    (d / "scaler.json").write_text(json.dumps({"feature_names": NET, "mean": MEAN, "scale": SCALE}))
    (d / "bw_features.json").write_text(json.dumps({"inputs": NET, "outputs": NET[:4]}))
    import_model("bandwidth", "keras", d / "bw.keras", repo, features_file=d / "bw_features.json",
                 scaler_file=d / "scaler.json", window=24)

    # Keras: an LSTM autoencoder over consensus latencies, min/max scaling.
    keras.utils.set_random_seed(2)
    ae = keras.Sequential([keras.Input((20, 3)), keras.layers.LSTM(8), keras.layers.RepeatVector(20),
                           keras.layers.LSTM(8, return_sequences=True),
                           keras.layers.TimeDistributed(keras.layers.Dense(3))])
    ae.save(d / "ae.keras")
    models["keras_ae"] = ae
    (d / "ae_scaler.json").write_text(json.dumps({n: {"min": 0.0, "max": 200.0} for n in LAT}))
    (d / "ae_features.txt").write_text("\n".join(LAT) + "\n")
    import_model("consensus", "keras", d / "ae.keras", repo, features_file=d / "ae_features.txt",
                 scaler_file=d / "ae_scaler.json", window=20, threshold=0.05)

    # scikit-learn: an IsolationForest inside a pipeline with its scaler (a joblib pickle: needs the flag).
    rng = np.random.default_rng(0)
    normal = np.column_stack([rng.uniform(0, 0.01, 500), rng.normal(50, 5, 500), rng.uniform(0.2, 0.6, 500),
                              rng.uniform(0.3, 0.7, 500)])
    pipe = make_pipeline(StandardScaler(), IsolationForest(n_estimators=50, random_state=0)).fit(normal)
    joblib.dump(pipe, d / "iforest.joblib")
    models["sklearn"] = pipe
    (d / "node_features.json").write_text(json.dumps(NODE))
    import_model("reliability", "sklearn", d / "iforest.joblib", repo, features_file=d / "node_features.json",
                 trust_pickle=True)

    # PyTorch: a small scoring module as TorchScript, then the same module as plain ONNX.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)).eval()
    torch.jit.script(net).save(str(d / "detector.pt"))
    models["torch"] = net
    (d / "node_scaler.json").write_text(json.dumps({"feature_names": NODE, "mean": [0.005, 50, 0.4, 0.5],
                                                    "scale": [0.003, 5, 0.1, 0.1]}))
    import_model("reliability", "torch", d / "detector.pt", repo, features_file=d / "node_features.json",
                 scaler_file=d / "node_scaler.json", threshold=0.1)
    torch.onnx.export(net, (torch.zeros(2, 4),), str(d / "detector.onnx"), input_names=["x"], output_names=["s"],
                      dynamic_axes={"x": {0: "n"}, "s": {0: "n"}}, dynamo=False)
    import_model("reliability", "onnx", d / "detector.onnx", repo, features_file=d / "node_features.json",
                 scaler_file=d / "node_scaler.json", threshold=0.1)
    (repo / "reliability_detector" / "policy.json").write_text('{"keep_latest": 3}')  # serve all three
    return d, repo, models


@pytest.fixture(scope="module")
def stub(imported):
    running = start_server(imported[1], poll_seconds=0)
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        yield pb_grpc.InferenceServiceStub(ch)
    running.stop(0)


def _history(rng) -> tuple[pb.LinkHistory, np.ndarray]:
    raw = np.column_stack([rng.uniform(100, 500, 24), rng.uniform(10, 80, 24), rng.uniform(0, 0.03, 24),
                           rng.uniform(0.5, 6, 24), np.full(24, 14.0), np.full(24, 2.0)])
    ints = {"time_of_day", "day_of_week"}
    return pb.LinkHistory(samples=[pb.NetworkSample(**{k: int(v) if k in ints else float(v) for k, v in zip(NET, row)})
                                   for row in raw]), raw


def test_a_keras_bandwidth_lstm_answers_as_keras_does(imported, stub):
    _, repo, models = imported
    meta = json.loads((repo / "bandwidth_predictor" / "1" / "metadata.json").read_text())
    assert meta["training"]["imported_from"] == "keras" and len(meta["training"]["source_sha256"]) == 64
    assert meta["metrics"]["parity"]["output"]["max_abs_error"] < 1e-4
    rng = np.random.default_rng(5)
    for _ in range(3):
        history, raw = _history(rng)
        got = stub.PredictBandwidth(pb.PredictBandwidthRequest(history=history)).prediction
        x = ((raw - MEAN) / SCALE).astype(np.float32)[None]
        y = models["keras_bw"](x, training=False).numpy()[0] * SCALE[:4] + MEAN[:4]
        assert got.predicted_bandwidth_mbps == pytest.approx(max(y[0], 0.0), rel=1e-4, abs=1e-3)
        assert got.predicted_latency_ms == pytest.approx(max(y[1], 0.0), rel=1e-4, abs=1e-3)


def test_a_keras_autoencoder_judges_windows_as_keras_does(imported, stub):
    _, _, models = imported
    lat = np.random.default_rng(6).uniform(5, 150, (20, 3))
    window = pb.ConsensusWindow(samples=[pb.ConsensusSample(**dict(zip(LAT, row.tolist())), network_tier="tier1",
                                                            dwcp_mode="datacenter", consensus_type="raft")
                                         for row in lat])
    v = stub.DetectHighLatency(pb.DetectHighLatencyRequest(window=window)).verdict
    x = (lat / 200.0).astype(np.float32)[None]
    mse = float(np.mean((models["keras_ae"](x, training=False).numpy() - x) ** 2))
    assert v.reconstruction_error == pytest.approx(mse, rel=1e-3)
    assert v.is_high_latency == (mse >= 0.05) and v.threshold == 0.05
    assert {e.feature for e in v.feature_errors} == set(LAT)


def test_sklearn_torch_and_onnx_detectors_answer_as_their_frameworks_do(imported, stub):
    import torch

    _, repo, models = imported
    rows = np.array([[0.004, 52, 0.4, 0.5], [0.9, 400, 0.99, 0.99], [0.006, 47, 0.3, 0.6]])
    scaled = ((rows - [0.005, 50, 0.4, 0.5]) / [0.003, 5, 0.1, 0.1]).astype(np.float32)
    torch_scores = models["torch"](torch.from_numpy(scaled)).detach().numpy()[:, 0]
    for version, want in (("1", -models["sklearn"].decision_function(rows)), ("2", torch_scores),
                          ("3", torch_scores)):
        for row, score in zip(rows, want):
            v = stub.DetectAnomaly(pb.DetectAnomalyRequest(
                metrics=pb.NodeMetrics(**dict(zip(NODE, row.tolist()))),
                model=pb.ModelSelector(version=version))).verdict
            assert v.score == pytest.approx(score, abs=1e-4), version
            assert v.is_anomaly == (score >= v.threshold)
    assert models["sklearn"].predict(rows[1:2])[0] == -1  # the outlier row: the forest's own verdict
    meta = json.loads((repo / "reliability_detector" / "3" / "metadata.json").read_text())
    assert meta["framework"]["name"] == "onnx" and meta["metrics"]["parity"]["s"]["max_abs_error"] < 1e-5


def test_refusals_say_what_was_expected_and_leave_nothing(imported, tmp_path):
    d = imported[0]
    repo = tmp_path / "repo"
    _keras_bandwidth(tmp_path / "five.keras", features=5)
    with pytest.raises(ImportRefused, match=r"takes input \[None, 24, 5\].*make \[None, 24, 6\]"):
        import_model("bandwidth", "keras", tmp_path / "five.keras", repo, features_file=d / "bw_features.json",
                     scaler_file=d / "scaler.json", window=24)
    with pytest.raises(ImportRefused, match="--scaler: a keras bandwidth model is fed scaled features"):
        import_model("bandwidth", "keras", d / "bw.keras", repo, features_file=d / "bw_features.json", window=24)
    (tmp_path / "six.json").write_text(json.dumps(["queue_depth", "proposals_pending", "proposals_committed", *LAT]))
    with pytest.raises(ImportRefused, match=r"autoencoder returns its reconstruction, \[None, 24, 6\]; found "
                                            r"\[\('output', \[None, 4\]\)\]"):
        import_model("consensus", "keras", d / "bw.keras", repo, features_file=tmp_path / "six.json",
                     no_scaler=True, window=24, threshold=1.0)
    with pytest.raises(ImportRefused, match="--features: \\['cpu'\\]: expected fields"):
        (tmp_path / "bad.json").write_text('["cpu"]')
        import_model("reliability", "sklearn", d / "iforest.joblib", repo, features_file=tmp_path / "bad.json")
    (tmp_path / "s.json").write_text(json.dumps({"feature_names": NODE, "min": [0] * 4, "max": [0] * 4}))
    with pytest.raises(ImportRefused, match="positive scale"):
        read_scaler(tmp_path / "s.json")
    out = subprocess.run([sys.executable, "-m", "dwcp_inference.commands.cli", "import", "reliability", "--from",
                          "sklearn", str(d / "iforest.joblib"), "--repository", str(repo), "--features",
                          str(d / "node_features.json")], capture_output=True, text=True)
    assert out.returncode == 2
    assert "a pickle, and loading a pickle runs code from the file. Pass --trust-pickle" in out.stderr
    assert not repo.exists() or not any(p for p in repo.rglob("*") if p.is_file())


def test_a_keras_savedmodel_directory_imports_too(imported, tmp_path):
    d, _, models = imported
    models["keras_ae"].export(str(tmp_path / "savedmodel"))  # the SavedModel format DWCP's older scripts wrote
    version_dir = import_model("consensus", "keras", tmp_path / "savedmodel", tmp_path / "repo",
                               features_file=d / "ae_features.txt", scaler_file=d / "ae_scaler.json", window=20,
                               threshold=0.05)
    meta = json.loads((version_dir / "metadata.json").read_text())
    assert meta["metrics"]["parity"]["output"]["max_abs_error"] < 1e-5
    assert meta["training"]["source_file"] == "savedmodel" and len(meta["training"]["source_sha256"]) == 64


def _reliability_csv(path: Path, rng) -> dict[str, np.ndarray]:
    """Rows in the training CSV schema (docs/data.md): 300 normal, 60 anomalous with far larger values."""
    from dwcp_inference.training.data.generators import RELIABILITY_FEATURES

    labels = np.r_[np.zeros(300, int), np.ones(60, int)]
    cols = {f: rng.uniform(0.1, 0.5, labels.size) * np.where(labels == 1, 1.9, 1.0) for f in RELIABILITY_FEATURES}
    cols["latency_p99_ms"] = rng.normal(50, 5, labels.size) * np.where(labels == 1, 8.0, 1.0)
    lines = [",".join([*cols, "is_anomaly"])]
    lines += [",".join([*(repr(float(cols[f][i])) for f in cols), str(labels[i])]) for i in range(labels.size)]
    path.write_text("\n".join(lines) + "\n")
    return {f: v[labels == 0] for f, v in cols.items()}


def test_imputation_comes_from_the_training_data_given_or_is_said_to_be_absent(imported, tmp_path):
    from dwcp_inference import metadata

    d, repo, _ = imported
    without = json.loads((repo / "reliability_detector" / "2" / "metadata.json").read_text())
    assert "imputation" not in without and without["training"]["imputation"].startswith(
        "none: imported without --imputation-from")

    normal = _reliability_csv(tmp_path / "train.csv", np.random.default_rng(3))
    new_repo = tmp_path / "repo"
    cli = [sys.executable, "-m", "dwcp_inference.commands.cli", "import", "reliability", "--from", "torch",
           str(d / "detector.pt"), "--repository", str(new_repo), "--features", str(d / "node_features.json"),
           "--scaler", str(d / "node_scaler.json"), "--threshold", "0.1"]
    out = subprocess.run([*cli, "--imputation-from", str(tmp_path / "train.csv")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    meta = metadata.read(new_repo / "reliability_detector" / "1")  # validated as the server's loader does
    assert sorted(meta.imputation) == sorted(NODE)
    for field in NODE:  # the median of the normal rows, as training computes it (not the anomalies' pull)
        assert meta.imputation[field] == {"value": pytest.approx(float(np.median(normal[field]))),
                                          "how": "median of the normal rows of train.csv, given to import as its "
                                                 "training data"}
    assert meta.training["imputation_file"] == "train.csv" and len(meta.training["imputation_sha256"]) == 64
    running = start_server(new_repo, poll_seconds=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            v = pb_grpc.InferenceServiceStub(ch).DetectAnomaly(pb.DetectAnomalyRequest(
                metrics=pb.NodeMetrics(**{f: meta.imputation[f]["value"] for f in NODE}))).model
            assert (v.name, v.version) == ("reliability_detector", "1")
    finally:
        running.stop(0)

    (tmp_path / "short.csv").write_text("error_rate,is_anomaly\n0.1,0\n0.2,0\n")
    out = subprocess.run([*cli, "--imputation-from", str(tmp_path / "short.csv")], capture_output=True, text=True)
    assert out.returncode == 2 and f"--imputation-from {tmp_path / 'short.csv'}: " in out.stderr
    assert "missing columns" in out.stderr and not (new_repo / "reliability_detector" / "2").exists()
