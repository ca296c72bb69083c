"""The requests every benchmark sends: valid, the size a DWCP caller sends (the bundled models' windows)."""

from __future__ import annotations

from typing import Any

from dwcp_inference.api import inference_pb2 as pb

BATCH_FORMS = {"PredictBandwidth": "PredictBandwidthBatch", "SelectCompression": "SelectCompressionBatch",
               "DetectAnomaly": "DetectAnomalyBatch", "DetectHighLatency": "DetectHighLatencyBatch"}
RPCS = tuple(BATCH_FORMS)


def _history(i: int = 0) -> pb.LinkHistory:
    return pb.LinkHistory(samples=[pb.NetworkSample(
        bandwidth_mbps=500 + 7 * ((i + k) % 9), latency_ms=20 + k % 3, packet_loss=0.001, jitter_ms=2,
        time_of_day=10, day_of_week=2) for k in range(24)])


def _query(i: int = 0) -> pb.CompressionQuery:
    return pb.CompressionQuery(
        link=pb.LinkState(throughput_mbps=100 + i % 50, rtt_ms=40, link_type=pb.LINK_TYPE_WAN, packet_loss=0.001),
        payload=pb.PayloadTraits(size_bytes=1 << 20, entropy_bits_per_byte=5.5, recent_compression_ratio=0.4))


def _node(i: int = 0) -> pb.NodeMetrics:
    return pb.NodeMetrics(node_id=f"n{i}", error_rate=0.004, timeout_rate=0.002, latency_p50_ms=20,
                          latency_p99_ms=55 + i % 7, packet_loss_rate=0.001, cpu_usage=0.4, memory_usage=0.45,
                          disk_io_mbps=20)


def _window(i: int = 0) -> pb.ConsensusWindow:
    return pb.ConsensusWindow(samples=[pb.ConsensusSample(
        queue_depth=5, proposals_pending=3, proposals_committed=200, latency_p50_ms=10, latency_p95_ms=20,
        latency_p99_ms=30 + (i + k) % 4, quorum_size=3, active_nodes=5, network_tier="tier2",
        dwcp_mode="datacenter", consensus_type="raft") for k in range(20)])


def request(rpc: str, batch: int = 1) -> Any:
    """The request of `rpc` (its batch form when batch > 1)."""
    if batch <= 1:
        return {"PredictBandwidth": lambda: pb.PredictBandwidthRequest(history=_history()),
                "SelectCompression": lambda: pb.SelectCompressionRequest(link=_query().link,
                                                                         payload=_query().payload),
                "DetectAnomaly": lambda: pb.DetectAnomalyRequest(metrics=_node()),
                "DetectHighLatency": lambda: pb.DetectHighLatencyRequest(window=_window())}[rpc]()
    return {"PredictBandwidth": lambda: pb.PredictBandwidthBatchRequest(histories=[_history(i) for i in range(batch)]),
            "SelectCompression": lambda: pb.SelectCompressionBatchRequest(queries=[_query(i) for i in range(batch)]),
            "DetectAnomaly": lambda: pb.DetectAnomalyBatchRequest(metrics=[_node(i) for i in range(batch)]),
            "DetectHighLatency": lambda: pb.DetectHighLatencyBatchRequest(
                windows=[_window(i) for i in range(batch)])}[rpc]()
