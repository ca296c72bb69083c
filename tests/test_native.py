"""The native request decoder (native/, services/decode.py) against the python one: the same answers and the same
messages, byte for byte, through two real servers (valid requests, the fuzz corpus, mutated bytes), and the
extension never failing on hostile bytes."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.request

import grpc
import numpy as np
import pytest
from google.protobuf.message import DecodeError, Message

from dwcp_inference import fuzz
from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.services import decode
from dwcp_inference.services.settings import bundled_models

from .conftest import start_server
from .samples import compression_query, consensus_window, link_history, node_metrics

SERVICE = "/dwcp.inference.v1.InferenceService/"
SINGLE_AND_BATCH = ("PredictBandwidth", "PredictBandwidthBatch", "SelectCompression", "SelectCompressionBatch",
                    "DetectAnomaly", "DetectAnomalyBatch", "DetectHighLatency", "DetectHighLatencyBatch")


@pytest.fixture(scope="module")
def native():
    module = decode.native_module()
    if module is None:
        if shutil.which("cargo") is None:
            pytest.skip("no cargo on this machine: the native decoder cannot be built (pip install ./native)")
        pytest.fail("dwcp_inference_native is not installed: `make setup` builds it (pip install ./native)")
    return module


@pytest.fixture(scope="module")
def servers(native, tmp_path_factory):
    """The same repository served twice: by the native decoder and by the python one."""
    repo = tmp_path_factory.mktemp("native") / "repo"
    shutil.copytree(bundled_models(), repo)
    running = {name: start_server(repo, decoder=name, admin_port=-1, poll_seconds=0) for name in ("native", "python")}
    channels = {name: grpc.insecure_channel(f"127.0.0.1:{r.port}", options=[("grpc.max_send_message_length", 64 << 20)])
                for name, r in running.items()}
    yield running, channels
    for name in running:
        channels[name].close()
        running[name].stop(0)


def _normalized(response: bytes, rpc: str) -> bytes:
    """The answer without what differs between two servers by design: prediction ids and the time answered."""
    message = getattr(pb, rpc + "Response").FromString(response)

    def clear(m) -> None:
        for field, value in m.ListFields():
            if field.name in ("prediction_id", "prediction_time"):
                m.ClearField(field.name)
            elif field.message_type is not None:
                for item in ([value] if isinstance(value, Message) else value):
                    clear(item)

    clear(message)
    return message.SerializeToString(deterministic=True)


def _answer(channel: grpc.Channel, rpc: str, data: bytes) -> tuple:
    call = channel.unary_unary(SERVICE + rpc, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        return "OK", _normalized(call(data, timeout=30), rpc)
    except grpc.RpcError as e:
        return e.code().name, e.details()


def _compare(servers, cases: list[tuple[str, bytes]]) -> dict[str, int]:
    """Each (rpc, bytes) through both servers: the answers must be identical. Returns the count of each status."""
    _, channels = servers
    codes: dict[str, int] = {}
    for rpc, data in cases:
        native, python = _answer(channels["native"], rpc, data), _answer(channels["python"], rpc, data)
        assert native == python, f"{rpc} {data[:80].hex()}...: native {native!r} != python {python!r}"
        codes[native[0]] = codes.get(native[0], 0) + 1
    return codes


def _stamped(history: pb.LinkHistory, seconds: int) -> pb.LinkHistory:
    for i, s in enumerate(history.samples):
        s.timestamp.seconds, s.timestamp.nanos = seconds + 60 * i, 123_456_789
    return history


def valid_requests(rng: random.Random) -> list[tuple[str, bytes]]:
    """Every inference RPC, single and batch, with the shapes callers send: histories longer than the window, of
    different lengths in one batch, payload samples and precomputed traits, histories beside anomaly metrics, string
    categories, custom metrics, model selectors."""
    out = []
    for n in (24, 30, 200):
        out.append(("PredictBandwidth", pb.PredictBandwidthRequest(history=_stamped(link_history(n), 1_700_000_000 + n))))
    out.append(("PredictBandwidth", pb.PredictBandwidthRequest(history=link_history(24), model=pb.ModelSelector(
        version="1"))))
    out.append(("PredictBandwidthBatch", pb.PredictBandwidthBatchRequest(histories=[
        _stamped(link_history(24 + k, bandwidth=100 + 50 * k), 1_700_000_000) for k in range(64)])))
    for link_type in (pb.LINK_TYPE_DC, pb.LINK_TYPE_WAN, pb.LINK_TYPE_EDGE):
        link, payload = compression_query(link_type, sample=bytes(rng.randrange(256) for _ in range(4096)))
        out.append(("SelectCompression", pb.SelectCompressionRequest(link=link, payload=payload)))
    link, _ = compression_query()
    traits = pb.PayloadTraits(size_bytes=1 << 16, entropy_bits_per_byte=5.5, recent_compression_ratio=1.7)
    out.append(("SelectCompression", pb.SelectCompressionRequest(link=link, payload=traits)))
    out.append(("SelectCompressionBatch", pb.SelectCompressionBatchRequest(queries=[
        pb.CompressionQuery(link=compression_query(1 + k % 4)[0],
                            payload=traits if k % 2 else compression_query(sample=rng.randbytes(64 * (k + 1)))[1])
        for k in range(16)])))
    out.append(("DetectAnomaly", pb.DetectAnomalyRequest(metrics=node_metrics(0.2, 0.9))))
    out.append(("DetectAnomaly", pb.DetectAnomalyRequest(metrics=node_metrics(), history=pb.NodeHistory(
        samples=[node_metrics()] * 5))))
    custom = node_metrics()
    custom.custom["queue_ms"] = 4.5  # a custom map: the python path in both (decode.py)
    out.append(("DetectAnomaly", pb.DetectAnomalyRequest(metrics=custom)))
    out.append(("DetectAnomalyBatch", pb.DetectAnomalyBatchRequest(
        metrics=[node_metrics(rng.random() * 0.3, rng.random()) for _ in range(64)])))
    out.append(("DetectHighLatency", pb.DetectHighLatencyRequest(window=consensus_window(20))))
    out.append(("DetectHighLatency", pb.DetectHighLatencyRequest(window=consensus_window(50, p99=400))))
    mixed = consensus_window(20)
    for k, s in enumerate(mixed.samples):
        s.network_tier, s.dwcp_mode = ("tier1", "tier2", "tier3")[k % 3], ("datacenter", "internet", "hybrid")[k % 3]
    out.append(("DetectHighLatency", pb.DetectHighLatencyRequest(window=mixed)))
    out.append(("DetectHighLatencyBatch", pb.DetectHighLatencyBatchRequest(
        windows=[consensus_window(20 + k, p99=10 + 20 * k) for k in range(16)])))
    return [(rpc, m.SerializeToString()) for rpc, m in out]


def _mutated(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(5)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:
            at = rng.randrange(len(b))
            del b[at:at + rng.randrange(1, 8)]
        elif op == 2:
            at = rng.randrange(len(b) + 1)
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
        elif op == 3 and b:
            b = b[:rng.randrange(len(b))]
        else:  # a tag byte with another wire type: known fields sent as the wrong kind
            at = rng.randrange(len(b) + 1)
            b[at:at] = bytes([(rng.randrange(1, 15) << 3) | rng.choice((0, 1, 2, 3, 4, 5, 6, 7)), rng.randrange(128)])
    return bytes(b)


# ------------------------------------------------------------------ the choice of decoder

def test_auto_falls_back_to_python_when_the_extension_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, decode.NATIVE_MODULE, None)  # `import` raises ImportError
    chosen = decode.choose("auto")
    assert chosen.name == "python" and "not installed" in chosen.reason
    with pytest.raises(ValueError, match="--decoder native: the extension dwcp_inference_native is not installed"):
        decode.choose("native")
    with pytest.raises(ValueError, match=r"--decoder: expected one of \['auto', 'native', 'python'\], got 'rust'"):
        decode.choose("rust")


def test_serve_refuses_decoder_native_without_the_extension(tmp_path):
    """A configuration error in one line (exit 2), not a worker that dies at start."""
    (tmp_path / f"{decode.NATIVE_MODULE}.py").write_text('raise ImportError("not built here")\n')
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "DWCP_INFERENCE_DECODER": "native"}
    proc = subprocess.run([sys.executable, "-m", "dwcp_inference.cli", "serve", "--port", "0", "--metrics-port", "-1",
                           "--admin-port", "-1"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert ("--decoder native: the extension dwcp_inference_native is not installed (pip install ./native needs "
            "cargo) (DWCP_INFERENCE_DECODER)") in proc.stderr


def test_the_decoder_is_named_in_the_start_log_and_a_gauge(native, caplog):
    for name in ("native", "python"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="dwcp_inference.services.server"):
            running = start_server(bundled_models(), decoder=name, admin_port=-1, poll_seconds=0)
        try:
            assert f"; {name} decoder, chosen), models: " in caplog.text
            scrape = urllib.request.urlopen(f"http://127.0.0.1:{running.metrics_port}/metrics", timeout=10).read()
            assert f'dwcp_inference_decoder_info{{decoder="{name}"}} 1.0' in scrape.decode()
        finally:
            running.stop(0)
    assert decode.choose("auto").name == "native"


# ------------------------------------------------------------------ the same answers through two real servers

def test_valid_requests_get_identical_answers(servers):
    cases = valid_requests(random.Random(0))
    assert {rpc for rpc, _ in cases} == set(SINGLE_AND_BATCH)
    assert _compare(servers, cases) == {"OK": len(cases)}


def test_the_fuzz_corpus_gets_identical_answers(servers):
    """`dwcp-inference fuzz`'s bad requests, the same seeds driving both servers."""
    codes: dict[str, int] = {}
    for seed in range(12):
        rng = random.Random(seed)
        cases = []
        for generate in fuzz.cases(rng, 1024, 1024):
            _, rpc, request, _, _ = generate()
            cases.append((rpc, request if isinstance(request, bytes) else request.SerializeToString()))
        for rpc, n in _compare(servers, cases).items():
            codes[rpc] = codes.get(rpc, 0) + n
    assert codes.get("INVALID_ARGUMENT", 0) > 100 and codes.get("NOT_FOUND", 0) > 10


