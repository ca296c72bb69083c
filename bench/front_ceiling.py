"""The native front's transport ceiling: the Front (native/src/front/) with one Python thread answering a canned
response at once, against a sync grpcio server answering the same canned bytes; ghz on its own core, each server
pinned to core 0. No model work: what each transport alone allows.

    python -m dwcp_inference.bench.front_ceiling [--seconds 2] [--concurrency 64] [--io-threads 1]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
from concurrent import futures

import grpc

from dwcp_inference.api import inference_pb2 as pb

from . import ghz
from .requests import request
from .suite import pinned

PATH = "/dwcp.inference.v1.InferenceService/PredictBandwidth"
CANNED = pb.PredictBandwidthResponse(prediction=pb.BandwidthPrediction(predicted_bandwidth_mbps=512.0),
                                     model=pb.ModelRef(name="bandwidth_predictor", version="1")).SerializeToString()


def serve_front(port: int, io_threads: int) -> None:
    import dwcp_inference_native as native

    front = native.Front("127.0.0.1", port, [PATH], 1, "unused", 100_000, 4 << 20, 1000, 0, 0, False,
                         io_threads=io_threads)
    print("serving", flush=True)
    while True:
        for call_id, *_ in front.take(256, 1.0):
            front.answer(call_id, CANNED)


def serve_grpcio(port: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    canned = grpc.unary_unary_rpc_method_handler(lambda request, context: CANNED)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "dwcp.inference.v1.InferenceService", {"PredictBandwidth": canned})])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("serving", flush=True)
    threading.Event().wait()


def measure(kind: str, args: argparse.Namespace) -> float:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([*pinned(0), sys.executable, "-m", __spec__.name, "--serve", kind, "--port", str(port),
                               "--io-threads", str(args.io_threads)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "serving"
        result = ghz.run(f"127.0.0.1:{port}", "PredictBandwidth", request("PredictBandwidth"),
                         concurrency=args.concurrency, seconds=args.seconds, prefix=pinned(1))
    finally:
        server.kill()
        server.wait()
    print(f"{kind:7s} {result['ok_qps']:9.0f} calls/s  p50 {result['p50_us']:7.0f} us  statuses {result['statuses']}")
    return result["ok_qps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--io-threads", type=int, default=1, help="the front's tokio worker threads")
    parser.add_argument("--serve", choices=["front", "grpcio"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "front":
        return serve_front(args.port, args.io_threads)
    if args.serve == "grpcio":
        return serve_grpcio(args.port)
    grpcio = measure("grpcio", args)
    front = measure("front", args)
    print(f"front / sync grpcio: {front / grpcio:.2f}x")


if __name__ == "__main__":
    main()
