"""Request bytes to the raw columns a version reads, per request: the native decoder against the python one.

    python -m dwcp_inference.bench.decode [--seconds 1] [--rounds 5]

Each case is timed from the serialized request to convert.py's columns (what the servicer hands the feature
layer): decode (native: prost in Rust; python: protobuf's parse and a walk over the messages) plus the column
checks and window slicing both share. The two decoders alternate round by round; the median per round is shown."""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.services import convert, decode


def _history(n: int, k: int = 0) -> pb.LinkHistory:
    return pb.LinkHistory(samples=[pb.NetworkSample(
        bandwidth_mbps=480 + i + k, latency_ms=21, packet_loss=0.001, jitter_ms=2, time_of_day=14, day_of_week=2,
        node_id="node-a", peer_id="node-b") for i in range(n)])


def _window(n: int) -> pb.ConsensusWindow:
    return pb.ConsensusWindow(samples=[pb.ConsensusSample(
        queue_depth=5, proposals_pending=3, proposals_committed=200, latency_p50_ms=10, latency_p95_ms=20,
        latency_p99_ms=30, quorum_size=3, active_nodes=5, network_tier="tier2", dwcp_mode="datacenter",
        consensus_type="raft") for _ in range(n)])


CASES: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "PredictBandwidth, 24 samples": (
        pb.PredictBandwidthRequest(history=_history(24)),
        lambda d: convert.network(d.histories, 24, True)),
    "PredictBandwidthBatch, 64 histories of 24": (
        pb.PredictBandwidthBatchRequest(histories=[_history(24, k) for k in range(64)]),
        lambda d: convert.network(d.histories, 24, False)),
    "DetectHighLatency, a window of 20": (
        pb.DetectHighLatencyRequest(window=_window(20)),
        lambda d: convert.consensus(d.windows, 20, True)),
}


def per_request(parse: Callable[[bytes], Any], columns: Callable[[Any], Any], data: bytes, seconds: float) -> float:
    """Mean seconds per request, bytes to columns, over about `seconds`."""
    n, started = 0, time.perf_counter()
    while True:
        for _ in range(50):
            columns(decode.from_message(decode.parsed(parse(data))))
        n += 50
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return elapsed / n


def run(seconds: float, rounds: int) -> dict[str, dict[str, float]]:
    decoders = {"native": decode.choose("native"), "python": decode.choose("python")}
    out = {}
    for name, (request, columns) in CASES.items():
        data = request.SerializeToString()
        times: dict[str, list[float]] = {d: [] for d in decoders}
        for _ in range(rounds):  # alternating, so a busy moment costs both alike
            for d, decoder in decoders.items():
                times[d].append(per_request(decoder.deserializer(type(request)), columns, data, seconds))
        out[name] = {d: statistics.median(t) for d, t in times.items()} | {"bytes": len(data)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per decoder, case and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{'request':44} {'bytes':>7} {'native µs':>10} {'python µs':>10} {'python/native':>14}")
    for name, r in run(args.seconds, args.rounds).items():
        print(f"{name:44} {r['bytes']:7d} {r['native'] * 1e6:10.1f} {r['python'] * 1e6:10.1f} "
              f"{r['python'] / r['native']:13.1f}x")


if __name__ == "__main__":
    main()
