"""Wiring: the gRPC server with the inference servicer, health, reflection, the metrics endpoint, the
repository watcher, the admin API on its own port, and optionally a plaintext health-only port for probes.

The inference port is a grpc.aio server on its own event loop (transport.py): a call costs no thread until its
request arrives, inference calls are admitted by our own bound, and health is answered on the loop, never shed."""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dwcp_inference import MODEL_KINDS
from dwcp_inference.api import admin_pb2, admin_pb2_grpc
from dwcp_inference.api import inference_pb2 as pb

from .admin import AdminServicer
from . import distribution, front, v2
from .metrics import DriftCollector, Metrics
from .batching import BatchPolicy
from .outcomes import from_settings as outcomes_from_settings
from .shadow import Shadow
from .repository import Repository
from .security import BearerToken, CertificateFiles
from .decode import Decoder, choose as choose_decoder
from .servicers import COALESCED, InferenceServicer
from .settings import Settings
from .transport import Admission, LoopThread, SharedHealth, threaded_handler

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["InferenceService"].full_name
ADMIN_SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
# SERVING from start until shutdown, whatever the models: what a liveness probe asks (restarting a pod whose
# repository has no good version would not give it one).
LIVENESS = "liveness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Running:
    server: grpc.aio.Server
    port: int
    metrics_port: int | None
    admin_port: int | None
    repository: Repository
    metrics: Metrics
    health: SharedHealth
    loop: LoopThread | None = None       # runs `server` and `health_server`
    pool: futures.ThreadPoolExecutor | None = None  # computes the inference calls
    health_port: int | None = None
    health_server: grpc.aio.Server | None = None
    admin_server: grpc.Server | None = None
    _metrics_server: Any = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _watcher: threading.Thread | None = None
    distribution: distribution.ModelDistribution | None = None  # GetModel, WatchModels on the inference port
    front: front.NativeFront | None = None  # the native front on the inference port (then `server` is behind it)

    def refresh(self) -> None:
        """Bring health and the model-info gauge in line with what is loaded."""
        serving = self.repository.serving()
        policies = self.repository.policies()
        self.metrics.show_versions(self.repository.loaded(), policies, serving)
        refused: dict[str, int] = {m: 0 for m in MODEL_KINDS}
        for r in self.repository.refused:
            refused[r.model] += 1
        for name, count in refused.items():
            self.metrics.refused.labels(name).set(count)
        if self.distribution is not None:
            self.distribution.notify()
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
        self.health.set(LIVENESS, SERVING)

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
        for name in ("", SERVICE_NAME, LIVENESS, *MODEL_KINDS):
            self.health.set(name, NOT_SERVING)
        if self.admin_server is not None:
            self.admin_server.stop(0)
        if self.loop is not None:
            if self.distribution is not None:  # watches end first (told to reconnect): they would hold the drain
                self.loop.run(self.distribution.close())
            if self.front is not None:
                self.front.stop(grace)
            self.loop.run(self._stop_servers(grace))
            self.loop.close()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()

    async def _stop_servers(self, grace: float | None) -> None:
        # The health port answers NOT_SERVING until the inference port has drained.
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)


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


