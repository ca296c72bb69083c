"""The Python floor: a bare grpcio servicer (sync, the thread count ours uses) that parses each request and
returns a canned response of the size ours returns for it. No model, no features, no metrics: what Python's
gRPC layer alone costs per call.

    python -m dwcp_inference.bench.floor_python --port 50071 [--threads 8] [--aio [--uvloop]]

`--aio`: a grpc.aio server answering on its event loop instead (no thread hop), `--uvloop` on uvloop's loop:
what grpc.aio's Python side costs against the sync server's, without our code.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from concurrent import futures
from typing import Any

import grpc

from dwcp_inference.api import inference_pb2_grpc as pb_grpc

from .requests import BATCH_FORMS, method, request


class _Context:
    """Enough of grpc.ServicerContext for our servicer to answer one call in-process."""

    def time_remaining(self) -> None:
        return None

    def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"{code}: {details}")


def _our_answers(repo: Any = None) -> Any:
    """Our servicer (on the bundled models unless given a repository), to make the canned responses."""
    from dwcp_inference.services.metrics import Metrics
    from dwcp_inference.services.outcomes import OutcomeTracker
    from dwcp_inference.services.repository import Repository
    from dwcp_inference.services.servicers import InferenceServicer
    from dwcp_inference.services.settings import bundled_models

    if repo is None:
        repo = Repository(bundled_models())
        repo.load_all()
    metrics = Metrics()
    return InferenceServicer(repo, OutcomeTracker(metrics), metrics, 1024)


MODELS = {"PredictBandwidth": "bandwidth_predictor", "SelectCompression": "compression_selector",
          "DetectAnomaly": "reliability_detector", "DetectHighLatency": "consensus_latency"}


class _Capture:
    """Stands in for a version's onnxruntime session for one call, keeping what it was asked to run."""

    def __init__(self, session: Any):
        self.session, self.calls = session, []

    def run(self, names: Any, feed: Any, *args: Any) -> Any:
        self.calls.append((names, feed))
        return self.session.run(names, feed, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def model_input(servicer: Any, case: str, batch: int) -> tuple[Any, list[str], dict[str, Any]]:
    """(the onnxruntime session, its output names, its input feed) our servicer runs for the benchmark request of
    `case`: the model alone (with its features when the version holds them in its graph), what the in-process row
    runs and what the peer is sent."""
    rpc = method(case)
    rt = servicer.repo.get(MODELS[rpc])
    session = rt.session
    capture = rt.session = _Capture(session)
    try:
        getattr(servicer, rpc if batch == 1 else BATCH_FORMS[rpc])(request(case, batch), _Context())
    finally:
        rt.session = session
    names, feed = capture.calls[-1]
    return session, list(names), dict(feed)


class Floor(pb_grpc.InferenceServiceServicer):
    def __init__(self) -> None:
        self._ours = _our_answers()
        self._lock = threading.Lock()
        self._canned: dict[tuple[str, int], Any] = {}
        for rpc, batch_rpc in BATCH_FORMS.items():
            self._canned[(rpc, 1)] = getattr(self._ours, rpc)(request(rpc), _Context())
            for n in (16, 64):
                self._canned[(batch_rpc, n)] = getattr(self._ours, batch_rpc)(request(rpc, n), _Context())

    def _answer(self, rpc: str, n: int) -> Any:
        answer = self._canned.get((rpc, n))
        if answer is None:  # another batch size: made once
            single = next(k for k, v in BATCH_FORMS.items() if v == rpc)
            with self._lock:
                answer = self._canned[(rpc, n)] = getattr(self._ours, rpc)(request(single, n), _Context())
        return answer

    def PredictBandwidth(self, request, context):
        return self._canned[("PredictBandwidth", 1)]

    def PredictBandwidthBatch(self, request, context):
        return self._answer("PredictBandwidthBatch", len(request.histories))

    def SelectCompression(self, request, context):
        return self._canned[("SelectCompression", 1)]

    def SelectCompressionBatch(self, request, context):
        return self._answer("SelectCompressionBatch", len(request.queries))

    def DetectAnomaly(self, request, context):
        return self._canned[("DetectAnomaly", 1)]

    def DetectAnomalyBatch(self, request, context):
        return self._answer("DetectAnomalyBatch", len(request.metrics))

    def DetectHighLatency(self, request, context):
        return self._canned[("DetectHighLatency", 1)]

    def DetectHighLatencyBatch(self, request, context):
        return self._answer("DetectHighLatencyBatch", len(request.windows))


def _on_the_loop(floor: Floor) -> Any:
    """The floor's methods as coroutines, for a grpc.aio server (a sync method would need a thread pool)."""
    class AsyncFloor(pb_grpc.InferenceServiceServicer):
        pass

    for name in (*BATCH_FORMS, *BATCH_FORMS.values()):
        async def handler(self: Any, request: Any, context: Any, _sync: Any = getattr(floor, name)) -> Any:
            return _sync(request, context)

        setattr(AsyncFloor, name, handler)
    return AsyncFloor()


async def _serve_aio(address: str) -> None:
    server = grpc.aio.server()
    pb_grpc.add_InferenceServiceServicer_to_server(_on_the_loop(Floor()), server)
    server.add_insecure_port(address)
    await server.start()
    print("serving", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--aio", action="store_true", help="a grpc.aio server answering on its loop")
    parser.add_argument("--uvloop", action="store_true", help="with --aio: on uvloop's event loop")
    args = parser.parse_args()
    if args.aio:
        if args.uvloop:
            import uvloop  # only for this comparison

            uvloop.run(_serve_aio(f"{args.host}:{args.port}"))
        else:
            asyncio.run(_serve_aio(f"{args.host}:{args.port}"))
        return
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.threads))
    pb_grpc.add_InferenceServiceServicer_to_server(Floor(), server)
    server.add_insecure_port(f"{args.host}:{args.port}")
    server.start()
    print("serving", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