def test_mutated_requests_get_identical_answers(servers):
    """Valid requests with bytes changed, cut, inserted or retagged: errors found while decoding (not a message,
    wrong wire types, bad UTF-8) and values made invalid get the same status and message from both decoders."""
    rng = random.Random(17)
    valid = valid_requests(rng)
    cases = [(rpc, _mutated(rng, data)) for _ in range(25) for rpc, data in valid]
    codes = _compare(servers, cases)
    assert codes.get("INVALID_ARGUMENT", 0) > 50 and codes.get("OK", 0) > 10


# ------------------------------------------------------------------ the extension on hostile bytes, in process

def _same(a, b) -> bool:
    if dataclasses.is_dataclass(a):
        return type(a) is type(b) and all(_same(getattr(a, f.name), getattr(b, f.name))
                                          for f in dataclasses.fields(a))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_the_extension_never_fails_on_hostile_bytes_and_agrees_with_protobuf(native):
    """20,000 inputs (random bytes, mutated valid requests, valid ones) against each native function, bounded in
    time: it answers columns or None, never raises; what it decodes, the protobuf runtime parses to the same
    columns (what it refuses goes to the runtime by design)."""
    rng = random.Random(2026)
    valid = {cls: [] for cls in decode.NATIVE}
    for rpc, data in valid_requests(rng):
        valid[getattr(pb, rpc + "Request")].append(data)
    counts = {"decoded": 0, "refused, protobuf parses": 0, "refused, not a message": 0}
    deadline = time.monotonic() + 240
    inputs = 0
    while inputs < 20_000 and time.monotonic() < deadline:
        cls = rng.choice(list(decode.NATIVE))
        function, build = decode.NATIVE[cls]
        kind = inputs % 3
        if kind == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 96)))
        else:
            data = rng.choice(valid[cls])
            data = _mutated(rng, data) if kind == 1 else data
        inputs += 1
        out = getattr(native, function)(data)
        try:
            message = cls.FromString(data)
        except DecodeError:
            message = None
        if out is None:
            counts["refused, protobuf parses" if message is not None else "refused, not a message"] += 1
            continue
        counts["decoded"] += 1
        assert message is not None, f"{cls.__name__}: native decodes what protobuf refuses: {data.hex()}"
        assert _same(build(out), decode.from_message(message)), f"{cls.__name__}: columns differ: {data.hex()}"
    assert inputs == 20_000, f"only {inputs} inputs in the time bound"
    assert min(counts.values()) > 50, counts
