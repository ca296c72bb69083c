"""Wiring: the gRPC server with the inference servicer, health, reflection, the metrics endpoint, the
repository watcher, and the admin API on its own port."""

from __future__ import annotations

import ctypes
import gc
import logging
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dwcp_inference import MODEL_KINDS
from dwcp_inference.api import admin_pb2, admin_pb2_grpc
from dwcp_inference.api import inference_pb2 as pb

from .admin import AdminServicer
from .metrics import DriftCollector, Metrics
from .batching import BatchPolicy
from .outcomes import OutcomeTracker
from .repository import Repository
from .security import BearerToken, CertificateFiles
from .servicers import InferenceServicer, Undecodable
from .settings import Settings

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["InferenceService"].full_name
ADMIN_SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Running:
    server: grpc.Server
    port: int
    metrics_port: int | None
    admin_port: int | None
    repository: Repository
    metrics: Metrics
    health: health.HealthServicer
    admin_server: grpc.Server | None = None
    _metrics_server: Any = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _watcher: threading.Thread | None = None

    def refresh(self) -> None:
        """Bring health and the model-info gauge in line with what is loaded."""
        serving = self.repository.serving()
        policies = self.repository.policies()
        self.metrics.model_info.clear()
        for name, versions in self.repository.loaded().items():
            labels = policies[name].labels
            for version, rt in versions.items():
                tags = ",".join(sorted(lb for lb, v in labels.items() if v == version))
                self.metrics.model_info.labels(name, version, tags, f"{rt.loaded_at:.0f}").set(
                    1 if serving.get(name) is rt else 0)
        refused: dict[str, int] = {m: 0 for m in MODEL_KINDS}
        for r in self.repository.refused:
            refused[r.model] += 1
        for name, count in refused.items():
            self.metrics.refused.labels(name).set(count)
        if self._stop.is_set():
            return
        for name in MODEL_KINDS:
            self.health.set(name, SERVING if name in serving else NOT_SERVING)
        # Ready only when every model the repository holds has a verified version serving.
        try:
            present = {p.name for p in self.repository.root.iterdir() if p.is_dir() and p.name in MODEL_KINDS}
        except OSError:  # the repository is unreadable for now: judge by what is loaded
            present = set(serving)
        overall = SERVING if serving and present <= set(serving) else NOT_SERVING
        self.health.set("", overall)
        self.health.set(SERVICE_NAME, overall)

    def watch(self, every: float) -> None:
        def loop() -> None:
            trimmed = time.monotonic()
            while not self._stop.wait(every):
                try:
                    if self.repository.reload():
                        self.metrics.reloads.inc()
                        self.refresh()
                        release_memory()
                    elif time.monotonic() - trimmed > TRIM_SECONDS:
                        trim_heap()
                    else:
                        continue
                    trimmed = time.monotonic()
                except Exception:  # a scan that fails must not stop the next one
                    log.exception("repository reload failed")

        self._watcher = threading.Thread(target=loop, name="repository-watcher", daemon=True)
        self._watcher.start()

    def stop(self, grace: float | None = None) -> None:
        """Stop taking RPCs, let in-flight ones finish within `grace` seconds, then stop."""
        self._stop.set()
        for name in ("", SERVICE_NAME, *MODEL_KINDS):
            self.health.set(name, NOT_SERVING)
        if self.admin_server is not None:
            self.admin_server.stop(0)
        self.server.stop(grace).wait()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()


TRIM_SECONDS = 60.0  # how often the heap is handed back to the system when nothing else changes


def release_memory() -> None:
    """After versions are unloaded: collect them, and hand the freed heap back to the system."""
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """glibc keeps freed memory in its per-thread arenas; a server answering from 8 threads for days, and swapping
    versions, would otherwise only grow (dwcp-inference soak measures it)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def lenient_handlers(servicer: InferenceServicer) -> grpc.GenericRpcHandler:
    """The inference service's handlers, with request bytes that do not parse handed to the servicer as
    Undecodable (answered INVALID_ARGUMENT) instead of gRPC's INTERNAL."""
    service = pb.DESCRIPTOR.services_by_name["InferenceService"]
    handlers = {}
    for method in service.methods:
        request_cls = getattr(pb, method.input_type.name)
        response_cls = getattr(pb, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name), request_deserializer=_parse(request_cls),
            response_serializer=response_cls.SerializeToString)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _parse(cls: Any) -> Any:
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except DecodeError:
            return Undecodable(cls.DESCRIPTOR.full_name)

    return parse


