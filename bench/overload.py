"""Overload: a server is driven at 4x the load it can carry, then back to normal. Prints what it admits and the
p99 of what it admits, what it sheds, and how fast it recovers.

    python -m dwcp_inference.bench.overload [--seconds 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from dwcp_inference.bench import ghz
from dwcp_inference.bench.requests import request as bench_request
from dwcp_inference.bench.suite import free_port, stop, wait_ready


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--max-concurrent-rpcs", type=int, default=None, help="the server's admission bound "
                        "(default: the server's default)")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "dwcp_inference.commands.cli", "serve", "--host", "127.0.0.1",
                               "--port", str(port), "--metrics-port", "-1", "--admin-port", "-1", "--poll-seconds", "0",
                               *(["--max-concurrent-rpcs", str(args.max_concurrent_rpcs)]
                                 if args.max_concurrent_rpcs else [])],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = f"127.0.0.1:{port}"
    request = bench_request("PredictBandwidth")
    try:
        wait_ready(target, server)
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
        stop(server)
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
