"""The native gRPC front (native/src/front/), driven raw from Python: a thread takes its calls and answers them, a
small sync grpcio server is its upstream, grpcio clients call it over real loopback sockets."""

from __future__ import annotations

import os
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager

import dwcp_inference_native as native  # pip install ./native
import grpc
import pytest
import trustme
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from dwcp_inference.api import inference_pb2 as pb

from .conftest import free_port
from .samples import link_history


SERVICE = "/dwcp.inference.v1.InferenceService"
PREDICT = f"{SERVICE}/PredictBandwidth"
METHODS = [PREDICT, f"{SERVICE}/SelectCompression"]
ECHO, COUNT, CHAT = "/test.Upstream/Echo", "/test.Upstream/Count", "/test.Upstream/Chat"
TOKEN = "front-secret"
HANG_GUARD = 10  # seconds: only ever reached when something hangs


class Upstream:
    """A sync grpcio server with a unary and a server-streaming method and health; it records what it saw."""

    def __init__(self, port: int = 0, options: list | None = None) -> None:
        self.seen: list[dict[str, list[str]]] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(8), options=options)
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(self._echo),
            "Count": grpc.unary_stream_rpc_method_handler(self._count),
            "Chat": grpc.stream_stream_rpc_method_handler(self._chat),
        }
        self.server.add_generic_rpc_handlers([
            grpc.method_handlers_generic_handler("test.Upstream", handlers),
            grpc.method_handlers_generic_handler(SERVICE[1:], {
                "PredictBandwidth": grpc.unary_unary_rpc_method_handler(self._echo)}),
        ])
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()

    def _record(self, context: grpc.ServicerContext) -> None:
        metadata: dict[str, list[str]] = {}
        for key, value in context.invocation_metadata():
            metadata.setdefault(key, []).append(value)
        self.seen.append(metadata)

    def _echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._record(context)
        context.set_trailing_metadata([("x-upstream-trailer", "kept")])
        return b"upstream:" + request

    def _count(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self._record(context)
        for i in range(int(request)):
            yield str(i).encode()
        context.set_trailing_metadata([("x-upstream-trailer", "streamed")])

    def _chat(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for request in requests:
            yield b"heard:" + request


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.server.stop(0)


def make_front(upstream_port: int, host: str = "127.0.0.1", port: int = 0, **kw) -> native.Front:
    settings = {**dict(max_admitted=64, max_message_bytes=1 << 20, max_streams=100, max_age_ms=0, max_age_grace_ms=0,
                       reuse_port=False), **kw}
    return native.Front(host, port, METHODS, upstream_port, TOKEN, **settings)


class Worker:
    """A Python thread taking the front's calls and handing each to `handle(front, call)`."""

    def __init__(self, front: native.Front, handle: Callable) -> None:
        self.front, self.handle, self.taken = front, handle, []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            for call in self.front.take(16, 0.05):
                self.taken.append(call)
                self.handle(self.front, call)

    def close(self) -> None:
        self.done.set()
        self.thread.join(HANG_GUARD)


def echo(front: native.Front, call: tuple) -> None:
    call_id, method, request, _ = call
    front.answer(call_id, b"native:%d:" % method + request)


@contextmanager
def serving(upstream_port: int, handle: Callable | None = echo, **kw) -> Iterator[native.Front]:
    front = make_front(upstream_port, **kw)
    worker = Worker(front, handle) if handle else None
    try:
        yield front
    finally:
        front.stop(0)
        if worker:
            worker.close()


def call(channel: grpc.Channel, path: str, request: bytes, **kw) -> bytes:
    return channel.unary_unary(path)(request, timeout=HANG_GUARD, **kw)


def error_of(fn: Callable, *args, **kw) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, **kw)
    return e.value


def eventually(condition: Callable[[], bool]) -> None:
    until = time.monotonic() + HANG_GUARD
    while not condition():
        assert time.monotonic() < until, "condition never became true"
        time.sleep(0.01)


def test_native_answer_reaches_a_grpcio_client_with_real_types(upstream):
    request = pb.PredictBandwidthRequest(history=link_history())
    answer = pb.PredictBandwidthResponse(model=pb.ModelRef(name="bandwidth_predictor", version="7"))
    seen = []

    def canned(front, taken):
        seen.append(taken)
        front.answer(taken[0], answer.SerializeToString())

    with serving(upstream.port, canned) as front, grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        predict = channel.unary_unary(PREDICT, request_serializer=pb.PredictBandwidthRequest.SerializeToString,
                                      response_deserializer=pb.PredictBandwidthResponse.FromString)
        assert predict(request, timeout=HANG_GUARD) == answer
        assert predict(request) == answer  # without a deadline
        (_, method, got, left), (_, _, _, no_deadline) = seen
        assert (method, got) == (0, request.SerializeToString())
        assert 0 < left <= HANG_GUARD + 1 and no_deadline is None  # grpc-timeout rounds up
        assert front.admitted == 0


def test_several_python_threads_take_each_call_once(upstream):
    with serving(upstream.port, None, max_admitted=1000) as front, \
            grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        workers = [Worker(front, echo) for _ in range(3)]
        try:
            predict = channel.unary_unary(PREDICT)
            pending = [predict.future(b"%d" % i, timeout=HANG_GUARD) for i in range(300)]
            assert [p.result() for p in pending] == [b"native:0:%d" % i for i in range(300)]
        finally:
            for worker in workers:
                worker.close()
        taken = [call[0] for worker in workers for call in worker.taken]
        assert len(taken) == len(set(taken)) == 300
        assert front.admitted == 0


def test_an_error_status_and_message_round_trip(upstream):
    message = "bad input: 100% näive ✓ %41\nsecond line"
    with serving(upstream.port, lambda front, c: front.fail(c[0], 9, message)) as front, \
            grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        e = error_of(call, channel, METHODS[1], b"x")
        assert (e.code(), e.details()) == (grpc.StatusCode.FAILED_PRECONDITION, message)


def test_admission_refuses_beyond_the_limit_and_counts_it(upstream):
    with serving(upstream.port, None, max_admitted=1) as front, \
            grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        held = channel.unary_unary(PREDICT).future(b"first", timeout=HANG_GUARD)
        eventually(lambda: front.admitted == 1)
        e = error_of(call, channel, PREDICT, b"second")
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert e.details() == "PredictBandwidth: the server is at its limit of 1 calls at once; retry later"
        assert front.events() == [(0, "RESOURCE_EXHAUSTED", 1)]
        assert front.events() == []  # since the previous call
        [(call_id, _, request, _)] = front.take(8, HANG_GUARD)
        assert request == b"first"
        front.answer(call_id, b"done")
        assert held.result() == b"done" and front.admitted == 0
        front.answer(call_id, b"again")  # a finished id: no-op
        front.fail(12345, 13, "unknown id: no-op")


def test_a_waiting_take_returns_as_soon_as_the_front_answers_a_call_itself(upstream):
    """So that the workers count it in the metrics before anyone reads them."""
    with serving(upstream.port, None, max_admitted=1) as front, \
            grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        held = channel.unary_unary(PREDICT).future(b"first", timeout=HANG_GUARD)
        [(call_id, _, _, _)] = front.take(8, HANG_GUARD)
        taken = []
        waiting = threading.Thread(target=lambda: taken.append(front.take(8, 3600)), daemon=True)
        waiting.start()
        assert error_of(call, channel, PREDICT, b"second").code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        waiting.join(HANG_GUARD)
        assert taken == [[]] and front.events() == [(0, "RESOURCE_EXHAUSTED", 1)]
        front.answer(call_id, b"done")
        assert held.result() == b"done"


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(4, 0, 0, b"")  # then an empty SETTINGS frame
GOAWAY = 7


def h2c_request(port: int, path: str, message: bytes, timeout: str) -> socket.socket:
    """One gRPC request written as raw HTTP/2 frames: unlike grpcio, it never cancels when its deadline passes."""

    def literal(name: bytes, value: bytes) -> bytes:  # HPACK literal without indexing, new name, no Huffman
        assert len(name) < 127 and len(value) < 127
        return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value

    headers = b"".join(literal(n, v) for n, v in [
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()), (b":authority", b"front"),
        (b"content-type", b"application/grpc"), (b"te", b"trailers"), (b"grpc-timeout", timeout.encode())])
    body = b"\x00" + struct.pack(">I", len(message)) + message
    sock = socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD)
    sock.sendall(H2_PREFACE + _h2_frame(1, 4, 1, headers) + _h2_frame(0, 1, 1, body))
    return sock


