"""Transport security, admin authentication, limits and load shedding, through real channels."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from dwcp_inference.api import admin_pb2 as apb
from dwcp_inference.api import admin_pb2_grpc as apb_grpc
from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc

from .conftest import start_server
from .samples import link_history

GO_MODULE = Path(__file__).resolve().parents[1] / "clients" / "go"


def _write_server_cert(ca: trustme.CA, directory: Path) -> tuple[Path, Path]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain, key = directory / "server.pem", directory / "server.key"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    return chain, key


def _predict(target: str, creds: grpc.ChannelCredentials | None, **kw) -> pb.PredictBandwidthResponse:
    channel = grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", "localhost")]) \
        if creds else grpc.insecure_channel(target)
    with channel:
        return pb_grpc.InferenceServiceStub(channel).PredictBandwidth(
            pb.PredictBandwidthRequest(history=link_history()), timeout=5, **kw)


def test_tls_serves_with_the_right_ca_and_refuses_others(trained_repo, tmp_path):
    ca, other = trustme.CA(), trustme.CA()
    chain, key = _write_server_cert(ca, tmp_path)
    running = start_server(trained_repo, metrics_port=-1, tls_cert=chain, tls_key=key)
    target = f"127.0.0.1:{running.port}"
    try:
        good = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
        assert _predict(target, good).model.name == "bandwidth_predictor"
        with pytest.raises(grpc.RpcError) as e:
            _predict(target, grpc.ssl_channel_credentials(root_certificates=other.cert_pem.bytes()))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError):
            _predict(target, None)  # plaintext to a TLS port

        # Rotation: new files from another CA are used by the next handshake, without a restart.
        new_chain, new_key = _write_server_cert(other, tmp_path / "..")
        shutil.copy(new_key, key)
        shutil.copy(new_chain, chain)
        time.sleep(0.01)
        os.utime(chain)
        until = time.monotonic() + 15  # the native front takes it from the files' watcher, within about a second
        while True:
            try:
                assert _predict(target, grpc.ssl_channel_credentials(root_certificates=other.cert_pem.bytes()))
                break
            except grpc.RpcError:
                assert time.monotonic() < until, "the rotated certificate was not served"
                time.sleep(0.05)
    finally:
        running.stop(0)


def test_mutual_tls_requires_a_client_certificate(trained_repo, tmp_path):
    ca, client_ca = trustme.CA(), trustme.CA()
    chain, key = _write_server_cert(ca, tmp_path)
    (tmp_path / "clients.pem").write_bytes(client_ca.cert_pem.bytes())
    running = start_server(trained_repo, metrics_port=-1, tls_cert=chain, tls_key=key,
                           tls_client_ca=tmp_path / "clients.pem")
    target = f"127.0.0.1:{running.port}"
    try:
        with pytest.raises(grpc.RpcError):
            _predict(target, grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes()))
        client = client_ca.issue_cert("dwcp-node-1")
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca.cert_pem.bytes(), private_key=client.private_key_pem.bytes(),
            certificate_chain=b"".join(b.bytes() for b in client.cert_chain_pems))
        assert _predict(target, creds).model.version == "1"
    finally:
        running.stop(0)


def test_go_client_tls_options(trained_repo, tmp_path):
    go = shutil.which("go")
    if go is None:
        if os.environ.get("CI"):
            pytest.fail("go is not installed, and CI must run the Go TLS test")
        pytest.skip("go is not installed")
    ca, other = trustme.CA(), trustme.CA()
    chain, key = _write_server_cert(ca, tmp_path)
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem.bytes())
    (tmp_path / "other.pem").write_bytes(other.cert_pem.bytes())
    running = start_server(trained_repo, metrics_port=-1, tls_cert=chain, tls_key=key)
    try:
        env = {**os.environ, "DWCP_TLS_TARGET": f"127.0.0.1:{running.port}", "DWCP_TLS_CA": str(tmp_path / "ca.pem"),
               "DWCP_TLS_WRONG_CA": str(tmp_path / "other.pem")}
        proc = subprocess.run([go, "test", "-count=1", "-v", "-run", "^TestTLS", "./inference"], cwd=GO_MODULE,
                              env=env, capture_output=True, text=True, timeout=300)
    finally:
        running.stop(0)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "--- PASS: TestTLS" in proc.stdout and "SKIP" not in proc.stdout


def test_admin_needs_its_token(trained_repo):
    running = start_server(trained_repo, metrics_port=-1, admin_token="s3cret")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.admin_port}") as ch:
            admin = apb_grpc.AdminServiceStub(ch)
            with pytest.raises(grpc.RpcError) as e:
                admin.ListModels(apb.ListModelsRequest())
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as e:
                admin.ListModels(apb.ListModelsRequest(), metadata=[("authorization", "Bearer wrong")])
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            ok = admin.ListModels(apb.ListModelsRequest(), metadata=[("authorization", "Bearer s3cret")])
            assert len(ok.models) == 4
    finally:
        running.stop(0)


def test_overload_is_shed_at_once_and_the_server_recovers(trained_repo):
    running = start_server(trained_repo, threads=1, max_concurrent_rpcs=3)
    codes: list = []
    lock = threading.Lock()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = pb_grpc.InferenceServiceStub(ch)
            heavy = pb.PredictBandwidthBatchRequest(histories=[link_history(30)] * 1000)

            def call() -> None:
                start = time.monotonic()
                try:
                    stub.PredictBandwidthBatch(heavy, timeout=60)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as e:
                    code = e.code()
                with lock:
                    codes.append((code, time.monotonic() - start))

            threads = [threading.Thread(target=call) for _ in range(20)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            shed = [s for c, s in codes if c == grpc.StatusCode.RESOURCE_EXHAUSTED]
            assert {c for c, _ in codes} <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert len(shed) >= 10 and max(shed) < 1.0, codes  # refused at once, not after queueing
            assert stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history()), timeout=5).model.name
    finally:
        running.stop(0)


def test_a_call_whose_deadline_passed_in_the_queue_is_not_computed(trained_repo):
    running = start_server(trained_repo, threads=1)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = pb_grpc.InferenceServiceStub(ch)
            heavy = pb.PredictBandwidthBatchRequest(histories=[link_history(30)] * 1000)
            slow = [stub.PredictBandwidthBatch.future(heavy, timeout=60) for _ in range(4)]
            time.sleep(0.05)
            with pytest.raises(grpc.RpcError) as e:
                stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history()), timeout=0.02)
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            for f in slow:
                f.result()
            time.sleep(0.2)
        text = urllib.request.urlopen(f"http://127.0.0.1:{running.metrics_port}/metrics", timeout=5).read().decode()
        counts = {(s.labels["rpc"], s.labels["code"]): s.value for f in text_string_to_metric_families(text)
                  if f.name == "dwcp_inference_requests" for s in f.samples if s.name.endswith("_total")}
        # Never computed: gRPC drops it from the queue, or our handler refuses it (DEADLINE_EXCEEDED).
        assert counts.get(("PredictBandwidth", "OK"), 0) == 0
        assert counts[("PredictBandwidthBatch", "OK")] == 4
    finally:
        running.stop(0)


def test_a_history_longer_than_the_limit_is_refused(stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history(2000)))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "history.samples: expected at most 1024 samples, got 2000" in e.value.details()


def test_models_cli_sends_the_token(trained_repo):
    import subprocess
    import sys

    running = start_server(trained_repo, metrics_port=-1, admin_token="tok")
    try:
        base = [sys.executable, "-m", "dwcp_inference.commands.cli", "models", "--admin",
                f"127.0.0.1:{running.admin_port}"]
        denied = subprocess.run([*base, "list"], capture_output=True, text=True)
        allowed = subprocess.run([*base, "--token", "tok", "list"], capture_output=True, text=True)
    finally:
        running.stop(0)
    assert denied.returncode == 1 and "UNAUTHENTICATED" in denied.stderr
    assert allowed.returncode == 0 and "bandwidth_predictor" in allowed.stdout


def test_ten_thousand_bad_requests_get_the_right_status_and_memory_stays_flat(tmp_path):
    import signal
    import socket
    import sys

    from dwcp_inference.commands import fuzz

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "dwcp_inference.commands.cli", "serve", "--host", "127.0.0.1",
                               "--port", str(port), "--metrics-port", "-1", "--admin-port", "-1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([sys.executable, "-m", "dwcp_inference.commands.cli", "health", "--target",
                              f"127.0.0.1:{port}"],
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        result = fuzz.run(f"127.0.0.1:{port}", 10_000, seed=1, pid=server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    print({k: v for k, v in result.items() if k != "examples"})
    assert result["wrong"] == {}, result["examples"]
    assert result["serving_after"] and sum(result["sent"].values()) == 10_000 and len(result["sent"]) == 7
    rss = result["rss_kib"]
    assert rss[-1] < rss[1] * 1.10, f"memory grew: {rss}"
