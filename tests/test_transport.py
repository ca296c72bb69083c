"""The inference port's transport under pressure, through real channels: health is never shed, half-open calls
starve no one, a rotated certificate reaches every port, and the supervisor gives up on workers that cannot start."""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc
from dwcp_inference.services.settings import bundled_models

from .conftest import start_server
from .samples import link_history

SERVING = health_pb2.HealthCheckResponse.SERVING


def _check(stub: health_pb2_grpc.HealthStub, service: str = "") -> object:
    try:
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
    except grpc.RpcError as e:
        return e.code()


def _shed_count(metrics_port: int, rpc: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) if f.name == "dwcp_inference_requests"
               for s in f.samples if s.name.endswith("_total")
               and s.labels == {"rpc": rpc, "code": "RESOURCE_EXHAUSTED"})


def test_health_answers_under_overload_while_inference_is_shed():
    running = start_server(bundled_models(), max_concurrent_rpcs=4, threads=2, admin_port=-1, poll_seconds=0)
    target = f"127.0.0.1:{running.port}"
    codes: list = []
    lock = threading.Lock()
    until = time.monotonic() + 4.0  # the clients' loops are bounded in time
    heavy = pb.PredictBandwidthBatchRequest(histories=[link_history(30)] * 200)
    try:
        def client() -> None:
            with grpc.insecure_channel(target) as ch:
                stub = pb_grpc.InferenceServiceStub(ch)
                while time.monotonic() < until:
                    try:
                        stub.PredictBandwidthBatch(heavy, timeout=30)
                        code = grpc.StatusCode.OK
                    except grpc.RpcError as e:
                        code = e.code()
                    with lock:
                        codes.append(code)

        clients = [threading.Thread(target=client) for _ in range(16)]
        for t in clients:
            t.start()
        time.sleep(1.0)
        with grpc.insecure_channel(target) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            answers: list = []
            checks = [threading.Thread(target=lambda: answers.append(_check(health))) for _ in range(48)]
            for t in checks:
                t.start()
            for t in checks:
                t.join()
        for t in clients:
            t.join()
        assert answers == [SERVING] * 48, answers
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, set(codes)
        shed = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert shed > 0 and codes.count(grpc.StatusCode.OK) > 0, (shed, len(codes))
        assert _shed_count(running.metrics_port, "PredictBandwidthBatch") == shed
    finally:
        running.stop(0)


def _half_open(channel: grpc.Channel, release: threading.Event) -> grpc.Future:
    """A PredictBandwidth call whose headers are sent but whose request never is (until `release`): the client
    streams its request from an iterator that blocks."""

    def never() -> object:
        release.wait()
        return
        yield  # a generator that yields nothing

    call = channel.stream_unary("/dwcp.inference.v1.InferenceService/PredictBandwidth",
                                request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=pb.PredictBandwidthResponse.FromString)
    return call.future(never(), timeout=60)


def test_half_open_calls_starve_no_one():
    threads = 4
    running = start_server(bundled_models(), threads=threads, admin_port=-1, poll_seconds=0)
    target = f"127.0.0.1:{running.port}"
    release = threading.Event()
    try:
        with grpc.insecure_channel(target) as attacker, grpc.insecure_channel(target) as ch:
            held = [_half_open(attacker, release) for _ in range(4 * threads)]
            time.sleep(0.5)  # their headers are in
            stub = pb_grpc.InferenceServiceStub(ch)
            request = pb.PredictBandwidthRequest(history=link_history())
            answers = [stub.PredictBandwidth(request, timeout=5).model.name for _ in range(50)]
            assert answers == ["bandwidth_predictor"] * 50
            assert _check(health_pb2_grpc.HealthStub(ch)) == SERVING
            assert _check(health_pb2_grpc.HealthStub(ch), "bandwidth_predictor") == SERVING
            assert not any(f.done() for f in held)  # still open: they were not simply refused
            release.set()
            for f in held:
                f.cancel()
    finally:
        release.set()
        running.stop(0)


def _write_pair(ca: trustme.CA, chain: Path, key: Path) -> bytes:
    """Write a new certificate for 127.0.0.1 signed by `ca`; returns its DER form."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    key.write_bytes(cert.private_key_pem.bytes())
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


def _served_certificate(port: int) -> bytes:
    """The certificate a TLS handshake with the port gets (ALPN h2, as gRPC requires)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, context.wrap_socket(raw) as tls:
        return tls.getpeercert(binary_form=True)


def _eventually(check, what: str, seconds: float = 15.0) -> None:
    """Wait until `check()` holds: the native front takes a rotation from the files' watcher (within about a
    second), where grpc's own TLS asks before every handshake."""
    until = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < until, what
        time.sleep(0.05)


