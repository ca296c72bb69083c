"""`dwcp-inference soak`: a server under mixed traffic (all four RPCs, their batch forms, outcome reports) while
new model versions are published into its repository, with its resident memory, open files, errors and latency
printed per interval. The server runs as a child process on a copy of the repository."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc
from dwcp_inference.commands.fuzz import rss_kib

MODELS = ("bandwidth_predictor", "compression_selector", "reliability_detector", "consensus_latency")


def _requests(rng: random.Random) -> list[tuple[str, Any]]:
    history = pb.LinkHistory(samples=[pb.NetworkSample(
        bandwidth_mbps=rng.uniform(50, 900), latency_ms=20, packet_loss=0.001, jitter_ms=2, time_of_day=10,
        day_of_week=2) for _ in range(24)])
    link = pb.LinkState(throughput_mbps=100, rtt_ms=40, link_type=pb.LINK_TYPE_WAN, packet_loss=0.001)
    payload = pb.PayloadTraits(size_bytes=1 << 20, sample=rng.randbytes(256) + b"text " * 200)
    node = pb.NodeMetrics(error_rate=rng.choice((0.004, 0.2)), timeout_rate=0.002, latency_p50_ms=20,
                          latency_p99_ms=55, cpu_usage=0.4, memory_usage=0.45, disk_io_mbps=20)
    window = pb.ConsensusWindow(samples=[pb.ConsensusSample(
        queue_depth=5, proposals_pending=3, proposals_committed=200, latency_p50_ms=10, latency_p95_ms=20,
        latency_p99_ms=30, quorum_size=3, active_nodes=5, network_tier="tier2", dwcp_mode="datacenter",
        consensus_type="raft")] * 20)
    return [("PredictBandwidth", pb.PredictBandwidthRequest(history=history)),
            ("PredictBandwidthBatch", pb.PredictBandwidthBatchRequest(histories=[history] * 16)),
            ("SelectCompression", pb.SelectCompressionRequest(link=link, payload=payload)),
            ("SelectCompressionBatch", pb.SelectCompressionBatchRequest(
                queries=[pb.CompressionQuery(link=link, payload=payload)] * 16)),
            ("DetectAnomaly", pb.DetectAnomalyRequest(metrics=node)),
            ("DetectAnomalyBatch", pb.DetectAnomalyBatchRequest(metrics=[node] * 16)),
            ("DetectHighLatency", pb.DetectHighLatencyRequest(window=window)),
            ("DetectHighLatencyBatch", pb.DetectHighLatencyBatchRequest(windows=[window] * 16))]


def _outcome(name: str, response: Any) -> pb.ReportOutcomeRequest | None:
    if name == "PredictBandwidth":
        return pb.ReportOutcomeRequest(prediction_id=response.prediction.prediction_id,
                                       actual_network=pb.NetworkSample(bandwidth_mbps=500))
    if name == "DetectAnomaly":
        return pb.ReportOutcomeRequest(prediction_id=response.verdict.prediction_id, was_anomaly=True)
    return None


def publish_copy(repo: Path, model: str, version: str | None = None, source: str | None = None) -> Path:
    """A new version of `model` (numbered `version`, default one above the newest): a copy of version `source`
    (default the newest), by the safe publish protocol (a staging directory, then one rename)."""
    model_dir = repo / model
    newest = max((p for p in model_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    version = version or str(int(newest.name) + 1)
    staging = model_dir / f".staging-{version}"
    shutil.copytree(model_dir / source if source else newest, staging)
    meta = json.loads((staging / "metadata.json").read_text())
    meta["version"] = version
    (staging / "metadata.json").write_text(json.dumps(meta))
    os.rename(staging, model_dir / version)
    return model_dir / version


def run(minutes: float, *, interval: float = 60.0, swaps: int = 50, clients: int = 4,
        repository: Path | None = None, seed: int = 0, outcome_capacity: int = 100_000,
        warmup_seconds: float | None = None, out=print) -> dict[str, Any]:
    """Swaps are spread from `warmup_seconds` (default: a fifth of the run) to four fifths of it; memory is
    compared with the last report before the first swap."""
    from dwcp_inference.services.settings import bundled_models

    work = Path(tempfile.mkdtemp(prefix="dwcp-soak-"))
    repo = work / "repo"
    shutil.copytree(repository or bundled_models(), repo)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "dwcp_inference.commands.cli", "serve", "--repository", str(repo),
                               "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "-1", "--admin-port", "-1",
                               "--poll-seconds", "0.5", "--outcome-capacity", str(outcome_capacity)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    stop = threading.Event()
    calls = [0]

    def client(i: int) -> None:
        rng = random.Random(seed + i)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.InferenceServiceStub(ch)
            while not stop.is_set():
                name, request = rng.choice(_requests(rng))
                t0 = time.perf_counter()
                try:
                    response = getattr(stub, name)(request, timeout=10, wait_for_ready=True)
                    outcome = _outcome(name, response)
                    if outcome is not None:
                        stub.ReportOutcome(outcome, timeout=10)
                except grpc.RpcError as e:
                    with lock:
                        errors.append(f"{name}: {e.code().name}: {e.details()}")
                    continue
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    calls[0] += 1

    rows: list[dict[str, Any]] = []
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            grpc.channel_ready_future(ch).result(timeout=60)
        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
        for t in threads:
            t.start()
        total = minutes * 60.0
        started = time.monotonic()
        first = total * 0.2 if warmup_seconds is None else warmup_seconds
        swap_times = np.linspace(first, total * 0.8, swaps) if swaps else []
        done_swaps, next_report = 0, interval
        out(f"{'t (s)':>6} {'calls':>7} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} {'RSS MiB':>8} {'fds':>4} {'swaps':>5}")
        while (elapsed := time.monotonic() - started) < total:
            while done_swaps < len(swap_times) and elapsed >= swap_times[done_swaps]:
                publish_copy(repo, MODELS[done_swaps % len(MODELS)])
                done_swaps += 1
            if elapsed >= next_report or elapsed + 0.05 >= total:
                with lock:
                    lat, n, e = np.array(latencies) * 1000, calls[0], len(errors)
                    latencies.clear()
                row = {"t": round(elapsed), "calls": n, "errors": e, "swaps": done_swaps,
                       "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
                       "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
                       "rss_mib": (rss_kib(server.pid) or 0) / 1024,
                       "fds": len(os.listdir(f"/proc/{server.pid}/fd"))}
                rows.append(row)
                out(f"{row['t']:>6} {n:>7} {e:>6} {row['p50_ms'] or 0:>7.2f} {row['p99_ms'] or 0:>7.2f} "
                    f"{row['rss_mib']:>8.1f} {row['fds']:>4} {done_swaps:>5}")
                next_report += interval
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    # Memory just before the first swap (the remembered predictions have filled up by then in a long run).
    before = [r["rss_mib"] for r in rows if r["swaps"] == 0][-1] if rows[0]["swaps"] == 0 else rows[0]["rss_mib"]
    summary = {"calls": calls[0], "errors": len(errors), "first_errors": errors[:5], "swaps": done_swaps,
               "rss_before_swaps_mib": before, "rss_end_mib": rows[-1]["rss_mib"],
               "growth_pct": (rows[-1]["rss_mib"] / before - 1) * 100, "rows": rows}
    out(f"{summary['calls']} calls, {summary['errors']} errors, {done_swaps} swaps; RSS before swaps "
        f"{before:.1f} MiB, at the end {summary['rss_end_mib']:.1f} MiB ({summary['growth_pct']:+.1f}%)")
    return summary


def main(args: Any) -> int:
    summary = run(args.minutes, interval=args.interval, swaps=args.swaps, clients=args.clients,
                  repository=args.repository, outcome_capacity=args.outcome_capacity)
    if args.json:
        print(json.dumps(summary, indent=1))
    return 0 if summary["errors"] == 0 else 1
