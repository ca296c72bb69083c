"""The native request decoder (native/, services/decode.py) against the python one: the same answers and the same
messages, byte for byte, through two real servers (valid requests, the fuzz corpus, mutated bytes), and the
extension never failing on hostile bytes."""

from __future__ import annotations

import dataclasses
import hashlib
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

from dwcp_inference.commands import fuzz
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
    """The same repository served twice: by the native decoder behind the native front, and by the python decoder
    on the grpc.aio transport (both differences judged at once: answers and messages must be byte-identical)."""
    repo = tmp_path_factory.mktemp("native") / "repo"
    shutil.copytree(bundled_models(), repo)
    running = {name: start_server(repo, decoder=name, front=front, admin_port=-1, poll_seconds=0)
               for name, front in (("native", "native"), ("python", "grpcio"))}
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
    proc = subprocess.run([sys.executable, "-m", "dwcp_inference.commands.cli", "serve", "--port", "0",
                           "--metrics-port", "-1", "--admin-port", "-1"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert ("--decoder native: the extension dwcp_inference_native is not installed (pip install ./native needs "
            "cargo) (DWCP_INFERENCE_DECODER)") in proc.stderr


def test_the_decoder_is_named_in_the_start_log_and_a_gauge(native, caplog):
    for name in ("native", "python"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="dwcp_inference.services.server"):
            running = start_server(bundled_models(), decoder=name, admin_port=-1, poll_seconds=0)
        try:
            assert f"; {name} decoder, chosen; " in caplog.text
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


# ------------------------------------------------------------------ responses: native bytes against python messages

NOW = 1_764_570_123.456789  # one answer time for both paths (the servicer reads convert.now)


@pytest.fixture(scope="module")
def inference(native):
    """An in-process servicer on the bundled models, and each path's deserializer of each request type."""
    from dwcp_inference.services.metrics import Metrics
    from dwcp_inference.services.outcomes import OutcomeTracker
    from dwcp_inference.services.repository import Repository
    from dwcp_inference.services.servicers import InferenceServicer

    metrics = Metrics()
    repo = Repository(bundled_models())
    repo.load_all()
    servicer = InferenceServicer(repo, OutcomeTracker(metrics, b"k" * 32), metrics, 1024)
    return servicer, {"native": decode.choose("native"), "python": decode.choose("python")}


def _signer(key: bytes = b"k" * 32):
    """Deterministic ids (fixed time and nonces), so the two paths' answers can be compared whole."""
    from dwcp_inference.services.prediction_ids import Signer
    signer = Signer(key)

    def sign(model, version, predicted, native=None):
        n = len(predicted)
        return signer.sign_many(model, version, predicted, 1_764_570_000,
                                nonces=bytes(k % 251 for k in range(8 * n)), native=native)

    return sign


def _reply(inference, decoder: str, rpc: str, data: bytes):
    """The servicer's Reply for the request bytes decoded by `decoder`, or the error the call would answer."""
    from dwcp_inference.services.errors import InferenceError
    from dwcp_inference.services.servicers import InferenceServicer
    from dwcp_inference.services.transport import CallContext

    servicer, decoders = inference
    request = decode.parsed(decoders[decoder].deserializer(getattr(pb, rpc + "Request"))(data))
    if isinstance(request, decode.Undecodable):
        return "undecodable"
    try:
        return getattr(InferenceServicer, rpc).__wrapped__(servicer, decode.from_message(request), CallContext(None))
    except InferenceError as e:
        return type(e).__name__, str(e)


def _vector_requests() -> list[tuple[str, bytes]]:
    """Every bundled version's test vectors as callers send them, singly and as one batch per model."""
    from dwcp_inference import metadata
    out = []
    root = bundled_models()
    vectors = {m: [v["raw"] for v in metadata.read(root / m / "1").test_vectors]
               for m in ("bandwidth_predictor", "compression_selector", "reliability_detector", "consensus_latency")}

    def history(raw) -> pb.LinkHistory:
        return pb.LinkHistory(samples=[pb.NetworkSample(**{f: (int(raw[f][j]) if f in ("time_of_day", "day_of_week")
                                                              else raw[f][j]) for f in raw})
                                       for j in range(len(raw["bandwidth_mbps"]))])

    def query(raw) -> pb.CompressionQuery:
        kinds = {"dc": pb.LINK_TYPE_DC, "metro": pb.LINK_TYPE_METRO, "wan": pb.LINK_TYPE_WAN, "edge": pb.LINK_TYPE_EDGE}
        return pb.CompressionQuery(
            link=pb.LinkState(throughput_mbps=raw["throughput_mbps"], rtt_ms=raw["rtt_ms"],
                              packet_loss=raw["packet_loss"], link_type=kinds[raw["link_type"]]),
            payload=pb.PayloadTraits(size_bytes=int(raw["size_bytes"]), entropy_bits_per_byte=raw["payload_entropy"],
                                     recent_compression_ratio=raw["payload_ratio"]))

    def window(raw) -> pb.ConsensusWindow:
        return pb.ConsensusWindow(samples=[pb.ConsensusSample(**{f: raw[f][j] for f in raw})
                                           for j in range(len(raw["queue_depth"]))])

    hs = [history(r) for r in vectors["bandwidth_predictor"]]
    qs = [query(r) for r in vectors["compression_selector"]]
    ms = [pb.NodeMetrics(**r) for r in vectors["reliability_detector"]]
    ws = [window(r) for r in vectors["consensus_latency"]]
    out += [("PredictBandwidth", pb.PredictBandwidthRequest(history=h)) for h in hs]
    out += [("PredictBandwidthBatch", pb.PredictBandwidthBatchRequest(histories=hs))]
    out += [("SelectCompression", pb.SelectCompressionRequest(link=q.link, payload=q.payload)) for q in qs]
    out += [("SelectCompressionBatch", pb.SelectCompressionBatchRequest(queries=qs))]
    out += [("DetectAnomaly", pb.DetectAnomalyRequest(metrics=m)) for m in ms]
    out += [("DetectAnomalyBatch", pb.DetectAnomalyBatchRequest(metrics=ms))]
    out += [("DetectHighLatency", pb.DetectHighLatencyRequest(window=w)) for w in ws]
    out += [("DetectHighLatencyBatch", pb.DetectHighLatencyBatchRequest(windows=ws))]
    return [(rpc, m.SerializeToString()) for rpc, m in out]


def _fuzz_requests() -> list[tuple[str, bytes]]:
    out = []
    for seed in range(12):
        for generate in fuzz.cases(random.Random(seed), 1024, 1024):
            _, rpc, request, _, _ = generate()
            out.append((rpc, request if isinstance(request, bytes) else request.SerializeToString()))
    return out


def test_native_response_bytes_are_the_python_messages_bytes(inference, native, monkeypatch):
    """Every RPC, single and batch, over the bundled versions' test vectors, the valid requests and the fuzz corpus:
    each request decoded by each decoder, answered natively (bytes) and in Python (a message): the same bytes,
    ids and times included (signed alike: the same key, time and nonces)."""
    from dwcp_inference.services import convert, encode
    monkeypatch.setattr(convert, "now", lambda: NOW)
    sign = _signer()
    answered: dict[str, int] = {}
    cases = _vector_requests() + valid_requests(random.Random(0)) + _fuzz_requests()
    for rpc, data in cases:
        native_reply, python_reply = _reply(inference, "native", rpc, data), _reply(inference, "python", rpc, data)
        if not isinstance(python_reply, encode.Reply):
            assert native_reply == python_reply  # the same refusal (the servers' tests compare whole answers)
            continue
        message = python_reply.render(sign)
        assert isinstance(message, getattr(pb, rpc + "Response"))
        encoded = native_reply.render(sign, native)
        assert type(encoded) is bytes
        assert encoded == message.SerializeToString(), f"{rpc} {data[:80].hex()}: native bytes differ"
        assert encoded == native_reply.render(sign).SerializeToString()  # the same Reply, rendered both ways
        answered[rpc] = answered.get(rpc, 0) + 1
    assert set(answered) == set(SINGLE_AND_BATCH), answered
    assert sum(answered.values()) >= len(_vector_requests()) + len(valid_requests(random.Random(0))), answered


def test_in_process_callers_get_messages_and_the_native_decoder_gets_bytes(inference):
    from dwcp_inference.services.transport import CallContext
    servicer, decoders = inference
    request = pb.PredictBandwidthRequest(history=link_history(24))
    message = servicer.PredictBandwidth(request, CallContext(None))
    assert isinstance(message, pb.PredictBandwidthResponse) and message.prediction.prediction_id
    for name, kind in (("native", bytes), ("python", pb.PredictBandwidthResponse)):
        deserialize = decoders[name].deserializer(pb.PredictBandwidthRequest)
        answer = servicer.PredictBandwidth(deserialize(request.SerializeToString()), CallContext(None))
        assert type(answer) is kind
        serialized = decoders[name].serializer(pb.PredictBandwidthResponse)(answer)
        parsed = pb.PredictBandwidthResponse.FromString(serialized)
        assert parsed.model.name == "bandwidth_predictor"
        assert servicer.outcomes.signer.open(parsed.prediction.prediction_id).model == "bandwidth_predictor"


def test_the_encoders_refuse_bad_columns_and_never_answer_bytes_protobuf_cannot_parse(native):
    """Random columns (NaN, infinities, -0.0, huge and empty batches, very long names and versions, wrong lengths,
    indexes out of range): each encoder answers bytes that parse to the items it was given, or a ValueError."""
    rng = random.Random(99)
    specials = (float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 1e308, 5e-324)

    def floats(n: int) -> np.ndarray:
        return np.array([rng.choice(specials) if rng.random() < 0.3 else rng.uniform(-1e9, 1e9) for _ in range(n)])

    def maybe_wrong(n: int) -> int:
        return n if rng.random() < 0.9 else rng.choice((0, n + 1, max(n - 1, 0)))

    counts = {"bytes": 0, "ValueError": 0}
    for trial in range(1500):
        n = rng.choice((0, 1, 2, 64, 1000 if trial % 50 == 0 else 3))
        ids = ["id-" + "x" * rng.randrange(0, 50) for _ in range(n)]
        version = "v" * rng.choice((0, 1, 300, 100_000))
        kind = trial % 4
        try:
            if kind == 0:
                cols = [floats(maybe_wrong(n)).tobytes() for _ in range(5)]
                out = native.encode_bandwidth("bandwidth_predictor", version, ids, cols,
                                              np.full(maybe_wrong(n), -2**63, np.int64).tobytes(),
                                              np.zeros(maybe_wrong(n), np.int32).tobytes(), 2**63 - 1, -1)
                parsed = pb.PredictBandwidthBatchResponse.FromString(out).predictions
            elif kind == 1:
                k = rng.choice((1, 4, 12))
                ranked = np.array([rng.randrange(-1 if rng.random() < 0.05 else 0, k + (rng.random() < 0.05))
                                   for _ in range(maybe_wrong(n * k))], np.int64)
                out = native.encode_compression("compression_selector", version, ids, [1] * k,
                                                [rng.randrange(-2**31, 2**31) for _ in range(k)], ranked.tobytes(),
                                                floats(maybe_wrong(n * k)).tobytes())
                parsed = pb.SelectCompressionBatchResponse.FromString(out).decisions
            else:
                names = ["f" * rng.randrange(0, 2000) for _ in range(rng.randrange(0, 12))]
                top = rng.randrange(0, 12)
                feature = np.array([rng.randrange(-1 if rng.random() < 0.05 else 0, len(names) + 1)
                                    for _ in range(maybe_wrong(n * top))], np.int64)
                flags = np.array([rng.randrange(256) for _ in range(maybe_wrong(n))], np.uint8).tobytes()
                if kind == 2:
                    out = native.encode_anomaly("reliability_detector", version, ids, flags,
                                                floats(maybe_wrong(n)).tobytes(), rng.choice(specials),
                                                np.full(maybe_wrong(n), rng.choice((-7, 0, 3)), np.int32).tobytes(),
                                                names, top, feature.tobytes(),
                                                [floats(maybe_wrong(n * top)).tobytes() for _ in range(3)])
                    parsed = pb.DetectAnomalyBatchResponse.FromString(out).verdicts
                else:
                    out = native.encode_latency("consensus_latency", version, ids, flags,
                                                floats(maybe_wrong(n)).tobytes(), rng.choice(specials), names, top,
                                                feature.tobytes(), floats(maybe_wrong(n * top)).tobytes())
                    parsed = pb.DetectHighLatencyBatchResponse.FromString(out).verdicts
        except ValueError:
            counts["ValueError"] += 1
            continue
        assert [p.prediction_id for p in parsed] == ids
        counts["bytes"] += 1
    assert min(counts.values()) > 100, counts


def test_negative_zero_and_extreme_values_are_encoded_as_protobuf_encodes_them(native):
    """upb writes a double whose bits are not all zero (-0.0 included); a derived prost message would drop -0.0."""
    from types import SimpleNamespace

    from dwcp_inference.services import decisions, encode
    rt = SimpleNamespace(name="bandwidth_predictor", version="é" * 127)
    values = np.array([-0.0, 0.0, 5e-324, -3e38, 1.5])
    answers = decisions.BandwidthAnswers(values, values[::-1].copy(), -values, values * 0, np.abs(values), 300.0)
    sign = _signer()
    for single, base in ((False, np.array([-1e10, 0.0, 1.999999999, 2**40 + 0.5, -0.25])), (True, np.array([0.5]))):
        a = answers if not single else decisions.BandwidthAnswers(*(c[:1] for c in (
            answers.bandwidth_mbps, answers.latency_ms, answers.packet_loss, answers.jitter_ms, answers.confidence)),
            300.0)
        reply = encode.bandwidth(rt, single, a, base, -0.5)
        assert reply.render(sign, native) == reply.render(sign).SerializeToString()
    scores = np.array([-0.0, 2.0])
    reply = encode.AnomalyReply(SimpleNamespace(name="reliability_detector", version="1"), False, answers=(
        decisions.AnomalyAnswers(np.array([False, True]), scores, -0.0, np.array([1, 3], np.int32), ["a", ""],
                                 np.array([[1, 0], [0, 1]]), np.full((2, 2), -0.0), np.zeros((2, 2)),
                                 np.array([[-0.0, 1.0], [2.0, -3.0]]))))
    assert reply.render(sign, native) == reply.render(sign).SerializeToString()


def test_the_python_path_answers_every_rpc_without_the_extension(monkeypatch):
    """`--decoder python` never imports the extension: with its import failing, every RPC still answers."""
    monkeypatch.setitem(sys.modules, decode.NATIVE_MODULE, None)  # `import` raises ImportError
    running = start_server(bundled_models(), decoder="python", admin_port=-1, metrics_port=-1, poll_seconds=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            for rpc, data in valid_requests(random.Random(3)):
                status, answer = _answer(channel, rpc, data)
                assert status == "OK", (rpc, answer)
    finally:
        running.stop(0)


# ------------------------------------------------------------------ bandwidth quantiles (issue 18)

# sha256 of the bundled bandwidth version's responses to the requests below (fixed ids and time), taken before
# the quantiles were served: a version without quantile outputs answers exactly as it did.
BUNDLED_BANDWIDTH_SHA256 = "085d4da30099b0dc4b0bac8083190f1981f0860b1c4d921863a8befbcb97bd46"


def test_a_version_without_quantiles_answers_byte_for_byte_as_before(inference, native, monkeypatch):
    from dwcp_inference.services import convert
    monkeypatch.setattr(convert, "now", lambda: NOW)

    def sign(model, version, predicted, native=None):
        return [f"id-{k}" for k in range(len(predicted))]

    digest, answered = hashlib.sha256(), 0
    for rpc, data in _vector_requests() + valid_requests(random.Random(0)):
        if not rpc.startswith("PredictBandwidth"):
            continue
        encoded = _reply(inference, "native", rpc, data).render(sign, native)
        assert encoded == _reply(inference, "python", rpc, data).render(sign).SerializeToString()
        digest.update(encoded)
        answered += 1
    assert answered >= 8
    assert digest.hexdigest() == BUNDLED_BANDWIDTH_SHA256
