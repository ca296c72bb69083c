"""`dwcp-inference fuzz`: thousands of generated bad requests through a real channel. Every answer must carry the
expected status and a message naming the field; the server must stay up, its memory flat. The bad values and the
fields' paths come from the model contracts (dwcp_inference/contracts/): values just and far outside each
field's valid range, and the non-finite ones."""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from google.protobuf.descriptor import FieldDescriptor

from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc
from dwcp_inference.contracts import BANDWIDTH, COMPRESSION, CONSENSUS, INTEGER, NUMBER, RELIABILITY, Field, at

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
_INTEGER_LIMITS = {FieldDescriptor.CPPTYPE_INT32: 2**31 - 1, FieldDescriptor.CPPTYPE_INT64: 2**63 - 1}


def out_of_range(field: Field) -> tuple[float, ...]:
    """Values the contract's range refuses for a field: just below its minimum and just above its maximum, far
    beyond both ends, and (a double field) NaN and the infinities; an integer field's within its proto type."""
    lo, hi = field.min, field.max
    if field.kind == INTEGER:
        limit = _INTEGER_LIMITS[getattr(pb, field.message).DESCRIPTOR.fields_by_name[field.path.split(".")[-1]]
                                .cpp_type]
        return tuple(v for v in (int(lo) - 1, int(hi) + 1, -limit - 1, limit) if -limit - 1 <= v <= limit)
    return (math.nan, math.inf, -math.inf, math.nextafter(lo, -math.inf), lo - 1.0, -1e308,
            math.nextafter(hi, math.inf), hi + 1.0, 1e308)


# A case: (category, rpc name, request or raw bytes, expected codes, words the message must contain)
Case = tuple[str, str, Any, tuple[grpc.StatusCode, ...], str]


def _sample(rng: random.Random, **bad: float) -> pb.NetworkSample:
    s = pb.NetworkSample(bandwidth_mbps=rng.uniform(1, 1000), latency_ms=rng.uniform(1, 100), packet_loss=0.001,
                         jitter_ms=2, time_of_day=rng.randrange(24), day_of_week=rng.randrange(7))
    for k, v in bad.items():
        setattr(s, k, v)
    return s


def _history(rng: random.Random, n: int = 24, bad_at: int | None = None, **bad: float) -> pb.LinkHistory:
    return pb.LinkHistory(samples=[_sample(rng, **(bad if i == bad_at else {})) for i in range(n)])


def _consensus(rng: random.Random, n: int = 20, **fields: Any) -> pb.ConsensusWindow:
    base = dict(queue_depth=5, proposals_pending=3, proposals_committed=200, latency_p50_ms=10, latency_p95_ms=20,
                latency_p99_ms=30, quorum_size=3, active_nodes=5, network_tier="tier2", dwcp_mode="datacenter",
                consensus_type="raft")
    samples = [pb.ConsensusSample(**base) for _ in range(n)]
    for k, v in fields.items():
        setattr(samples[-1], k, v)
    return pb.ConsensusWindow(samples=samples)


def _node(**fields: float) -> pb.NodeMetrics:
    m = pb.NodeMetrics(error_rate=0.004, timeout_rate=0.002, latency_p50_ms=20, latency_p99_ms=55, cpu_usage=0.4,
                       memory_usage=0.45, disk_io_mbps=20)
    for k, v in fields.items():
        setattr(m, k, v)
    return m