def h2_frame_kinds(sock: socket.socket) -> list[int]:
    """The kinds of the frames the peer sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    kinds = []
    while len(received) >= 9:
        length = int.from_bytes(received[:3], "big")
        kinds.append(received[3])
        received = received[9 + length:]
    return kinds


def test_a_deadline_passing_while_queued_answers_at_once_and_never_reaches_python(upstream):
    with serving(upstream.port, None) as front:
        with h2c_request(front.port, PREDICT, b"late", "200m") as raw:
            eventually(lambda: front.events() == [(0, "DEADLINE_EXCEEDED", 1)])
            assert front.admitted == 0
            assert front.take(8, 0) == []
            reply = raw.recv(65536)
            assert reply  # the front answered (a SETTINGS frame and the trailers-only status)


def test_a_deadline_passing_while_python_computes_keeps_the_place_until_the_answer(upstream):
    with serving(upstream.port, None) as front, grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        pending = channel.unary_unary(PREDICT).future(b"slow", timeout=0.5)
        [(call_id, _, _, left)] = front.take(8, HANG_GUARD)
        assert 0 < left <= 1  # grpc-timeout is the client's 0.5 s, rounded up
        assert pending.exception(HANG_GUARD).code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert front.admitted == 1  # Python still computes it
        front.answer(call_id, b"too late")  # dropped
        assert front.admitted == 0


def next_headers(sock: socket.socket) -> None:
    """Read frames until the peer sends a HEADERS frame (a reply, or its trailers)."""
    received = b""
    while True:
        while len(received) < 9 or len(received) < 9 + int.from_bytes(received[:3], "big"):
            chunk = sock.recv(65536)
            assert chunk, "the connection closed before a HEADERS frame"
            received += chunk
        if received[3] == 1:
            return
        received = received[9 + int.from_bytes(received[:3], "big"):]


def test_a_deadline_passing_while_python_computes_is_counted_by_python_alone(upstream):
    with serving(upstream.port, None) as front:
        with h2c_request(front.port, PREDICT, b"slow", "200m") as raw:  # a caller that never cancels
            [(call_id, _, _, _)] = front.take(8, HANG_GUARD)
            next_headers(raw)  # the front answered DEADLINE_EXCEEDED
            assert front.events() == []  # Python counts the call when it answers it: once
            front.answer(call_id, b"too late")
            assert front.admitted == 0


def test_a_call_cancelled_while_queued_is_never_taken(upstream):
    with serving(upstream.port, None) as front, grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        pending = channel.unary_unary(PREDICT).future(b"cancelled", timeout=HANG_GUARD)
        eventually(lambda: front.admitted == 1)
        pending.cancel()
        eventually(lambda: front.admitted == 0)
        assert front.take(8, 0) == []
        assert front.events() == []


def test_other_calls_are_proxied_with_metadata_token_and_trailers(upstream):
    upstream.seen.clear()
    with serving(upstream.port) as front, grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        metadata = [("x-dwcp-front", "forged"), ("x-caller", "me"), ("authorization", "Bearer abc")]
        answer, state = channel.unary_unary(ECHO).with_call(b"hello", timeout=HANG_GUARD, metadata=metadata)
        assert answer == b"upstream:hello"
        assert ("x-upstream-trailer", "kept") in state.trailing_metadata()
        seen = upstream.seen[-1]
        assert seen["x-dwcp-front"] == [TOKEN]  # the caller's own header never reaches the upstream
        assert seen["x-caller"] == ["me"] and seen["authorization"] == ["Bearer abc"]

        stream = channel.unary_stream(COUNT)(b"5", timeout=HANG_GUARD)
        assert list(stream) == [b"0", b"1", b"2", b"3", b"4"]
        assert ("x-upstream-trailer", "streamed") in stream.trailing_metadata()

        said = queue.Queue()  # each answer comes back before the next message is sent: streamed both ways
        chat = channel.stream_stream(CHAT)(iter(said.get, None), timeout=HANG_GUARD)
        for word in [b"one", b"two", b"three"]:
            said.put(word)
            assert next(chat) == b"heard:" + word
        said.put(None)
        assert list(chat) == []

        unknown = error_of(call, channel, "/test.Upstream/Nope", b"x")  # a trailers-only answer passes too
        assert unknown.code() == grpc.StatusCode.UNIMPLEMENTED

        checked = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=HANG_GUARD)
        assert checked.status == health_pb2.HealthCheckResponse.SERVING
        assert all(m["x-dwcp-front"] == [TOKEN] for m in upstream.seen)


def test_a_compressed_request_to_a_native_method_is_proxied(upstream):
    upstream.seen.clear()
    with serving(upstream.port) as front, grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        request = os.urandom(300_000).hex().encode()  # compressible (grpc sends it compressed), over many frames
        assert call(channel, PREDICT, request, compression=grpc.Compression.Gzip) == b"upstream:" + request
        assert call(channel, PREDICT, request) == b"native:0:" + request
        assert len(upstream.seen) == 1


def test_an_oversize_body_is_refused_as_grpc_does(upstream):
    with serving(upstream.port, max_message_bytes=100) as front, \
            grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        e = error_of(call, channel, PREDICT, b"x" * 5000)
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert e.details() == "Received message larger than max (5000 vs. 100)"
        assert call(channel, PREDICT, b"x" * 100) == b"native:0:" + b"x" * 100


def stalled_request(port: int, path: str, declared: int, sent: int, timeout: bytes = b"") -> socket.socket:
    """A request whose message declares `declared` bytes, of which `sent` come; then it stalls, never ending (and
    never cancelling, whatever its `grpc-timeout`)."""
    headers = b"".join(b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v for n, v in [
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()), (b":authority", b"front"),
        (b"content-type", b"application/grpc"), (b"te", b"trailers"), *([(b"grpc-timeout", timeout)] * bool(timeout))])
    body = b"\x00" + struct.pack(">I", declared) + b"s" * sent
    frames = b"".join(_h2_frame(0, 0, 1, body[i:i + 16384]) for i in range(0, len(body), 16384))
    sock = socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD)
    sock.sendall(H2_PREFACE + _h2_frame(1, 4, 1, headers) + frames)
    return sock


@pytest.mark.parametrize("path, answered", [(PREDICT, b"native:0:"), (ECHO, b"upstream:")],
                         ids=["native", "forwarded"])
def test_request_bytes_read_at_once_are_bounded_across_stalled_callers(upstream, path, answered):
    limit = 64 << 10  # with max_admitted 2: room for 2 such messages' bytes at once, read or being forwarded
    with serving(upstream.port, max_admitted=2, max_message_bytes=limit) as front, \
            grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        stalled = [stalled_request(front.port, path, limit, 40_000) for _ in range(3)]
        name = path.rsplit("/", 1)[1]

        def refused() -> bool:
            try:
                call(channel, path, b"r" * 20_000)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert e.details() == f"{name}: the server is reading its limit of request bytes at once; retry later"
                return True
            return False

        eventually(refused)
        assert call(channel, path, b"small") == answered + b"small"
        if path == PREDICT:
            assert (0, "RESOURCE_EXHAUSTED") in [event[:2] for event in front.events()]
        for sock in stalled:
            sock.close()
        eventually(lambda: not refused())


def test_a_deadline_passing_while_the_request_is_read_is_answered(upstream):
    with serving(upstream.port) as front:
        with stalled_request(front.port, PREDICT, 1000, 10, timeout=b"200m") as raw:
            next_headers(raw)  # DEADLINE_EXCEEDED, as grpc core answers; the call was never admitted
            assert front.admitted == 0 and front.events() == []


def test_an_unreachable_upstream_is_unavailable():
    down = free_port()
    with serving(down) as front, grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        e = error_of(call, channel, ECHO, b"hello")
        assert e.code() == grpc.StatusCode.UNAVAILABLE
        assert f"127.0.0.1:{down}" in e.details()
        assert call(channel, PREDICT, b"still") == b"native:0:still"


def test_connections_past_their_max_age_go_away_without_failing_calls(upstream):
    with serving(upstream.port, max_age_ms=30, max_age_grace_ms=1000) as front, \
            grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        for i in range(20):  # across several connections: each goes away after about 30 ms
            assert call(channel, PREDICT, b"%d" % i) == b"native:0:%d" % i
            assert call(channel, ECHO, b"%d" % i) == b"upstream:%d" % i
            time.sleep(0.01)
    with serving(upstream.port, max_age_ms=30, max_age_grace_ms=50) as front, \
            socket.create_connection(("127.0.0.1", front.port), timeout=HANG_GUARD) as idle:
        idle.sendall(H2_PREFACE)
        assert GOAWAY in h2_frame_kinds(idle)  # then closed by the front


def test_a_restarted_upstream_is_reached_again():
    first = Upstream()
    with serving(first.port) as front, grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        assert call(channel, ECHO, b"before") == b"upstream:before"
        first.server.stop(0).wait()
        assert error_of(call, channel, ECHO, b"down").code() == grpc.StatusCode.UNAVAILABLE
        second = Upstream(first.port)
        try:
            assert call(channel, ECHO, b"after") == b"upstream:after"
        finally:
            second.server.stop(0)


def test_calls_forwarded_as_the_upstream_connection_goes_away_are_sent_again_not_failed():
    aging = Upstream(options=[("grpc.max_connection_age_ms", 20), ("grpc.max_connection_age_grace_ms", 5000)])
    try:
        with serving(aging.port) as front, grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
            echo_call = channel.unary_unary(ECHO)
            for wave in range(150):  # the upstream connection goes away every 20 ms or so, with calls in flight
                pending = [echo_call.future(b"%d" % i, timeout=HANG_GUARD) for i in range(16)]
                assert [p.result() for p in pending] == [b"upstream:%d" % i for i in range(16)]
    finally:
        aging.server.stop(0)


def test_garbage_connections_leave_the_front_serving(upstream):
    with serving(upstream.port) as front:
        for garbage in [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(range(256)),
                        b"\x16\x03\x01\x00\x05hello"]:
            with socket.create_connection(("127.0.0.1", front.port), timeout=HANG_GUARD) as raw:
                raw.sendall(garbage)
                raw.recv(65536)
        with grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
            assert call(channel, PREDICT, b"fine") == b"native:0:fine"


def test_a_connection_that_never_says_anything_is_closed(upstream):
    with serving(upstream.port) as front:
        with socket.create_connection(("127.0.0.1", front.port), timeout=3 * HANG_GUARD) as silent:
            while silent.recv(65536):  # whatever the front says first (its SETTINGS, if any); then it closes
                pass  # after 10 s (a connection left open raises socket.timeout here)
        with grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
            assert call(channel, PREDICT, b"fine") == b"native:0:fine"


def test_hosts_reuse_port_and_a_bind_failure(upstream):
    for host in ["localhost", "[::]", "0.0.0.0", "::1"]:
        with serving(upstream.port, host=host) as front, grpc.insecure_channel(f"localhost:{front.port}") as channel:
            assert call(channel, PREDICT, host.encode()) == b"native:0:" + host.encode()
    with serving(upstream.port, reuse_port=True) as first, serving(upstream.port, reuse_port=True, port=first.port):
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{first.port}: "):
            make_front(upstream.port, port=first.port)  # without SO_REUSEPORT


def _pair(ca: trustme.CA) -> tuple[bytes, bytes]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    return b"".join(blob.bytes() for blob in cert.cert_chain_pems), cert.private_key_pem.bytes()


def _tls_channel(port: int, ca: trustme.CA, client: trustme.LeafCert | None = None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca.cert_pem.bytes(),
        private_key=client.private_key_pem.bytes() if client else None,
        certificate_chain=b"".join(b.bytes() for b in client.cert_chain_pems) if client else None)
    return grpc.secure_channel(f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", "localhost")])


def test_tls_serves_rotates_and_refuses_a_bad_pair(upstream):
    first, second = trustme.CA(), trustme.CA()
    chain, key = _pair(first)
    with serving(upstream.port, tls=(chain, key, None)) as front:
        with _tls_channel(front.port, first) as channel:
            assert call(channel, PREDICT, b"secure") == b"native:0:secure"
            assert call(channel, ECHO, b"secure") == b"upstream:secure"
        with grpc.insecure_channel(f"127.0.0.1:{front.port}") as plaintext:
            assert error_of(call, plaintext, PREDICT, b"x").code() == grpc.StatusCode.UNAVAILABLE

        new_chain, new_key = _pair(second)
        front.set_tls(new_chain, new_key, None)
        with _tls_channel(front.port, second) as channel:
            assert call(channel, PREDICT, b"rotated") == b"native:0:rotated"
        with _tls_channel(front.port, first) as channel:  # the old certificate is gone
            assert error_of(call, channel, PREDICT, b"x").code() == grpc.StatusCode.UNAVAILABLE

        with pytest.raises(ValueError, match="cannot serve"):
            front.set_tls(chain, new_key, None)  # a key that is not the certificate's
        with pytest.raises(ValueError, match="does not parse|holds no certificate"):
            front.set_tls(b"not a pem", new_key, None)
        with _tls_channel(front.port, second) as channel:  # the current certificate was kept
            assert call(channel, PREDICT, b"kept") == b"native:0:kept"

    with serving(upstream.port) as plain, pytest.raises(RuntimeError, match="without TLS"):
        plain.set_tls(new_chain, new_key, None)


def test_mutual_tls_requires_a_client_certificate_from_the_ca(upstream):
    server_ca, client_ca = trustme.CA(), trustme.CA()
    chain, key = _pair(server_ca)
    with serving(upstream.port, tls=(chain, key, client_ca.cert_pem.bytes())) as front:
        with _tls_channel(front.port, server_ca) as anonymous:
            assert error_of(call, anonymous, PREDICT, b"x").code() == grpc.StatusCode.UNAVAILABLE
        with _tls_channel(front.port, server_ca, trustme.CA().issue_cert("client")) as stranger:
            assert error_of(call, stranger, PREDICT, b"x").code() == grpc.StatusCode.UNAVAILABLE
        with _tls_channel(front.port, server_ca, client_ca.issue_cert("client")) as known:
            assert call(known, PREDICT, b"mutual") == b"native:0:mutual"


def test_stop_lets_a_call_in_flight_finish_then_closes(upstream):
    with serving(upstream.port, None) as front, grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        pending = channel.unary_unary(PREDICT).future(b"in flight", timeout=HANG_GUARD)
        [(call_id, _, _, _)] = front.take(8, HANG_GUARD)
        stopping = threading.Thread(target=front.stop, args=(HANG_GUARD,))
        stopping.start()
        time.sleep(0.2)  # stop() waits for the call (not a timing assertion: the answer comes after it either way)
        assert stopping.is_alive()
        front.answer(call_id, b"finished")
        assert pending.result(HANG_GUARD) == b"finished"
        stopping.join(HANG_GUARD)
        assert not stopping.is_alive()
        assert front.take(8, HANG_GUARD) == []  # at once after stop
        front.stop(0)  # idempotent
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", front.port)) != 0  # no longer listening
