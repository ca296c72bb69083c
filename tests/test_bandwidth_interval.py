"""Issue 18: a bandwidth version with quantile outputs answers its interval [p10, p90] and a calibrated confidence
(its held-out share of actuals inside the interval) through the typed API, both encoders (byte for byte), V2 and
`evaluate`; a version without quantiles answers as before (tests/test_native.py holds its bytes).

The quantile version is trained by the real CLI (training/bandwidth_quantile.py) on small generated traces in
mahimahi's format, beside the bundled models (about 5 s)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from dwcp_inference import metadata
from dwcp_inference.api import grpc_predict_v2_pb2 as v2
from dwcp_inference.api import grpc_predict_v2_pb2_grpc as v2_grpc
from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc
from dwcp_inference.services import decode
from dwcp_inference.services.settings import bundled_models

from .conftest import start_server
from .test_native import NOW, _reply, _signer
from .test_v2 import _outputs, _tensor

CLI = [sys.executable, "-m", "dwcp_inference.commands.cli"]
QUANTILE_VERSION = "2"  # published beside the bundled version 1
WINDOW = 30  # training/bandwidth_quantile.WINDOW


def write_traces(directory: Path, seed: int, links: int, seconds: int = 300) -> Path:
    """mahimahi traces (one line per 1500-byte delivery opportunity, in ms): a random walk in log throughput
    around 1-3 Mbit/s with per-second noise, one file per link."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for k in range(links):
        mbps = (1.0 + k) * np.exp(np.cumsum(rng.normal(0, 0.1, seconds))) * rng.uniform(0.6, 1.4, seconds)
        packets = rng.poisson(mbps * 1e6 / 12000)
        ms = np.concatenate([s * 1000 + np.sort(rng.integers(0, 1000, n)) for s, n in enumerate(packets)])
        (directory / f"trace-{seed}-{k}.up").write_text("\n".join(map(str, ms)) + "\n")
    return directory