@pytest.mark.parametrize("front", ["grpcio", "native"])
def test_a_rotated_certificate_reaches_every_port_and_a_bad_pair_none(tmp_path, caplog, front):
    caplog.set_level(logging.INFO, logger="dwcp_inference.services.security")
    chain, key = tmp_path / "server.pem", tmp_path / "server.key"
    first = _write_pair(trustme.CA(), chain, key)
    running = start_server(bundled_models(), metrics_port=-1, poll_seconds=0, tls_cert=chain, tls_key=key,
                           front=front)
    ports = {"inference": running.port, "admin": running.admin_port}

    def served() -> dict:
        return {name: _served_certificate(p) for name, p in ports.items()}

    def warned() -> bool:
        return any("keeping the current certificate" in r.getMessage() for r in caplog.records)

    try:
        assert served() == {name: first for name in ports}
        rotated = _write_pair(trustme.CA(), chain, key)
        _eventually(lambda: served() == {n: rotated for n in ports}, "the rotated certificate is served")
        for _ in range(3):  # every port, whichever handshakes first, and more than once
            assert served() == {n: rotated for n in ports}
        reloads = [r for r in caplog.records if "reloaded" in r.getMessage()]
        assert len(reloads) == 1, [r.getMessage() for r in reloads]

        caplog.clear()
        stranger = trustme.CA().issue_cert("127.0.0.1")  # a key that is not the certificate's
        chain.write_bytes(b"".join(blob.bytes() for blob in trustme.CA().issue_cert("127.0.0.1").cert_chain_pems))
        key.write_bytes(stranger.private_key_pem.bytes())
        assert served() == {n: rotated for n in ports}
        _eventually(warned, "the bad pair is looked at and refused")
        assert served() == {n: rotated for n in ports}
        caplog.clear()
        whole = _write_pair(trustme.CA(), tmp_path / "next.pem", tmp_path / "next.key")
        key.write_bytes((tmp_path / "next.key").read_bytes())
        chain.write_bytes((tmp_path / "next.pem").read_bytes()[:300])  # truncated mid-rotation
        assert served() == {n: rotated for n in ports}
        _eventually(warned, "the truncated chain is looked at and refused")
        assert served() == {n: rotated for n in ports}
        messages = [r.getMessage() for r in caplog.records]
        assert not any("reloaded" in m for m in messages), messages

        chain.write_bytes((tmp_path / "next.pem").read_bytes())  # the rotation completes
        _eventually(lambda: served() == {n: whole for n in ports}, "the completed rotation is served")
    finally:
        running.stop(0)


def test_health_port_answers_in_plaintext_while_tls_is_on(tmp_path):
    chain, key = tmp_path / "server.pem", tmp_path / "server.key"
    _write_pair(trustme.CA(), chain, key)
    running = start_server(bundled_models(), metrics_port=-1, admin_port=-1, poll_seconds=0, tls_cert=chain,
                           tls_key=key, health_host="127.0.0.1", health_port=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.health_port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            assert _check(health) == SERVING
            assert _check(health, "dwcp.inference.v1.InferenceService") == SERVING
            assert _check(health, "nope") == grpc.StatusCode.NOT_FOUND
            # Only health: no inference on this port.
            stub = pb_grpc.InferenceServiceStub(ch)
            try:
                stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history()), timeout=5)
                raise AssertionError("the health port answered an inference call")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNIMPLEMENTED
            running.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)  # shared with the inference port
            assert _check(health) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        running.stop(0)


def test_supervisor_gives_up_on_a_worker_that_cannot_start():
    with socket.socket() as taken:  # worker 0's admin port is taken (without SO_REUSEPORT): it fails at start
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "dwcp_inference.commands.cli", "serve", "--workers", "2", "--host", "127.0.0.1",
             "--port", str(port), "--metrics-port", "-1", "--admin-port", str(taken.getsockname()[1]),
             "--poll-seconds", "0"], capture_output=True, text=True, timeout=180)
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "worker 0 failed at start 5 times within 60 s" in proc.stderr.splitlines()[-1], proc.stderr[-3000:]
    assert "starting it again in 0.5 s" in proc.stderr and "starting it again in 4.0 s" in proc.stderr
    assert elapsed < 120, elapsed


def test_the_inference_port_runs_on_uvloop():
    """grpc.aio's Python side is most of a call's work; uvloop's loop runs it faster (bench/performance-notes.md)."""
    import uvloop

    running = start_server(bundled_models(), admin_port=-1, metrics_port=-1, poll_seconds=0)
    try:
        assert isinstance(running.loop.loop, uvloop.Loop)
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            answer = pb_grpc.InferenceServiceStub(ch).PredictBandwidth(
                pb.PredictBandwidthRequest(history=link_history()), timeout=10)
            assert answer.model.name == "bandwidth_predictor"
            assert _check(health_pb2_grpc.HealthStub(ch)) == SERVING
    finally:
        running.stop(0)
