"""The inference port's native front (native/src/front: Rust, tokio and hyper): it owns the port, TLS and HTTP/2,
admits the inference calls and hands their request bytes to Python worker threads in batches; every other call
(health, reflection, ReportOutcome, model distribution, V2) it forwards to the grpc.aio server on loopback
(server.py), which accepts only calls carrying the front's token. Chosen by --front (auto: native when the
extension has it); the grpc.aio transport (transport.py) serves the port itself otherwise.

A worker takes every call queued, up to `coalesce_max`: the single calls of one RPC go to the servicer's `many`
(computed as one batch), a call alone and the batch forms to the servicer's method, as the grpc.aio transport's
coalescer does."""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import grpc

from dwcp_inference.api import inference_pb2 as pb

from .decode import NATIVE_MODULE, Decoder, native_module
from .metrics import Metrics
from .security import CertificateFiles, metadata_is
from .servicers import COALESCED, InferenceServicer
from .transport import Aborted, CallContext, run_alone

log = logging.getLogger(__name__)
CHOICES = ("auto", "native", "grpcio")
TOKEN_HEADER = "x-dwcp-front"  # the front adds it to each call it forwards; callers' own are removed
TAKE_SECONDS = 0.5             # a worker's longest wait for calls (then it looks for the stop and counts)
TLS_CHECK_SECONDS = 0.5        # how often the certificate files are looked at for a rotation


@dataclass(frozen=True)
class Choice:
    """The transport serving the inference port: native (the front) or grpcio, why, and the extension."""

    name: str
    reason: str
    module: Any = None


def choose(setting: str = "auto") -> Choice:
    """auto: native when the extension has the front, else grpcio; native: the front or an error; grpcio."""
    if setting not in CHOICES:
        raise ValueError(f"--front: expected one of {list(CHOICES)}, got {setting!r}")
    if setting == "grpcio":
        return Choice("grpcio", "chosen")
    module = native_module()
    if module is not None and hasattr(module, "Front"):
        return Choice("native", "chosen" if setting == "native" else "auto: the extension is installed", module)
    why = f"the extension {NATIVE_MODULE} is not installed (pip install ./native needs cargo)" if module is None \
        else f"the installed {NATIVE_MODULE} has no front (reinstall ./native)"
    if setting == "native":
        raise ValueError(f"--front native: {why}")
    return Choice("grpcio", f"auto: {why}")


class TokenCheck(grpc.aio.ServerInterceptor):
    """On the loopback server behind the front: calls without the front's token are refused (UNAUTHENTICATED), so
    another local process cannot go around the front's TLS and admission."""

    def __init__(self, token: str):
        self.token = token.encode()

    async def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        if metadata_is(details, TOKEN_HEADER, self.token):
            return await continuation(details)

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "this port takes calls from the front only")

        return grpc.unary_unary_rpc_method_handler(deny)


def new_token() -> str:
    return secrets.token_hex(16)


class Method(NamedTuple):
    """One inference RPC the front answers: how its bytes become a request and its answer bytes."""

    name: str
    method: Callable                 # servicer.Name(request, context)
    many: Callable | None            # servicer.many for single RPCs computed together
    deserialize: Callable[[bytes], Any]
    serialize: Callable[[Any], bytes]


def methods(servicer: InferenceServicer, decoder: Decoder) -> list[Method]:
    service = pb.DESCRIPTOR.services_by_name["InferenceService"]
    found = []
    for m in service.methods:
        many = (lambda requests, contexts, name=m.name: servicer.many(name, requests, contexts)) \
            if m.name in COALESCED else None
        found.append(Method(m.name, getattr(servicer, m.name), many,
                            decoder.deserializer(getattr(pb, m.input_type.name)),
                            decoder.serializer(getattr(pb, m.output_type.name))))
    return found


def path(method: Method) -> str:
    return f"/{pb.DESCRIPTOR.services_by_name['InferenceService'].full_name}/{method.name}"


