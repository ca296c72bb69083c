"""Valid raw requests, built the way a caller would."""

from __future__ import annotations

from dwcp_inference.api import inference_pb2 as pb


def link_history(n: int = 30, bandwidth: float = 500.0) -> pb.LinkHistory:
    samples = []
    for i in range(n):
        s = pb.NetworkSample(bandwidth_mbps=bandwidth + 10 * (i % 5), latency_ms=20 + i % 3, packet_loss=0.001,
                             jitter_ms=2.0, time_of_day=(9 + i // 12) % 24, day_of_week=2, node_id="a", peer_id="b")
        s.timestamp.FromSeconds(1_767_000_000 + 300 * i)
        samples.append(s)
    return pb.LinkHistory(samples=samples)


def compression_query(link_type: int = pb.LINK_TYPE_WAN, sample: bytes = b"hello world " * 300):
    return (pb.LinkState(throughput_mbps=100, rtt_ms=40, link_type=link_type, packet_loss=0.001),
            pb.PayloadTraits(size_bytes=1 << 20, sample=sample))


def node_metrics(error_rate: float = 0.004, cpu: float = 0.4) -> pb.NodeMetrics:
    return pb.NodeMetrics(node_id="n1", error_rate=error_rate, timeout_rate=0.002, latency_p50_ms=20,
                          latency_p99_ms=55, sla_violations=0, connection_failures=0, packet_loss_rate=0.001,
                          cpu_usage=cpu, memory_usage=0.45, disk_io_mbps=20)


def consensus_window(n: int = 20, p99: float = 30.0) -> pb.ConsensusWindow:
    return pb.ConsensusWindow(samples=[pb.ConsensusSample(
        queue_depth=5, proposals_pending=3, proposals_committed=200, latency_p50_ms=p99 / 3,
        latency_p95_ms=p99 / 1.5, latency_p99_ms=p99, leader_changes=0, quorum_size=3, active_nodes=5,
        network_tier="tier2", dwcp_mode="datacenter", consensus_type="raft") for _ in range(n)])
