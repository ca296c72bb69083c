"""Calls every RPC and the health check of a server; exits non-zero at the first failure."""

import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc

target = sys.argv[1]
channel = grpc.insecure_channel(target)
health = health_pb2_grpc.HealthStub(channel)
deadline = time.monotonic() + 60
while True:
    try:
        if health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
            break
    except grpc.RpcError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"{target}: not SERVING after 60 s")
    time.sleep(0.5)
stub = pb_grpc.InferenceServiceStub(channel)
history = pb.LinkHistory(samples=[pb.NetworkSample(bandwidth_mbps=500, latency_ms=20, packet_loss=0.001, jitter_ms=2,
                                                   time_of_day=10, day_of_week=2) for _ in range(24)])
link = pb.LinkState(throughput_mbps=100, rtt_ms=40, link_type=pb.LINK_TYPE_WAN, packet_loss=0.001)
payload = pb.PayloadTraits(size_bytes=1 << 20, sample=b"hello world " * 300)
node = pb.NodeMetrics(error_rate=0.004, timeout_rate=0.002, latency_p50_ms=20, latency_p99_ms=55, cpu_usage=0.4,
                      memory_usage=0.45, disk_io_mbps=20)
window = pb.ConsensusWindow(samples=[pb.ConsensusSample(
    queue_depth=5, proposals_pending=3, proposals_committed=200, latency_p50_ms=10, latency_p95_ms=20,
    latency_p99_ms=30, quorum_size=3, active_nodes=5, network_tier="tier2", dwcp_mode="datacenter",
    consensus_type="raft")] * 20)
calls = {
    "PredictBandwidth": lambda: stub.PredictBandwidth(pb.PredictBandwidthRequest(history=history)),
    "PredictBandwidthBatch": lambda: stub.PredictBandwidthBatch(pb.PredictBandwidthBatchRequest(histories=[history] * 2)),
    "SelectCompression": lambda: stub.SelectCompression(pb.SelectCompressionRequest(link=link, payload=payload)),
    "SelectCompressionBatch": lambda: stub.SelectCompressionBatch(pb.SelectCompressionBatchRequest(
        queries=[pb.CompressionQuery(link=link, payload=payload)] * 2)),
    "DetectAnomaly": lambda: stub.DetectAnomaly(pb.DetectAnomalyRequest(metrics=node)),
    "DetectAnomalyBatch": lambda: stub.DetectAnomalyBatch(pb.DetectAnomalyBatchRequest(metrics=[node] * 2)),
    "DetectHighLatency": lambda: stub.DetectHighLatency(pb.DetectHighLatencyRequest(window=window)),
    "DetectHighLatencyBatch": lambda: stub.DetectHighLatencyBatch(pb.DetectHighLatencyBatchRequest(windows=[window] * 2)),
}
for name, call in calls.items():
    resp = call()
    print(f"{name}: answered by {resp.model.name} v{resp.model.version}")
    assert resp.model.version, name
for model in ("bandwidth_predictor", "compression_selector", "reliability_detector", "consensus_latency"):
    status = health.Check(health_pb2.HealthCheckRequest(service=model), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING, (model, status)
print("health: SERVING, every model")