def cases(rng: random.Random, max_batch: int, max_window: int) -> list[Callable[[], Case]]:
    """Generators, one per kind of bad input."""
    payload = pb.PayloadTraits(size_bytes=4096, sample=b"x" * 100)
    net_fields = [f for f in BANDWIDTH.fields if f.kind == NUMBER]
    time_fields = [f for f in BANDWIDTH.fields if f.kind == INTEGER]
    node_fields = list(RELIABILITY.fields)
    cons_fields = [f for f in CONSENSUS.fields if f.kind == NUMBER]
    query_fields = [f for f in COMPRESSION.fields if f.kind in (NUMBER, INTEGER)]

    def short_history() -> Case:
        n = rng.randrange(0, BANDWIDTH.window)
        return ("wrong length", "PredictBandwidth", pb.PredictBandwidthRequest(history=_history(rng, n)),
                (INVALID,), "history.samples")

    def long_window() -> Case:
        return ("wrong length", "DetectHighLatency", pb.DetectHighLatencyRequest(
            window=_consensus(rng, max_window + rng.randrange(1, 50))), (INVALID,), "window.samples")

    def bad_number_network() -> Case:
        f = rng.choice(net_fields)
        v, i = rng.choice(out_of_range(f)), rng.randrange(BANDWIDTH.window)
        return ("NaN, infinity, huge, negative", "PredictBandwidth", pb.PredictBandwidthRequest(
            history=_history(rng, BANDWIDTH.window, i, **{f.name: v})), (INVALID,), at(BANDWIDTH.path(f.name), i))

    def bad_number_node() -> Case:
        f = rng.choice(node_fields)
        v = rng.choice(out_of_range(f))
        return ("NaN, infinity, huge, negative", "DetectAnomaly", pb.DetectAnomalyRequest(
            metrics=_node(**{f.name: v})), (INVALID,), RELIABILITY.path(f.name))

    def bad_number_consensus() -> Case:
        f = rng.choice(cons_fields)
        v, last = rng.choice(out_of_range(f)), CONSENSUS.window - 1
        return ("NaN, infinity, huge, negative", "DetectHighLatency", pb.DetectHighLatencyRequest(
            window=_consensus(rng, CONSENSUS.window, **{f.name: v})), (INVALID,), at(CONSENSUS.path(f.name), last))

    def bad_number_query() -> Case:
        f = rng.choice(query_fields)
        v = rng.choice(out_of_range(f))
        link = pb.LinkState(throughput_mbps=100, rtt_ms=40, link_type=pb.LINK_TYPE_WAN, packet_loss=0.001)
        traits = pb.PayloadTraits(size_bytes=4096, entropy_bits_per_byte=5.0, recent_compression_ratio=0.6)
        message, leaf = f.path.split(".")
        setattr(link if message == "link" else traits, leaf, v)
        return ("NaN, infinity, huge, negative", "SelectCompression", pb.SelectCompressionRequest(
            link=link, payload=traits), (INVALID,), COMPRESSION.path(f.name))

    def bad_time() -> Case:
        f = rng.choice(time_fields)
        v, last = rng.choice(out_of_range(f)), BANDWIDTH.window - 1
        return ("huge and negative values", "PredictBandwidth", pb.PredictBandwidthRequest(
            history=_history(rng, BANDWIDTH.window, last, **{f.name: v})), (INVALID,),
            at(BANDWIDTH.path(f.name), last))

    def unknown_enum() -> Case:
        bad = pb.LinkState(throughput_mbps=100, rtt_ms=40, link_type=rng.choice((0, 5, 99, -3)), packet_loss=0.001)
        return ("unknown enum values", "SelectCompression", pb.SelectCompressionRequest(link=bad, payload=payload),
                (INVALID,), COMPRESSION.path("link_type"))

    def unknown_category() -> Case:
        f = CONSENSUS.field(rng.choice(CONSENSUS.labels))
        word = "".join(rng.choice("abcxyz") for _ in range(rng.randrange(0, 8)))
        if word in f.vocabulary:  # never, with these letters; but a bad value must be bad
            word += "?"
        last = CONSENSUS.window - 1
        return ("unknown enum values", "DetectHighLatency", pb.DetectHighLatencyRequest(
            window=_consensus(rng, CONSENSUS.window, **{f.name: word})), (INVALID,), at(CONSENSUS.path(f.name), last))

    def empty_batch() -> Case:
        name = rng.choice(("PredictBandwidthBatch", "SelectCompressionBatch", "DetectAnomalyBatch",
                           "DetectHighLatencyBatch"))
        request = getattr(pb, name + "Request")()
        field = {"PredictBandwidthBatch": "histories", "SelectCompressionBatch": "queries",
                 "DetectAnomalyBatch": "metrics", "DetectHighLatencyBatch": "windows"}[name]
        return ("empty and oversized batches", name, request, (INVALID,), field)

    def oversized_batch() -> Case:
        return ("empty and oversized batches", "DetectAnomalyBatch", pb.DetectAnomalyBatchRequest(
            metrics=[_node()] * (max_batch + rng.randrange(1, 100))), (INVALID,), "metrics: expected at most")

    def unknown_version() -> Case:
        selector = rng.choice((pb.ModelSelector(version=str(rng.randrange(100, 10**6))),
                               pb.ModelSelector(label=rng.choice(("nope", "gold", "Stable")))))
        return ("unknown model versions and labels", "DetectAnomaly", pb.DetectAnomalyRequest(
            metrics=_node(), model=selector), (NOT_FOUND,), "model.")

    def unknown_prediction() -> Case:
        return ("unknown model versions and labels", "ReportOutcome", pb.ReportOutcomeRequest(
            prediction_id=f"{rng.getrandbits(128):032x}", was_anomaly=True), (NOT_FOUND,), "prediction_id")

    def random_bytes() -> Case:
        name = rng.choice(("PredictBandwidth", "SelectCompression", "DetectAnomaly", "DetectHighLatency"))
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200)))
        # Some random bytes happen to parse (as a message with unknown fields, or none): then the request is
        # usually empty or partial, and still invalid; when it parses into a complete, valid request, OK is right.
        try:
            parsed = getattr(pb, name + "Request").FromString(data)
            complete = all(parsed.HasField(f) for f in ("history", "link", "payload", "metrics", "window")
                           if f in parsed.DESCRIPTOR.fields_by_name)
        except Exception:  # noqa: BLE001 - DecodeError, or worse: the server must still say INVALID_ARGUMENT
            complete = False
        return ("random bytes", name, data, (INVALID, grpc.StatusCode.OK) if complete else (INVALID,), "")

    return [short_history, long_window, bad_number_network, bad_number_node, bad_number_consensus, bad_number_query,
            bad_time, unknown_enum, unknown_category, empty_batch, oversized_batch, unknown_version,
            unknown_prediction, random_bytes]


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def run(target: str, count: int, seed: int = 0, pid: int | None = None, max_batch: int = 1024,
        max_window: int = 1024) -> dict[str, Any]:
    rng = random.Random(seed)
    generators = cases(rng, max_batch, max_window)
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)])
    stub = pb_grpc.InferenceServiceStub(channel)
    raw = {name: channel.unary_unary(f"/dwcp.inference.v1.InferenceService/{name}",
                                     request_serializer=lambda b: b, response_deserializer=lambda b: b)
           for name in ("PredictBandwidth", "SelectCompression", "DetectAnomaly", "DetectHighLatency")}
    sent, wrong = Counter(), Counter()
    examples: list[str] = []
    memory = [rss_kib(pid)] if pid else []
    started = time.monotonic()
    for i in range(count):
        category, rpc_name, request, codes, words = generators[i % len(generators)]()
        sent[category] += 1
        try:
            call = raw[rpc_name] if isinstance(request, bytes) else getattr(stub, rpc_name)
            call(request, timeout=10)
            problem = "" if grpc.StatusCode.OK in codes else "answered OK"
        except grpc.RpcError as e:
            details = e.details() or ""
            if e.code() not in codes:
                problem = f"{e.code().name}: {details}"
            elif words and words not in details:
                problem = f"message does not name {words!r}: {details}"
            else:
                problem = ""
        if problem:
            wrong[category] += 1
            if len(examples) < 10:
                examples.append(f"{category} / {rpc_name}: {problem}")
        if pid and i % 1000 == 999:
            memory.append(rss_kib(pid))
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
    channel.close()
    return {"requests": count, "seconds": round(time.monotonic() - started, 1), "sent": dict(sent),
            "wrong": dict(wrong), "examples": examples,
            "serving_after": health == health_pb2.HealthCheckResponse.SERVING, "rss_kib": memory}


def main(args: Any) -> int:
    result = run(args.target, args.count, args.seed, args.pid)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{'category':<36} {'sent':>7} {'wrong status or message':>24}")
        for category, n in result["sent"].items():
            print(f"{category:<36} {n:>7} {result['wrong'].get(category, 0):>24}")
        print(f"{result['requests']} requests in {result['seconds']} s; server SERVING after: "
              f"{result['serving_after']}")
        if result["rss_kib"]:
            print(f"server RSS (KiB) every 1000 requests: {result['rss_kib']}")
        for e in result["examples"]:
            print("  " + e)
    return 0 if not result["wrong"] and result["serving_after"] else 1