def lenient_handlers(servicer: InferenceServicer, pool: futures.Executor, admission: Admission,
                     metrics: Metrics, decoder: Decoder | None = None,
                     coalesce_max: int = 1) -> grpc.GenericRpcHandler:
    """The inference service's async handlers (each admits its call, then runs the servicer's method in `pool`),
    requests decoded by `decoder` (decode.py: native or python), with request bytes that do not parse handed to
    the servicer as Undecodable (answered INVALID_ARGUMENT) instead of gRPC's INTERNAL. The single inference RPCs'
    calls that wait together are computed together, up to `coalesce_max` (transport.Coalescer; 1: never)."""
    decoder = decoder or Decoder("python", "chosen")
    service = pb.DESCRIPTOR.services_by_name["InferenceService"]
    handlers = {}
    for method in service.methods:
        request_cls = getattr(pb, method.input_type.name)
        response_cls = getattr(pb, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            threaded_handler(method.name, getattr(servicer, method.name), pool, admission, metrics,
                             many=functools.partial(servicer.many, method.name) if method.name in COALESCED else None,
                             max_calls=min(coalesce_max, servicer.max_batch)),
            request_deserializer=decoder.deserializer(request_cls),
            response_serializer=decoder.serializer(response_cls))  # the native path answers bytes
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def start(settings: Settings) -> Running:
    decoder = choose_decoder(settings.decoder)
    transport = front.choose(settings.front)
    metrics = Metrics()
    metrics.decoder_info.labels(decoder.name).set(1)
    metrics.front_info.labels(transport.name).set(1)
    outcomes = outcomes_from_settings(metrics, settings)

    def on_version(model: str, version: str, event: str) -> None:
        metrics.loads.labels(model, event).inc()
        if event == "unloaded":
            outcomes.forget(model, version)
            if getattr(outcomes, "shadow", None) is not None:
                outcomes.shadow.forget(model, version)
            metrics.forget_version(model, version)

    repo = Repository(settings.resolved_repository(), settings.session_threads, listener=on_version,
                      batching=BatchPolicy(settings.batch_max_rows, settings.batch_max_wait_us,
                                           metrics.observe_batch), state_dir=settings.state_dir)
    repo.load_all()
    outcomes.shadow = Shadow(repo, metrics, settings.shadow_fraction)  # the candidate beside the champion
    metrics.registry.register(DriftCollector(repo.loaded))
    tls = None
    if settings.tls_cert or settings.tls_key:
        if not (settings.tls_cert and settings.tls_key):
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        tls = CertificateFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    elif settings.tls_client_ca:
        raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
    loop = LoopThread()
    pool = futures.ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="rpc")
    try:
        health_state = SharedHealth(loop)
        servicer = InferenceServicer(repo, outcomes, metrics, settings.max_batch, settings.max_window)
        admission = Admission(settings.max_concurrent_rpcs)  # inference calls and GetModel streams
        handlers = lenient_handlers(servicer, pool, admission, metrics, decoder, settings.coalesce_max)
        distributor = distribution.ModelDistribution(repo, metrics, admission, settings.max_watchers, loop.loop,
                                                     distribution.chunk_size(settings.max_message_bytes))
        v2_handlers = v2.handlers(repo, servicer, health_state, pool, admission, metrics)  # docs/v2.md
        all_handlers = (handlers, distribution.handlers(distributor), v2_handlers)
        if transport.name == "native":  # the grpc.aio server on loopback, behind the front
            token = front.new_token()
            server, port = loop.run(_inference_server(settings, all_handlers, health_state, None,
                                                      address="127.0.0.1:0", interceptors=[front.TokenCheck(token)]))
        else:
            server, port = loop.run(_inference_server(settings, all_handlers, health_state, tls))
        running = Running(server, port, None, None, repo, metrics, health_state, loop, pool,
                          distribution=distributor)
        if settings.health_port >= 0:
            running.health_server, running.health_port = loop.run(_health_server(settings, health_state))
    except BaseException:
        loop.close()
        pool.shutdown(wait=False)
        raise
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
        running._metrics_server, _ = metrics.serve(settings.metrics_port, settings.metrics_host,
                                                   health=lambda service: health_state.get(service) == SERVING,
                                                   loaded=repo.loaded)
        running.metrics_port = running._metrics_server.server_port
    loop.run(server.start())
    if transport.name == "native":
        try:
            running.front = front.NativeFront(
                transport, servicer, decoder, metrics, settings.host, settings.port, port, token,
                threads=settings.threads, coalesce_max=settings.coalesce_max,
                max_admitted=settings.max_concurrent_rpcs, max_message_bytes=settings.max_message_bytes,
                max_streams=MAX_STREAMS_PER_CONNECTION, max_age_ms=MAX_CONNECTION_AGE_MS,
                max_age_grace_ms=MAX_CONNECTION_AGE_GRACE_MS, tls=tls)
        except BaseException:
            running.stop(0)
            raise
        running.port = running.front.port
    if running.health_server is not None:
        loop.run(running.health_server.start())
    if settings.poll_seconds > 0:
        running.watch(settings.poll_seconds)
    models = {m: rt.version for m, rt in repo.serving().items()}
    log.info("serving %s on %s:%d (metrics on %s, admin on %s, health on %s; %s decoder, %s; %s front, %s), "
             "models: %s", SERVICE_NAME, settings.host, running.port, running.metrics_port, running.admin_port,
             running.health_port, decoder.name, decoder.reason, transport.name, transport.reason,
             " ".join(f"{m}={v}" for m, v in models.items()),
             extra={"models": models, "decoder": decoder.name, "front": transport.name})
    log.info("single calls: %s", f"those waiting together computed as one batch, up to {settings.coalesce_max} "
             "(--coalesce-max)" if settings.coalesce_max > 1 else "computed one by one (--coalesce-max 1)",
             extra={"coalesce_max": settings.coalesce_max})
    return running