@pytest.fixture(scope="module")
def quantile_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("interval")
    repo = root / "repo"
    shutil.copytree(bundled_models(), repo)
    done = subprocess.run([*CLI, "train", "bandwidth", "--data", str(write_traces(root / "train", 0, 3)),
                           "--format", "mahimahi", "--out", str(repo), "--force", "--quick"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = metadata.read(repo / "bandwidth_predictor" / QUANTILE_VERSION)
    assert meta.decision["forecaster"] == "quantile_mlp" and 0 < meta.decision["interval_coverage"] < 1
    return repo


@pytest.fixture(scope="module")
def running(quantile_repo):
    server = start_server(quantile_repo, admin_port=-1, poll_seconds=0)
    yield server
    server.stop(0)


def _history(rng: np.random.Generator, level: float = 2.0, samples: int = WINDOW) -> pb.LinkHistory:
    return pb.LinkHistory(samples=[pb.NetworkSample(bandwidth_mbps=float(b))
                                   for b in level * rng.uniform(0.5, 1.5, samples)])


def _coverage(repo: Path) -> float:
    return metadata.read(repo / "bandwidth_predictor" / QUANTILE_VERSION).decision["interval_coverage"]


def test_a_version_with_quantiles_answers_its_interval_and_its_held_out_coverage(running, quantile_repo):
    rng = np.random.default_rng(1)
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        quantiles = pb.ModelSelector(version=QUANTILE_VERSION)
        one = stub.PredictBandwidth(pb.PredictBandwidthRequest(history=_history(rng), model=quantiles))
        histories = [_history(rng, level) for level in (0.5, 2.0, 40.0)] + [
            pb.LinkHistory(samples=[pb.NetworkSample(bandwidth_mbps=0.0)] * WINDOW)]
        batch = stub.PredictBandwidthBatch(pb.PredictBandwidthBatchRequest(histories=histories, model=quantiles))
        bundled = stub.PredictBandwidth(pb.PredictBandwidthRequest(history=_history(rng, samples=24),
                                                                   model=pb.ModelSelector(version="1")))
    assert one.model.version == batch.model.version == QUANTILE_VERSION
    for p in [one.prediction, *batch.predictions]:
        assert p.HasField("predicted_bandwidth_p10_mbps") and p.HasField("predicted_bandwidth_p90_mbps")
        assert 0 <= p.predicted_bandwidth_p10_mbps <= p.predicted_bandwidth_p90_mbps
        assert p.confidence == pytest.approx(_coverage(quantile_repo), abs=0)
    assert batch.predictions[-1].predicted_bandwidth_p90_mbps < 1e-6  # an outage: set, near 0 (0 itself: below)
    for p, level in zip(batch.predictions, (0.5, 2.0, 40.0)):  # the interval scales with the link
        assert 0.05 * level < p.predicted_bandwidth_p90_mbps < 10 * level
    assert not bundled.prediction.HasField("predicted_bandwidth_p10_mbps")
    assert not bundled.prediction.HasField("predicted_bandwidth_p90_mbps")
    assert 0 < bundled.prediction.confidence < 1


def test_the_served_forecast_scales_with_the_link(running):
    """The network reads the window's shape, never its speed (a speed does not carry across carriers): the same
    window 10x faster is served a point forecast and an interval exactly 10x higher."""
    windows = np.random.default_rng(4).uniform(0.5, 3.0, (8, WINDOW)) * np.geomspace(0.1, 100, 8)[:, None]

    def served(scale: float) -> np.ndarray:
        histories = [pb.LinkHistory(samples=[pb.NetworkSample(bandwidth_mbps=float(b)) for b in row * scale])
                     for row in windows]
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            got = pb_grpc.InferenceServiceStub(channel).PredictBandwidthBatch(pb.PredictBandwidthBatchRequest(
                histories=histories, model=pb.ModelSelector(version=QUANTILE_VERSION)), timeout=30)
        return np.array([[p.predicted_bandwidth_mbps, p.predicted_bandwidth_p10_mbps, p.predicted_bandwidth_p90_mbps]
                         for p in got.predictions])

    slow, fast = served(1.0), served(10.0)
    assert (slow > 0).all()
    np.testing.assert_allclose(fast, 10 * slow, rtol=1e-4)


@pytest.fixture(scope="module")
def servicer(quantile_repo):
    from dwcp_inference.services.metrics import Metrics
    from dwcp_inference.services.outcomes import OutcomeTracker
    from dwcp_inference.services.repository import Repository
    from dwcp_inference.services.servicers import InferenceServicer

    module = decode.native_module()
    if module is None:
        pytest.fail("dwcp_inference_native is not installed: `make setup` builds it (pip install ./native)")
    metrics = Metrics()
    repo = Repository(quantile_repo)
    repo.load_all()
    servicer = InferenceServicer(repo, OutcomeTracker(metrics, b"k" * 32), metrics, 1024)
    return (servicer, {"native": decode.choose("native"), "python": decode.choose("python")}), module


def test_native_bytes_are_the_python_messages_bytes_with_an_interval(servicer, monkeypatch):
    from dwcp_inference.services import convert
    monkeypatch.setattr(convert, "now", lambda: NOW)
    inference, native = servicer
    rng, sign = np.random.default_rng(2), _signer()
    quantiles = pb.ModelSelector(version=QUANTILE_VERSION)
    outage = pb.LinkHistory(samples=[pb.NetworkSample(bandwidth_mbps=0.0)] * WINDOW)
    requests = [("PredictBandwidth", pb.PredictBandwidthRequest(history=_history(rng, samples=n), model=quantiles))
                for n in (WINDOW, 31, 200)]
    requests += [("PredictBandwidth", pb.PredictBandwidthRequest(history=outage, model=quantiles)),
                 ("PredictBandwidthBatch", pb.PredictBandwidthBatchRequest(
                     histories=[_history(rng, float(level)) for level in rng.uniform(0.1, 500, 64)] + [outage],
                     model=quantiles))]
    for rpc, request in requests:
        data = request.SerializeToString()
        native_reply, python_reply = _reply(inference, "native", rpc, data), _reply(inference, "python", rpc, data)
        message = python_reply.render(sign)
        encoded = native_reply.render(sign, native)
        assert encoded == message.SerializeToString(), rpc
        assert encoded == native_reply.render(sign).SerializeToString()
        parsed = getattr(pb, rpc + "Response").FromString(encoded)
        items = [parsed.prediction] if rpc == "PredictBandwidth" else list(parsed.predictions)
        assert all(p.HasField("predicted_bandwidth_p10_mbps") for p in items)


def test_the_native_encoder_writes_a_zero_interval_and_refuses_a_short_one(servicer):
    """A set optional double is written even at 0.0 (and -0.0), as protobuf does; a column of the wrong length is a
    ValueError, never bytes."""
    from types import SimpleNamespace

    from dwcp_inference.services import decisions, encode
    _, native = servicer
    values = np.array([-0.0, 0.0, 5e-324, 1.5])
    answers = decisions.BandwidthAnswers(values, values, values, values, values, 1.0, values.copy(),
                                         values[::-1].copy())
    reply = encode.bandwidth(SimpleNamespace(name="bandwidth_predictor", version="2"), False, answers,
                             np.zeros(4), 0.0)
    encoded = reply.render(_signer(), native)
    assert encoded == reply.render(_signer()).SerializeToString()
    parsed = pb.PredictBandwidthBatchResponse.FromString(encoded).predictions
    assert all(p.HasField("predicted_bandwidth_p10_mbps") for p in parsed)
    assert parsed[1].predicted_bandwidth_p10_mbps == 0.0
    cols = [values.tobytes()] * 5
    with pytest.raises(ValueError, match="p90: 3 values, expected 4"):
        native.encode_bandwidth("bandwidth_predictor", "2", ["a"] * 4, cols, np.zeros(4, np.int64).tobytes(),
                                np.zeros(4, np.int32).tobytes(), 0, 0, [values.tobytes(), values[:3].tobytes()])


def test_v2_answers_the_interval_of_a_version_with_quantiles_only(running, quantile_repo):
    rng = np.random.default_rng(3)
    bw = rng.uniform(1.0, 3.0, (3, WINDOW))
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        v2_stub, typed = v2_grpc.GRPCInferenceServiceStub(channel), pb_grpc.InferenceServiceStub(channel)
        meta = v2_stub.ModelMetadata(v2.ModelMetadataRequest(name="bandwidth_predictor", version=QUANTILE_VERSION))
        names = [o.name for o in meta.outputs]
        assert "predicted_bandwidth_p10_mbps" in names and "predicted_bandwidth_p90_mbps" in names
        old = v2_stub.ModelMetadata(v2.ModelMetadataRequest(name="bandwidth_predictor", version="1"))
        assert not any("p10" in o.name for o in old.outputs)
        req = v2.ModelInferRequest(model_name="bandwidth_predictor", model_version=QUANTILE_VERSION)
        _tensor(req, "bandwidth_mbps", bw, "FP64")
        got = _outputs(v2_stub.ModelInfer(req))
        want = typed.PredictBandwidthBatch(pb.PredictBandwidthBatchRequest(
            histories=[pb.LinkHistory(samples=[pb.NetworkSample(bandwidth_mbps=float(b)) for b in row]) for row in bw],
            model=pb.ModelSelector(version=QUANTILE_VERSION))).predictions
    for name in ("predicted_bandwidth_mbps", "predicted_bandwidth_p10_mbps", "predicted_bandwidth_p90_mbps",
                 "confidence"):
        assert got[name] == [getattr(p, name) for p in want], name
    assert got["confidence"] == [_coverage(quantile_repo)] * 3


def test_evaluate_checks_the_served_interval_live_beside_the_stated_figures(quantile_repo, tmp_path):
    held_out = write_traces(tmp_path / "other", 7, 2)
    done = subprocess.run([*CLI, "evaluate", "bandwidth", "--repository", str(quantile_repo), "--version",
                           QUANTILE_VERSION, "--data", str(held_out), "--format", "mahimahi", "--all", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    rows, scored = result["interval"]["rows"], result["rows"]["mlp (ours)"]
    assert rows["inside [p10, p90] %"]["stated"] == pytest.approx(_coverage(quantile_repo) * 100)
    assert rows["inside [p10, p90] %"]["live"] == pytest.approx(scored["inside_p10_p90_pct"])  # the served interval
    assert rows["below p10 %"]["live"] == pytest.approx(scored["below_p10_pct"])
    meta = metadata.read(quantile_repo / "bandwidth_predictor" / QUANTILE_VERSION)
    assert rows["below p10 %"]["stated"] == pytest.approx(meta.metrics["validation"]["mlp (ours)"]["below_p10_pct"])
    text = subprocess.run([*CLI, "evaluate", "bandwidth", "--repository", str(quantile_repo), "--version",
                           QUANTILE_VERSION, "--data", str(held_out), "--format", "mahimahi", "--all"],
                          capture_output=True, text=True, timeout=300).stdout
    assert "the served interval, live" in text and "inside [p10, p90] %" in text


def test_evaluate_all_refuses_the_other_direction_of_a_trained_drive(quantile_repo, tmp_path):
    """NAME.up and NAME.down are one drive, recorded together: with trace-0-0.up trained on, its .down is not data
    the version never saw (training validates on whole drives for the same reason); another drive is."""
    unseen = write_traces(tmp_path / "unseen", 5, 1)  # trace-5-0.up
    (unseen / "trace-5-0.up").rename(unseen / "other-drive.down")
    sibling = write_traces(tmp_path / "sibling", 6, 1)
    (sibling / "trace-6-0.up").rename(sibling / "trace-0-0.down")

    def evaluate(data: Path) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, "evaluate", "bandwidth", "--repository", str(quantile_repo), "--version",
                               QUANTILE_VERSION, "--data", str(data), "--format", "mahimahi", "--all"],
                              capture_output=True, text=True, timeout=300)

    refused, scored = evaluate(sibling), evaluate(unseen)
    assert refused.returncode == 2 and "share a drive with one that was" in refused.stderr, refused.stderr
    assert "trace-0-0.down" in refused.stderr and "Traceback" not in refused.stderr
    assert scored.returncode == 0, scored.stderr[-2000:]