def start(settings: Settings) -> Running:
    metrics = Metrics()
    outcomes = OutcomeTracker(metrics, settings.outcome_capacity)

    def on_version(model: str, version: str, event: str) -> None:
        metrics.loads.labels(model, event).inc()
        if event == "unloaded":
            outcomes.forget(model, version)
            metrics.forget_version(model, version)

    repo = Repository(settings.resolved_repository(), settings.session_threads, listener=on_version,
                      batching=BatchPolicy(settings.batch_max_rows, settings.batch_max_wait_us,
                                           metrics.observe_batch))
    repo.load_all()
    metrics.registry.register(DriftCollector(repo.loaded))
    options = [("grpc.max_receive_message_length", settings.max_message_bytes),
               ("grpc.max_send_message_length", settings.max_message_bytes),
               ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000)]  # clients keepalive every 30s
    # Beyond max_concurrent_rpcs (running plus queued for a worker thread) calls get RESOURCE_EXHAUSTED at once.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="rpc"),
                         options=options, maximum_concurrent_rpcs=max(settings.max_concurrent_rpcs, 1))
    server.add_generic_rpc_handlers((lenient_handlers(
        InferenceServicer(repo, outcomes, metrics, settings.max_batch, settings.max_window)),))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    tls = None
    if settings.tls_cert or settings.tls_key:
        if not (settings.tls_cert and settings.tls_key):
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        tls = CertificateFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    elif settings.tls_client_ca:
        raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
    address = f"{settings.host}:{settings.port}"
    port = server.add_secure_port(address, tls.credentials()) if tls else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {settings.host}:{settings.port}")
    running = Running(server, port, None, None, repo, metrics, health_servicer)
    running.refresh()
    if settings.admin_port >= 0:
        interceptors = [BearerToken(settings.admin_token)] if settings.admin_token else []
        admin = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="admin"),
                            interceptors=interceptors)
        def after_change() -> None:
            running.refresh()
            release_memory()

        admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(repo, outcomes, metrics, after_change),
                                                          admin)
        reflection.enable_server_reflection((ADMIN_SERVICE_NAME, reflection.SERVICE_NAME), admin)
        admin_address = f"{settings.admin_host}:{settings.admin_port}"
        running.admin_port = (admin.add_secure_port(admin_address, tls.credentials()) if tls
                              else admin.add_insecure_port(admin_address))
        if running.admin_port == 0:
            raise OSError(f"cannot listen on {settings.admin_host}:{settings.admin_port} (admin)")
        running.admin_server = admin
        admin.start()
    if settings.metrics_port >= 0:
        running._metrics_server, _ = metrics.serve(settings.metrics_port, settings.metrics_host)
        running.metrics_port = running._metrics_server.server_port
    server.start()
    if settings.poll_seconds > 0:
        running.watch(settings.poll_seconds)
    log.info("serving %s on %s:%d (metrics on %s, admin on %s), models: %s", SERVICE_NAME, settings.host, port,
             running.metrics_port, running.admin_port, {m: rt.version for m, rt in repo.serving().items()})
    return running


def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain in-flight RPCs for up to grace_seconds."""
    running = start(settings)
    print(f"dwcp-inference serving on {settings.host}:{running.port}"
          + (f", metrics on :{running.metrics_port}/metrics" if running.metrics_port else "")
          + (f", admin on {settings.admin_host}:{running.admin_port}" if running.admin_port else ""), flush=True)
    done = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: draining for up to %.0fs", signum, settings.grace_seconds)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    done.wait()
    running.stop(settings.grace_seconds)
    print("dwcp-inference stopped", flush=True)
