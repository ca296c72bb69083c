"""The requests every benchmark sends: valid, the size a DWCP caller sends (the bundled models' windows).

A benchmark *case* is an RPC and the form of its request. SelectCompression has two: `SelectCompression/sample`,
a 4 KiB payload sample and the payload's size, as the Go drop-in (clients/go/encoding) sends it, so the server
estimates entropy and compressibility itself; and `SelectCompression/traits`, precomputed traits (entropy,
recent compression ratio), which leaves that work out. The other RPCs have one form, named as the RPC."""

from __future__ import annotations

from typing import Any

from dwcp_inference.api import inference_pb2 as pb

BATCH_FORMS = {"PredictBandwidth": "PredictBandwidthBatch", "SelectCompression": "SelectCompressionBatch",
               "DetectAnomaly": "DetectAnomalyBatch", "DetectHighLatency": "DetectHighLatencyBatch"}
RPCS = tuple(BATCH_FORMS)
CASES = ("PredictBandwidth", "SelectCompression/sample", "SelectCompression/traits", "DetectAnomaly",
         "DetectHighLatency")
SAMPLE_BYTES = 4096  # clients/go/encoding.SampleBytes


def method(case: str) -> str:
    """The RPC a case calls (`SelectCompression/sample` -> `SelectCompression`)."""
    return case.split("/", 1)[0]


def cases(names: str) -> list[str]:
    """Cases from a comma-separated list of case or RPC names (an RPC: all its forms), or `all`."""
    if names == "all":
        return list(CASES)
    out: list[str] = []
    for name in names.split(","):
        found = [c for c in CASES if name in (c, method(c))]
        if not found:
            raise ValueError(f"unknown {name!r}, expected some of {list(CASES)} (or an RPC: {list(RPCS)})")
        out += [c for c in found if c not in out]
    return out


def _history(i: int = 0) -> pb.LinkHistory:
    return pb.LinkHistory(samples=[pb.NetworkSample(
        bandwidth_mbps=500 + 7 * ((i + k) % 9), latency_ms=20 + k % 3, packet_loss=0.001, jitter_ms=2,
        time_of_day=10, day_of_week=2) for k in range(24)])


def _link(i: int) -> pb.LinkState:
    return pb.LinkState(throughput_mbps=100 + i % 50, rtt_ms=40, link_type=pb.LINK_TYPE_WAN, packet_loss=0.001)


def payload_sample(i: int = 0) -> bytes:
    """The first 4 KiB of a payload DWCP moves: JSON-lines telemetry, compressible like the real thing."""
    lines = (f'{{"node":"n{(i + k) % 17}","seq":{i * 1000 + k},"bw_mbps":{500 + (k * 37) % 211}.{k % 10},'
             f'"rtt_ms":{20 + (k * 13) % 29},"state":"{("ok", "degraded", "ok", "ok")[k % 4]}"}}\n'
             for k in range(64))
    return "".join(lines).encode()[:SAMPLE_BYTES]


def _query(case: str, i: int = 0) -> pb.CompressionQuery:
    if case == "SelectCompression/traits":
        payload = pb.PayloadTraits(size_bytes=1 << 20, entropy_bits_per_byte=5.5, recent_compression_ratio=0.4)
    else:  # as clients/go/encoding sends it: the payload's size and its first 4 KiB
        payload = pb.PayloadTraits(size_bytes=1 << 20, sample=payload_sample(i))
    return pb.CompressionQuery(link=_link(i), payload=payload)


def _node(i: int = 0) -> pb.NodeMetrics:
    return pb.NodeMetrics(node_id=f"n{i}", error_rate=0.004, timeout_rate=0.002, latency_p50_ms=20,
                          latency_p99_ms=55 + i % 7, packet_loss_rate=0.001, cpu_usage=0.4, memory_usage=0.45,
                          disk_io_mbps=20)


def _window(i: int = 0) -> pb.ConsensusWindow:
    return pb.ConsensusWindow(samples=[pb.ConsensusSample(
        queue_depth=5, proposals_pending=3, proposals_committed=200, latency_p50_ms=10, latency_p95_ms=20,
        latency_p99_ms=30 + (i + k) % 4, quorum_size=3, active_nodes=5, network_tier="tier2",
        dwcp_mode="datacenter", consensus_type="raft") for k in range(20)])


