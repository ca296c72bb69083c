"""Overload: a server is driven at 4x the load it can carry, then back to normal. Prints what it admits and the
p99 of what it admits, what it sheds, and how fast it recovers.

    python -m dwcp_inference.bench.overload [--seconds 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.bench import ghz


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--max-concurrent-rpcs", type=int, default=None, help="the server's admission bound "
                        "(default: the server's default)")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "dwcp_inference.cli", "serve", "--host", "127.0.0.1", "--port",
                               str(port), "--metrics-port", "-1", "--admin-port", "-1", "--poll-seconds", "0",
                               *(["--max-concurrent-rpcs", str(args.max_concurrent_rpcs)]
                                 if args.max_concurrent_rpcs else [])],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = f"127.0.0.1:{port}"
    history = pb.LinkHistory(samples=[pb.NetworkSample(bandwidth_mbps=500 + i, latency_ms=20, packet_loss=0.001,
                                                       jitter_ms=2, time_of_day=10, day_of_week=2) for i in range(24)])
    request = pb.PredictBandwidthRequest(history=history)
    try:
        time.sleep(3)
        ghz.run(target, "PredictBandwidth", request, concurrency=4, seconds=2)  # warm-up
        steps = {}
        steps["capacity (16 in flight)"] = ghz.run(target, "PredictBandwidth", request, concurrency=16,
                                                   seconds=args.seconds)
        capacity = steps["capacity (16 in flight)"]["ok_qps"]
        steps["4x capacity offered (512 in flight)"] = ghz.run(target, "PredictBandwidth", request, concurrency=512,
                                                               seconds=args.seconds, rps=int(4 * capacity))
        steps["recovery (16 in flight)"] = ghz.run(target, "PredictBandwidth", request, concurrency=16,
                                                   seconds=args.seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)
    if args.json:
        print(json.dumps({"cores": os.cpu_count(), "steps": steps}, indent=1))
        return 0
    print(f"PredictBandwidth on one server process, {os.cpu_count()} cores, ghz as the load generator")
    print(f"{'step':<38} {'offered/s':>9} {'admitted/s':>10} {'p50 ms':>7} {'p99 ms':>7}  statuses")
    for name, r in steps.items():
        offered = f"{r['offered_rps']}" if r["offered_rps"] else "-"
        print(f"{name:<38} {offered:>9} {r['ok_qps']:>10.0f} {r['p50_us'] / 1000:>7.2f} {r['p99_us'] / 1000:>7.2f}"
              f"  {r['statuses']}")
    cap, over, rec = steps.values()
    print(f"under 4x load the admitted p99 is {over['p99_us'] / cap['p99_us']:.1f}x the p99 at capacity; after it, "
          f"QPS is {rec['ok_qps'] / cap['ok_qps']:.2f}x and p99 {rec['p99_us'] / cap['p99_us']:.2f}x of before")
    return 0


if __name__ == "__main__":
    sys.exit(main())