class NativeFront:
    """The front on the inference port and its Python workers. `stop` drains: the front stops taking calls and
    answers those in flight (the workers still take queued ones) for up to `grace` seconds."""

    def __init__(self, choice: Choice, servicer: InferenceServicer, decoder: Decoder, metrics: Metrics,
                 host: str, port: int, upstream_port: int, token: str, *, threads: int, coalesce_max: int,
                 max_admitted: int, max_message_bytes: int, max_streams: int, max_age_ms: int,
                 max_age_grace_ms: int, tls: CertificateFiles | None):
        self.methods = methods(servicer, decoder)
        self.metrics = metrics
        self.max_calls = max(1, min(coalesce_max, servicer.max_batch))
        self.tls = tls
        self._tls_generation = tls.generation if tls else None
        self._stopped = threading.Event()
        self.front = choice.module.Front(
            host, port, [path(m) for m in self.methods], upstream_port, token, max_admitted, max_message_bytes,
            max_streams, max_age_ms, max_age_grace_ms, True, tls.pems() if tls else None)
        self.port, self.upstream_port = self.front.port, upstream_port
        self._threads = [threading.Thread(target=self._work, name=f"rpc-{i}", daemon=True) for i in range(threads)]
        if tls is not None:
            self._threads.append(threading.Thread(target=self._follow_certificates, name="front-tls", daemon=True))
        for t in self._threads:
            t.start()

    def stop(self, grace: float | None) -> None:
        self.front.stop(grace or 0.0)
        self._stopped.set()
        for t in self._threads:
            t.join(TAKE_SECONDS * 4)

    def _work(self) -> None:
        while not self._stopped.is_set():
            try:
                calls = self.front.take(self.max_calls, TAKE_SECONDS)
                self._count_front_answers()
                if calls:
                    self._compute(calls)
            except Exception:  # noqa: BLE001 - a worker never dies; its calls were failed in _compute
                log.exception("native front worker")

    def _compute(self, calls: list[tuple[int, int, bytes, float | None]]) -> None:
        """The calls taken, grouped by RPC in arrival order; each answered (or failed) to the front."""
        groups: dict[int, list] = {}
        for call in calls:
            groups.setdefault(call[1], []).append(call)
        for index, group in groups.items():
            method = self.methods[index]
            ids = [call[0] for call in group]
            try:
                requests = [method.deserialize(call[2]) for call in group]
                contexts = [CallContext(call[3]) for call in group]
                if len(group) > 1 and method.many is not None:
                    results = method.many(requests, contexts)
                else:
                    results = [run_alone(method.method, r, c) for r, c in zip(requests, contexts)]
            except BaseException as e:  # noqa: BLE001 - every caller is answered
                results = [e] * len(group)
            for call_id, result in zip(ids, results):
                self._reply(method, call_id, result)

    def _reply(self, method: Method, call_id: int, result: Any) -> None:
        if isinstance(result, Aborted):
            self.front.fail(call_id, result.code.value[0], result.details)
        elif isinstance(result, BaseException):
            log.error("%s failed", method.name, exc_info=result)
            self.front.fail(call_id, grpc.StatusCode.INTERNAL.value[0],
                            f"{method.name}: internal error, see the server log")
        else:
            try:
                self.front.answer(call_id, method.serialize(result))
            except Exception:  # noqa: BLE001
                log.exception("%s: the answer could not be serialized", method.name)
                self.front.fail(call_id, grpc.StatusCode.INTERNAL.value[0],
                                f"{method.name}: internal error, see the server log")

    def _count_front_answers(self) -> None:
        """Calls the front answered itself (over the admission bound, expired while queued): counted as the
        grpc.aio transport counts them."""
        for index, code, count in self.front.events():
            self.metrics.child(self.metrics.requests, self.methods[index].name, code).inc(count)

    def _follow_certificates(self) -> None:
        """A rotated certificate (CertificateFiles reads and checks it) is handed to the front for the next
        handshakes; a bad pair is refused there too and the current one kept."""
        while not self._stopped.wait(TLS_CHECK_SECONDS):
            generation, _ = self.tls.latest()
            if generation == self._tls_generation:
                continue
            self._tls_generation = generation
            try:
                self.front.set_tls(*self.tls.pems())
            except ValueError as e:
                log.warning("the front refused the rotated TLS certificate, keeping the current one: %s", e)
