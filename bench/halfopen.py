"""Half-open calls: a normal client's latency while another client holds calls open without ever sending the
request (headers only), against idle. Prints p50 and p99 both ways and the p99 ratio (issue 15 wants <= 3x).

    python -m dwcp_inference.bench.halfopen [--seconds 5] [--held N] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading

import grpc

from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.bench import ghz
from dwcp_inference.bench.requests import request as bench_request
from dwcp_inference.bench.suite import free_port, stop, wait_ready
from dwcp_inference.services.settings import Settings


def hold(target: str, count: int, release: threading.Event) -> tuple[grpc.Channel, list]:
    """`count` PredictBandwidth calls whose request is never sent: each streams its request from an iterator
    that blocks until `release`."""

    def never():
        release.wait()
        return
        yield

    channel = grpc.insecure_channel(target)
    call = channel.stream_unary("/dwcp.inference.v1.InferenceService/PredictBandwidth",
                                request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=pb.PredictBandwidthResponse.FromString)
    return channel, [call.future(never()) for _ in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--threads", type=int, default=Settings().threads,
                        help="the server's --threads (default %(default)s, serve's)")
    parser.add_argument("--held", type=int, default=0, help="half-open calls held (default: 4x --threads)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    held = args.held or 4 * args.threads
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "dwcp_inference.commands.cli", "serve", "--host", "127.0.0.1",
                               "--port", str(port), "--metrics-port", "-1", "--admin-port", "-1", "--poll-seconds", "0",
                               "--threads", str(args.threads)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = f"127.0.0.1:{port}"
    request = bench_request("PredictBandwidth")
    release = threading.Event()
    extra = ("--timeout", "5s")
    try:
        wait_ready(target, server)
        ghz.run(target, "PredictBandwidth", request, concurrency=1, seconds=1, extra=extra)  # warm-up
        idle = ghz.run(target, "PredictBandwidth", request, concurrency=1, seconds=args.seconds, extra=extra)
        channel, futures = hold(target, held, release)
        try:
            loaded = ghz.run(target, "PredictBandwidth", request, concurrency=1, seconds=args.seconds, extra=extra)
            still_open = sum(not f.done() for f in futures)
        finally:
            release.set()
            for f in futures:
                f.cancel()
            channel.close()
    finally:
        stop(server)
    ratio = loaded["p99_us"] / idle["p99_us"] if loaded["p99_us"] and idle["p99_us"] else None
    if args.json:
        print(json.dumps({"cores": os.cpu_count(), "held": held, "still_open": still_open, "idle": idle,
                          "half_open": loaded, "p99_ratio": ratio}, indent=1))
        return 0
    print(f"PredictBandwidth, one client in sequence, server --threads {args.threads}, {os.cpu_count()} cores")
    for name, r in (("idle", idle), (f"{held} half-open calls held ({still_open} still open)", loaded)):
        p50 = f"{r['p50_us'] / 1000:.2f}" if r["p50_us"] else "-"
        p99 = f"{r['p99_us'] / 1000:.2f}" if r["p99_us"] else "-"
        print(f"{name:<44} QPS {r['ok_qps']:>7.0f}  p50 ms {p50:>6}  p99 ms {p99:>6}  {r['statuses']}")
    print(f"p99 with half-open calls held: {ratio:.2f}x idle (target <= 3x)" if ratio else
          "no call answered OK while half-open calls were held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