def request(case: str, batch: int = 1) -> Any:
    """The request of `case` (its batch form when batch > 1). An RPC's plain name is its first form
    (SelectCompression: the 4 KiB sample, as callers send it)."""
    case = cases(case)[0]
    rpc = method(case)
    if batch <= 1:
        if rpc == "SelectCompression":
            q = _query(case)
            return pb.SelectCompressionRequest(link=q.link, payload=q.payload)
        return {"PredictBandwidth": lambda: pb.PredictBandwidthRequest(history=_history()),
                "DetectAnomaly": lambda: pb.DetectAnomalyRequest(metrics=_node()),
                "DetectHighLatency": lambda: pb.DetectHighLatencyRequest(window=_window())}[rpc]()
    return {"PredictBandwidth": lambda: pb.PredictBandwidthBatchRequest(histories=[_history(i) for i in range(batch)]),
            "SelectCompression": lambda: pb.SelectCompressionBatchRequest(
                queries=[_query(case, i) for i in range(batch)]),
            "DetectAnomaly": lambda: pb.DetectAnomalyBatchRequest(metrics=[_node(i) for i in range(batch)]),
            "DetectHighLatency": lambda: pb.DetectHighLatencyBatchRequest(
                windows=[_window(i) for i in range(batch)])}[rpc]()


# The V2 (Open Inference Protocol) form of each case, for the `dwcp-v2` row: ModelInfer on the same items as the
# typed request above (batch 1 is a batch of one), as ghz's JSON (docs/v2.md has the tensors).
V2_MODELS = {"PredictBandwidth": "bandwidth_predictor", "SelectCompression": "compression_selector",
             "DetectAnomaly": "reliability_detector", "DetectHighLatency": "consensus_latency"}
_V2_INTEGERS = {"time_of_day": "INT32", "day_of_week": "INT32", "size_bytes": "INT64"}
_V2_CONTENTS = {"FP64": "fp64_contents", "INT32": "int_contents", "INT64": "int64_contents",
                "BYTES": "bytes_contents"}


def _v2_tensor(name: str, values: list, datatype: str = "") -> dict[str, Any]:
    import base64

    import numpy as np

    flat = np.asarray(values, dtype=object).reshape(-1).tolist()
    shape = list(np.asarray(values, dtype=object).shape)
    datatype = datatype or _V2_INTEGERS.get(name, "FP64")
    if datatype == "BYTES":
        flat = [base64.b64encode(v if isinstance(v, bytes) else v.encode()).decode() for v in flat]
    return {"name": name, "datatype": datatype, "shape": shape, "contents": {_V2_CONTENTS[datatype]: flat}}


def v2_request(case: str, batch: int = 1) -> dict[str, Any]:
    """ModelInfer's request (JSON) carrying the same items as `request(case, batch)`."""
    case = cases(case)[0]
    rpc = method(case)
    if rpc == "PredictBandwidth":
        seqs = [_history(i).samples for i in range(batch)]
        fields = ("bandwidth_mbps", "latency_ms", "packet_loss", "jitter_ms", "time_of_day", "day_of_week")
        inputs = [_v2_tensor(f, [[getattr(s, f) for s in seq] for seq in seqs]) for f in fields]
    elif rpc == "DetectHighLatency":
        seqs = [_window(i).samples for i in range(batch)]
        numbers = ("queue_depth", "proposals_pending", "proposals_committed", "latency_p50_ms", "latency_p95_ms",
                   "latency_p99_ms", "leader_changes", "quorum_size", "active_nodes")
        inputs = [_v2_tensor(f, [[getattr(s, f) for s in seq] for seq in seqs]) for f in numbers]
        inputs += [_v2_tensor(f, [[getattr(s, f) for s in seq] for seq in seqs], "BYTES")
                   for f in ("network_tier", "dwcp_mode", "consensus_type")]
    elif rpc == "DetectAnomaly":
        nodes = [_node(i) for i in range(batch)]
        fields = ("error_rate", "timeout_rate", "latency_p50_ms", "latency_p99_ms", "sla_violations",
                  "connection_failures", "packet_loss_rate", "cpu_usage", "memory_usage", "disk_io_mbps")
        inputs = [_v2_tensor(f, [getattr(n, f) for n in nodes]) for f in fields]
    else:
        queries = [_query(case, i) for i in range(batch)]
        inputs = [_v2_tensor(f, [getattr(q.link, f) for q in queries]) for f in ("throughput_mbps", "rtt_ms",
                                                                                  "packet_loss")]
        inputs.append(_v2_tensor("link_type", [pb.LinkType.Name(q.link.link_type)[len("LINK_TYPE_"):].lower()
                                               for q in queries], "BYTES"))
        inputs.append(_v2_tensor("size_bytes", [q.payload.size_bytes for q in queries]))
        if case == "SelectCompression/traits":
            inputs.append(_v2_tensor("payload_entropy", [q.payload.entropy_bits_per_byte for q in queries]))
            inputs.append(_v2_tensor("payload_ratio", [q.payload.recent_compression_ratio for q in queries]))
        else:
            inputs.append(_v2_tensor("payload_sample", [q.payload.sample for q in queries], "BYTES"))
    return {"model_name": V2_MODELS[rpc], "inputs": inputs}