# Per connection, calls open at once: 4x the 64 that ghz and the Go client multiplex on one connection. A client
# holding half-open calls (headers, never the request) costs a stream each, no thread (transport.py); this bounds
# how many one connection can hold, and connection age bounds for how long.
MAX_STREAMS_PER_CONNECTION = 256
# After 30 min a connection is asked to go away (clients reconnect transparently); calls still open 1 min later
# (such as half-open ones) are cut. Also spreads long-lived clients over replicas.
MAX_CONNECTION_AGE_MS = 30 * 60 * 1000
MAX_CONNECTION_AGE_GRACE_MS = 60 * 1000


async def _inference_server(settings: Settings, handlers: tuple[grpc.GenericRpcHandler, ...],
                            health_state: SharedHealth, tls: CertificateFiles | None, address: str | None = None,
                            interceptors: list | None = None) -> tuple[grpc.aio.Server, int]:
    """Made on the loop. No maximum_concurrent_rpcs: gRPC's would count health calls and shed them with the rest;
    inference calls are admitted by the handlers instead. `address`: the inference port's unless given (the
    loopback one behind the native front)."""
    options = [("grpc.max_receive_message_length", settings.max_message_bytes),
               ("grpc.max_send_message_length", settings.max_message_bytes),
               ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),  # clients keepalive every 30s
               ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
               ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
               ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS)]
    server = grpc.aio.server(options=options, interceptors=interceptors)
    server.add_generic_rpc_handlers(handlers)
    health_pb2_grpc.add_HealthServicer_to_server(health_state.servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, distribution.SERVICE_NAME, v2.SERVICE_NAME,
         health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    address = address or f"{settings.host}:{settings.port}"
    return server, _bound(server, address, tls)


async def _health_server(settings: Settings, health_state: SharedHealth) -> tuple[grpc.aio.Server, int]:
    """grpc.health.v1 alone, plaintext, for probes that cannot speak TLS (Kubernetes' grpc probes)."""
    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 16)])
    health_pb2_grpc.add_HealthServicer_to_server(health_state.servicer, server)
    return server, _bound(server, f"{settings.health_host}:{settings.health_port}", None, "health")


def _bound(server: grpc.aio.Server, address: str, tls: CertificateFiles | None, what: str = "") -> int:
    try:
        port = server.add_secure_port(address, tls.credentials()) if tls else server.add_insecure_port(address)
    except RuntimeError:  # grpc.aio raises where the sync server returns 0
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {address}" + (f" ({what})" if what else ""))
    return port


def serve(settings: Settings, ready: Callable[[], None] | None = None) -> None:
    """Run until SIGTERM or SIGINT, then drain in-flight RPCs for up to grace_seconds. `ready` is called once
    serving (the supervisor of `--workers` tells a worker that failed at start from one that died later)."""
    running = start(settings)
    print(f"dwcp-inference serving on {settings.host}:{running.port}"
          + (f", metrics on :{running.metrics_port}/metrics" if running.metrics_port else "")
          + (f", admin on {settings.admin_host}:{running.admin_port}" if running.admin_port else "")
          + (f", health on {settings.health_host}:{running.health_port}" if running.health_port else ""), flush=True)
    if ready is not None:
        ready()
    done = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: draining for up to %.0fs", signum, settings.grace_seconds)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    done.wait()
    running.stop(settings.grace_seconds)
    print("dwcp-inference stopped", flush=True)
