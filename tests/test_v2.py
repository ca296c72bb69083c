"""The Open Inference Protocol (V2) beside the typed API (docs/v2.md): the real clients people use (tritonclient,
KServe's InferenceGRPCClient) against a real server, typed and V2 answers identical for every bundled test vector,
errors naming the V2 input and index, TLS, and the HTTP health endpoints on the metrics port.

The clients run from `.venv-v2clients` (`make setup` makes it): they need protobuf < 7 and clash with each other
in one process (tests/v2_clients.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import trustme

from dwcp_inference.api import grpc_predict_v2_pb2 as v2
from dwcp_inference.api import grpc_predict_v2_pb2_grpc as v2_grpc
from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc
from dwcp_inference import metadata
from dwcp_inference.services.settings import bundled_models

from .conftest import start_server
from .test_hardening import _write_server_cert

ROOT = Path(__file__).resolve().parents[1]
CLIENTS_PYTHON = ROOT / ".venv-v2clients" / "bin" / "python"
MODELS = ("bandwidth_predictor", "compression_selector", "reliability_detector", "consensus_latency")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("v2") / "models"
    shutil.copytree(bundled_models(), path)
    return path


@pytest.fixture(scope="module")
def running(repo):
    server = start_server(repo)
    yield server
    server.stop(0)


@pytest.fixture(scope="module")
def stubs(running):
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        yield v2_grpc.GRPCInferenceServiceStub(ch), pb_grpc.InferenceServiceStub(ch)


def run_client(kind: str, target: str, ca: Path | None = None) -> dict:
    assert CLIENTS_PYTHON.exists(), f"{CLIENTS_PYTHON} is missing: `make setup` makes it (requirements/v2clients.txt)"
    args = [str(CLIENTS_PYTHON), str(ROOT / "tests" / "v2_clients.py"), kind, target] + ([str(ca)] if ca else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


# ------------------------------------------------------------------ the real clients

def _check_client_answers(result: dict, repo: Path) -> None:
    assert result["live"] is True and result["ready"] is True
    assert result["models_ready"] == {m: True for m in MODELS}
    for m in MODELS:
        md = result["metadata"][m]
        meta = metadata.read(repo / m / "1")
        assert md["name"] == m and md["versions"] == ["1"] and md["platform"] == "onnxruntime_onnx"
        names = [t["name"] for t in md["inputs"]]
        raw_names = [f.name for f in meta.raw_fields]  # every raw field the version reads, in its declared order
        assert [n for n in names if n in raw_names] == raw_names
        outs = result["outputs"][m]
        assert outs["model_version"] == "1"
        assert all(v["shape"][0] == 2 for k, v in outs.items() if k != "model_version")
    b = result["outputs"]["bandwidth_predictor"]
    assert 0 < b["predicted_bandwidth_mbps"]["values"][0] and 0 <= b["confidence"]["values"][0] <= 1
    c = result["outputs"]["compression_selector"]
    assert c["codec"]["values"][0] in {"none", "lz4", "zstd"} and c["scores"]["shape"] == [2, 6]
    assert c["codec"]["values"] == c["scores_codec"]["values"][0::6]
    a = result["outputs"]["reliability_detector"]
    assert a["is_anomaly"]["values"] == [False, True]  # error_rate 0.004, then 0.2
    assert a["contribution_feature"]["values"][3] == "error_rate"
    lat = result["outputs"]["consensus_latency"]
    assert lat["is_high_latency"]["values"] == [False, False] and lat["feature_errors"]["shape"][0] == 2
    wrong = result["wrong_shape"]
    assert wrong is not None and wrong["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "input 'latency_ms': shape [2, 20]" in wrong["message"] and "'bandwidth_mbps'" in wrong["message"]


@pytest.mark.parametrize("kind", ["triton", "kserve"])
def test_real_clients_ready_metadata_infer_and_wrong_shape(kind, running, repo):
    """tritonclient[grpc] sends raw_input_contents, KServe's client `contents`: both get every model's answer."""
    _check_client_answers(run_client(kind, f"127.0.0.1:{running.port}"), repo)


def test_real_client_over_tls(tmp_path, repo):
    ca = trustme.CA()
    chain, key = _write_server_cert(ca, tmp_path)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    server = start_server(repo, tls_cert=chain, tls_key=key)
    try:
        _check_client_answers(run_client("triton", f"localhost:{server.port}", ca_file), repo)
        # and plaintext is refused on the same port
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            with pytest.raises(grpc.RpcError) as e:
                v2_grpc.GRPCInferenceServiceStub(ch).ServerLive(v2.ServerLiveRequest(), timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)


# ------------------------------------------------------------------ parity with the typed API

def _tensor(req: v2.ModelInferRequest, name: str, values, datatype: str) -> None:
    a = np.asarray(values, dtype=object if datatype == "BYTES" else None)
    t = req.inputs.add(name=name, datatype=datatype, shape=a.shape)
    flat = a.reshape(-1).tolist()
    if datatype == "BYTES":
        t.contents.bytes_contents.extend(v.encode() for v in flat)
    elif datatype == "INT32":
        t.contents.int_contents.extend(int(v) for v in flat)
    elif datatype == "INT64":
        t.contents.int64_contents.extend(int(v) for v in flat)
    else:
        t.contents.fp64_contents.extend(float(v) for v in flat)


CONTENTS = {"FP64": "fp64_contents", "INT32": "int_contents", "BOOL": "bool_contents", "BYTES": "bytes_contents"}


def _outputs(resp: v2.ModelInferResponse) -> dict:
    """Output tensors by name, from their contents or raw_output_contents (decoded independently of the server's
    encoder)."""
    if not resp.raw_output_contents:
        return {o.name: np.array([v.decode() if isinstance(v, bytes) else v
                                  for v in getattr(o.contents, CONTENTS[o.datatype])],
                                 dtype=object).reshape(list(o.shape)).tolist() for o in resp.outputs}
    out = {}
    for o, raw in zip(resp.outputs, resp.raw_output_contents):
        if o.datatype == "BYTES":
            items, at = [], 0
            while at < len(raw):
                n = int.from_bytes(raw[at:at + 4], "little")
                items.append(raw[at + 4:at + 4 + n].decode())
                at += 4 + n
            a = np.array(items, dtype=object)
        else:
            a = np.frombuffer(raw, dtype={"FP64": "<f8", "INT32": "<i4", "BOOL": "?"}[o.datatype])
        out[o.name] = a.reshape(list(o.shape)).tolist()
    return out


def _vectors(repo: Path, model: str) -> list[dict]:
    return [v["raw"] for v in metadata.read(repo / model / "1").test_vectors]


def _as_int(raw: dict, names) -> dict:
    return {k: (np.asarray(v).astype(np.int64).tolist() if k in names else v) for k, v in raw.items()}


def test_parity_bandwidth(stubs, repo):
    v2_stub, typed = stubs
    raws = [_as_int(r, ("time_of_day", "day_of_week")) for r in _vectors(repo, "bandwidth_predictor")]
    want = typed.PredictBandwidthBatch(pb.PredictBandwidthBatchRequest(histories=[pb.LinkHistory(samples=[
        pb.NetworkSample(**{f: r[f][j] for f in r}) for j in range(len(r["bandwidth_mbps"]))]) for r in raws]))
    req = v2.ModelInferRequest(model_name="bandwidth_predictor", id="parity")
    for f in raws[0]:
        _tensor(req, f, [r[f] for r in raws], "INT32" if f in ("time_of_day", "day_of_week") else "FP64")
    resp = v2_stub.ModelInfer(req)
    got = _outputs(resp)
    assert resp.id == "parity" and resp.model_version == want.model.version == "1"
    for name in ("predicted_bandwidth_mbps", "predicted_latency_ms", "predicted_packet_loss", "predicted_jitter_ms",
                 "confidence"):
        assert got[name] == [getattr(p, name) for p in want.predictions], name
    assert len(set(got["prediction_id"])) == len(raws)


def test_parity_compression(stubs, repo):
    v2_stub, typed = stubs
    raws = _vectors(repo, "compression_selector")
    want = typed.SelectCompressionBatch(pb.SelectCompressionBatchRequest(queries=[pb.CompressionQuery(
        link=pb.LinkState(throughput_mbps=r["throughput_mbps"], rtt_ms=r["rtt_ms"], packet_loss=r["packet_loss"],
                          link_type=pb.LinkType.Value("LINK_TYPE_" + r["link_type"].upper())),
        payload=pb.PayloadTraits(size_bytes=int(r["size_bytes"]), entropy_bits_per_byte=r["payload_entropy"],
                                 recent_compression_ratio=r["payload_ratio"])) for r in raws]))
    req = v2.ModelInferRequest(model_name="compression_selector")
    for f, dt in (("throughput_mbps", "FP64"), ("rtt_ms", "FP64"), ("packet_loss", "FP64"), ("link_type", "BYTES"),
                  ("size_bytes", "INT64"), ("payload_entropy", "FP64"), ("payload_ratio", "FP64")):
        _tensor(req, f, [r[f] for r in raws], dt)
    got = _outputs(v2_stub.ModelInfer(req))
    codec = {v: k[len("CODEC_"):].lower() for k, v in pb.Codec.items()}
    assert got["codec"] == [codec[d.choice.codec] for d in want.decisions]
    assert got["level"] == [d.choice.level for d in want.decisions]
    assert got["scores"] == [[s.score for s in d.scores] for d in want.decisions]
    assert got["scores_codec"] == [[codec[s.codec] for s in d.scores] for d in want.decisions]
    assert got["scores_level"] == [[s.level for s in d.scores] for d in want.decisions]


def test_parity_anomaly(stubs, repo):
    v2_stub, typed = stubs
    raws = _vectors(repo, "reliability_detector")
    want = typed.DetectAnomalyBatch(pb.DetectAnomalyBatchRequest(metrics=[pb.NodeMetrics(**r) for r in raws]))
    req = v2.ModelInferRequest(model_name="reliability_detector")
    for f in raws[0]:
        _tensor(req, f, [r[f] for r in raws], "FP64")
    got = _outputs(v2_stub.ModelInfer(req))
    v = want.verdicts
    assert got["is_anomaly"] == [x.is_anomaly for x in v] and got["score"] == [x.score for x in v]
    assert got["threshold"] == [x.threshold for x in v]
    assert got["severity"] == [pb.Severity.Name(x.severity)[len("SEVERITY_"):].lower() for x in v]
    assert got["contribution_feature"] == [[c.feature for c in x.contributions] for x in v]
    assert got["contribution_deviation"] == [[c.deviation for c in x.contributions] for x in v]
    assert got["contribution_value"] == [[c.value for c in x.contributions] for x in v]


def test_parity_latency(stubs, repo):
    v2_stub, typed = stubs
    raws = _vectors(repo, "consensus_latency")
    want = typed.DetectHighLatencyBatch(pb.DetectHighLatencyBatchRequest(windows=[pb.ConsensusWindow(samples=[
        pb.ConsensusSample(**{f: r[f][j] for f in r}) for j in range(len(r["queue_depth"]))]) for r in raws]))
    req = v2.ModelInferRequest(model_name="consensus_latency")
    for f in raws[0]:
        _tensor(req, f, [r[f] for r in raws], "BYTES" if isinstance(raws[0][f][0], str) else "FP64")
    got = _outputs(v2_stub.ModelInfer(req))
    v = want.verdicts
    assert got["is_high_latency"] == [x.is_high_latency for x in v]
    assert got["reconstruction_error"] == [x.reconstruction_error for x in v]
    assert got["feature_error_names"] == [[e.feature for e in x.feature_errors] for x in v]
    assert got["feature_errors"] == [[e.error for e in x.feature_errors] for x in v]


# ------------------------------------------------------------------ errors, versions, labels

def _bandwidth_request(batch: int = 2, samples: int = 24) -> v2.ModelInferRequest:
    req = v2.ModelInferRequest(model_name="bandwidth_predictor")
    for f, value in (("bandwidth_mbps", 500.0), ("latency_ms", 20.0), ("packet_loss", 0.001), ("jitter_ms", 2.0),
                     ("time_of_day", 10), ("day_of_week", 2)):
        _tensor(req, f, np.full((batch, samples), value), "INT32" if isinstance(value, int) else "FP64")
    return req


def _error(stub, req) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(req)
    return e.value.code(), e.value.details()


def test_bad_values_name_the_input_and_index(stubs):
    v2_stub, typed = stubs
    req = _bandwidth_request()
    req.inputs[0].contents.fp64_contents[24 + 7] = -5  # item 1, sample 7
    assert _error(v2_stub, req) == (grpc.StatusCode.INVALID_ARGUMENT,
                                    "input 'bandwidth_mbps'[1, 7]: expected >= 0, got -5")
    short = _bandwidth_request(samples=10)
    code, msg = _error(v2_stub, short)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert msg == "input 'bandwidth_mbps'[0]: expected at least 24 samples (the model's window), got 10"
    missing = _bandwidth_request()
    del missing.inputs[1]
    assert _error(v2_stub, missing) == (grpc.StatusCode.INVALID_ARGUMENT,
                                        "input 'latency_ms': missing (bandwidth_predictor v1 reads it)")
    flat = _bandwidth_request()
    flat.inputs[2].shape[:] = [48]
    assert _error(v2_stub, flat) == (grpc.StatusCode.INVALID_ARGUMENT,
                                     "input 'packet_loss': expected shape [B, T], got [48]")
    query = v2.ModelInferRequest(model_name="compression_selector")
    for f, value, dt in (("throughput_mbps", [100.0, 100.0], "FP64"), ("rtt_ms", [40.0, 40.0], "FP64"),
                         ("packet_loss", [0.001, 0.001], "FP64"), ("link_type", ["wan", "moon"], "BYTES"),
                         ("size_bytes", [4096, 4096], "INT64")):
        _tensor(query, f, value, dt)
    code, msg = _error(v2_stub, query)
    assert (code, msg) == (grpc.StatusCode.INVALID_ARGUMENT,
                           "input 'link_type'[1]: expected one of ['dc', 'metro', 'wan', 'edge'], got 'moon'")
    query.inputs[3].contents.bytes_contents[1] = b"dc"
    code, msg = _error(v2_stub, query)
    assert msg == "input 'payload_sample'[0]: expected a sample, or both payload_entropy and payload_ratio"
    # the server keeps serving
    assert typed.PredictBandwidth(pb.PredictBandwidthRequest(history=pb.LinkHistory(samples=[
        pb.NetworkSample(bandwidth_mbps=500, latency_ms=20, time_of_day=1)] * 24))).model.version == "1"


def test_raw_contents_versions_labels_and_requested_outputs(stubs):
    v2_stub, _ = stubs
    req = _bandwidth_request(batch=3)
    raw = v2.ModelInferRequest(model_name="bandwidth_predictor", model_version="1")
    for t in req.inputs:  # the same tensors as raw_input_contents
        values = t.contents.int_contents if t.datatype == "INT32" else t.contents.fp64_contents
        raw.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        raw.raw_input_contents.append(np.asarray(values, "<i4" if t.datatype == "INT32" else "<f8").tobytes())
    raw.outputs.add(name="confidence")
    raw.outputs.add(name="predicted_bandwidth_mbps")
    got = v2_stub.ModelInfer(raw)
    assert [o.name for o in got.outputs] == ["confidence", "predicted_bandwidth_mbps"]
    assert len(got.raw_output_contents) == 2 and not got.outputs[0].HasField("contents")  # answered as asked
    assert _outputs(got)["predicted_bandwidth_mbps"] == _outputs(v2_stub.ModelInfer(req))["predicted_bandwidth_mbps"]
    raw.model_version = "7"
    code, msg = _error(v2_stub, raw)
    assert code == grpc.StatusCode.NOT_FOUND and msg.startswith("model_version: bandwidth_predictor has no loaded")
    raw.model_version = ""
    raw.parameters["label"].string_param = "canary"
    code, msg = _error(v2_stub, raw)
    assert code == grpc.StatusCode.NOT_FOUND and msg.startswith("parameters['label']: bandwidth_predictor has no label")
    del raw.parameters["label"]
    raw.outputs.add(name="nope")
    code, msg = _error(v2_stub, raw)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and msg.startswith("outputs[2]: 'nope' is not an output")
    del raw.outputs[:]
    raw.raw_input_contents[0] = raw.raw_input_contents[0][:-8]
    assert _error(v2_stub, raw) == (grpc.StatusCode.INVALID_ARGUMENT,
                                    "input 'bandwidth_mbps': shape [3, 24] holds 72 elements, got 71")
    assert _error(v2_stub, v2.ModelInferRequest(model_name="nope"))[0] == grpc.StatusCode.NOT_FOUND


# ------------------------------------------------------------------ health, gRPC and HTTP

def _http(url: str) -> int:
    return _http_answer(url)[0]


def _http_answer(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_health_follows_the_models(tmp_path):
    repo = tmp_path / "models"
    shutil.copytree(bundled_models(), repo)
    shutil.rmtree(repo / "consensus_latency" / "1")  # held by the repository, no version: not ready
    server = start_server(repo)
    try:
        base = f"http://127.0.0.1:{server.metrics_port}"
        assert _http(f"{base}/v2/health/live") == 200
        assert _http(f"{base}/v2/health/ready") == 503
        assert _http(f"{base}/v2/models/bandwidth_predictor/ready") == 200
        assert _http(f"{base}/v2/models/consensus_latency/ready") == 503
        assert _http(f"{base}/v2/models/nope/ready") == 503
        assert _http(f"{base}/metrics") == 200
        assert _http(f"{base}/v2/models/bandwidth_predictor/versions/1/ready") == 200
        code, body = _http_answer(f"{base}/v2/models/bandwidth_predictor/versions/2/ready")
        assert code == 404 and body == "unknown version '2' of model bandwidth_predictor (loaded: 1)\n"
        code, body = _http_answer(f"{base}/v2/models/consensus_latency/versions/1/ready")
        assert code == 404 and "unknown version '1'" in body and "(loaded: none)" in body
        code, body = _http_answer(f"{base}/v2/models/nope/versions/1/ready")
        assert code == 404 and body.startswith("unknown model 'nope'")
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = v2_grpc.GRPCInferenceServiceStub(ch)
            assert stub.ServerLive(v2.ServerLiveRequest()).live
            assert not stub.ServerReady(v2.ServerReadyRequest()).ready
            assert stub.ModelReady(v2.ModelReadyRequest(name="bandwidth_predictor")).ready
            assert stub.ModelReady(v2.ModelReadyRequest(name="bandwidth_predictor", version="1")).ready
            assert not stub.ModelReady(v2.ModelReadyRequest(name="bandwidth_predictor", version="2")).ready
            assert not stub.ModelReady(v2.ModelReadyRequest(name="consensus_latency")).ready
            with pytest.raises(grpc.RpcError) as e:
                stub.ModelMetadata(v2.ModelMetadataRequest(name="consensus_latency"))
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            md = stub.ServerMetadata(v2.ServerMetadataRequest())
            assert md.name == "dwcp-inference" and md.version
    finally:
        server.stop(0)


@pytest.mark.parametrize("case", ["PredictBandwidth", "SelectCompression/sample", "SelectCompression/traits",
                                  "DetectAnomaly", "DetectHighLatency"])
def test_the_bench_v2_row_sends_the_typed_rows_items(stubs, case):
    """`dwcp-inference bench`'s dwcp-v2 row (bench/requests.py v2_request) carries the typed row's items: same
    answers, batch of one and batch of three."""
    from google.protobuf.json_format import ParseDict

    from dwcp_inference.bench.requests import BATCH_FORMS, method, request, v2_request

    v2_stub, typed = stubs
    first = {"PredictBandwidth": ("predicted_bandwidth_mbps", lambda r: [p.predicted_bandwidth_mbps
                                                                         for p in r.predictions]),
             "SelectCompression": ("score", lambda r: [d.choice.score for d in r.decisions]),
             "DetectAnomaly": ("score", lambda r: [v.score for v in r.verdicts]),
             "DetectHighLatency": ("reconstruction_error", lambda r: [v.reconstruction_error for v in r.verdicts])}
    name, typed_values = first[method(case)]
    for batch in (1, 3):
        got = _outputs(v2_stub.ModelInfer(ParseDict(v2_request(case, batch), v2.ModelInferRequest())))
        typed_request = request(case, 3) if batch == 3 else request(case, 1)
        if batch == 1:  # the single form's answer, as its batch form would hold it
            single = getattr(typed, method(case))(typed_request)
            want = typed_values(type("R", (), {"predictions": [getattr(single, "prediction", None)],
                                               "decisions": [getattr(single, "decision", None)],
                                               "verdicts": [getattr(single, "verdict", None)]})())
        else:
            want = typed_values(getattr(typed, BATCH_FORMS[method(case)])(typed_request))
        assert got[name] == want


# ------------------------------------------------------------------ the clients' lock file

FAKE_PYTHON = r'''#!/bin/sh
# `python -m venv DIR`: a venv whose pip logs what it is asked to install and freezes a fixed list.
dir=$3; mkdir -p "$dir/bin"
cat > "$dir/bin/pip" <<'PIP'
#!/bin/sh
case $1 in
  install) echo "$*" >> "$PIP_LOG" ;;
  freeze) printf 'tritonclient==9.9\nKserve==1.0\naiohttp==3.0\n' ;;
esac
PIP
chmod +x "$dir/bin/pip"
'''


def test_lock_sh_refreshes_the_v2_clients_lock_alone(tmp_path):
    """scripts/lock.sh v2clients installs the clients make's .venv-v2clients installs into a fresh venv and writes
    its freeze, sorted, under the header; a name it does not know writes nothing (a stand-in python: no index)."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "requirements").mkdir()
    shutil.copy(ROOT / "scripts" / "lock.sh", tmp_path / "scripts" / "lock.sh")
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    env = {**os.environ, "PIP_LOG": str(tmp_path / "pip.log")}
    done = subprocess.run([str(tmp_path / "scripts" / "lock.sh"), str(python), "v2clients"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    installed = (tmp_path / "pip.log").read_text().splitlines()
    assert installed == ["install --quiet --upgrade pip", "install --quiet tritonclient[grpc] kserve"]
    assert "'tritonclient[grpc]' kserve" in (ROOT / "Makefile").read_text()  # what make's venv installs
    assert [p.name for p in (tmp_path / "requirements").iterdir()] == ["v2clients.txt"]
    lines = (tmp_path / "requirements" / "v2clients.txt").read_text().splitlines()
    assert lines[0].startswith("# Generated by scripts/lock.sh") and "tritonclient[grpc] and kserve" in lines[0]
    assert lines[1:] == ["aiohttp==3.0", "Kserve==1.0", "tritonclient==9.9"]

    done = subprocess.run([str(tmp_path / "scripts" / "lock.sh"), str(python), "v2client"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 2 and "unknown lock file 'v2client'" in done.stderr
