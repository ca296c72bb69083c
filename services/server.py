"""Wiring: the gRPC server with the inference servicer, health, reflection and the metrics endpoint."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dwcp_inference import MODEL_KINDS
from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc

from .metrics import Metrics
from .outcomes import OutcomeTracker
from .repository import Repository
from .servicers import InferenceServicer
from .settings import Settings

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["InferenceService"].full_name


@dataclass
class Running:
    server: grpc.Server
    port: int
    metrics_port: int | None
    repository: Repository
    metrics: Metrics
    health: health.HealthServicer
    _metrics_server: Any = None

    def stop(self, grace: float | None = None) -> None:
        """Stop taking RPCs, let in-flight ones finish within `grace` seconds, then stop."""
        for name in ("", SERVICE_NAME, *MODEL_KINDS):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.stop(grace).wait()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()


def start(settings: Settings) -> Running:
    repo = Repository(settings.resolved_repository(), settings.session_threads)
    repo.load_all()
    metrics = Metrics()
    _record_models(repo, metrics)
    options = [("grpc.max_receive_message_length", settings.max_message_bytes),
               ("grpc.max_send_message_length", settings.max_message_bytes)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=settings.workers,
                                                    thread_name_prefix="rpc"), options=options)
    pb_grpc.add_InferenceServiceServicer_to_server(
        InferenceServicer(repo, OutcomeTracker(metrics), metrics, settings.max_batch), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise OSError(f"cannot listen on {settings.host}:{settings.port}")
    serving = repo.serving()
    for name in MODEL_KINDS:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING if name in serving
                            else health_pb2.HealthCheckResponse.NOT_SERVING)
    overall = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    health_servicer.set("", overall)
    health_servicer.set(SERVICE_NAME, overall)
    metrics_server, metrics_port = None, None
    if settings.metrics_port >= 0:
        metrics_server, _ = metrics.serve(settings.metrics_port, settings.metrics_host)
        metrics_port = metrics_server.server_port
    server.start()
    log.info("serving %s on %s:%d (metrics on %s), models: %s", SERVICE_NAME, settings.host, port, metrics_port,
             {m: rt.version for m, rt in serving.items()})
    return Running(server, port, metrics_port, repo, metrics, health_servicer, metrics_server)


def _record_models(repo: Repository, metrics: Metrics) -> None:
    serving = repo.serving()
    for name, versions in repo.loaded().items():
        for version, rt in versions.items():
            default = serving.get(name) is rt
            metrics.model_info.labels(name, version, f"{rt.loaded_at:.0f}").set(1 if default else 0)
            metrics.loads.labels(name, "loaded").inc()
    for refusal in repo.refused:
        metrics.loads.labels(refusal.model, "refused").inc()


def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain in-flight RPCs for up to grace_seconds."""
    running = start(settings)
    print(f"dwcp-inference serving on {settings.host}:{running.port}"
          + (f", metrics on :{running.metrics_port}/metrics" if running.metrics_port else ""), flush=True)
    done = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: draining for up to %.0fs", signum, settings.grace_seconds)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    done.wait()
    running.stop(settings.grace_seconds)
    print("dwcp-inference stopped", flush=True)
