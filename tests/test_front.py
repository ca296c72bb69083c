"""The native front on the inference port (services/front.py, native/src/front), as deployed: what it forwards to
the grpc.aio server behind it and what it keeps out, TLS and mutual TLS on, a drain that answers the calls in
flight, and the choice of front named in the log and a gauge. (tests/test_native.py and tests/test_coalesce.py
judge its answers and messages against the grpc.aio transport byte for byte; the rest of the suite runs through it,
the default.)"""

from __future__ import annotations

import logging
import shutil
import threading
import types

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc
from dwcp_inference.services import front
from dwcp_inference.services.settings import bundled_models

from .conftest import start_server
from .samples import link_history

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def native():
    choice = front.choose("auto")
    if choice.name != "native":
        if shutil.which("cargo") is None:
            pytest.skip(f"no cargo on this machine: {choice.reason}")
        pytest.fail(f"the native front is not installed ({choice.reason}): `make setup` builds it")
    return choice


@pytest.fixture(scope="module")
def running(native):
    running = start_server(bundled_models(), front="native", admin_port=-1, poll_seconds=0)
    yield running
    running.stop(0)


def test_auto_falls_back_to_grpcio_and_native_refuses_without_the_front(monkeypatch):
    monkeypatch.setattr(front, "native_module", lambda: types.ModuleType("dwcp_inference_native"))  # an old build
    choice = front.choose("auto")
    assert (choice.name, choice.reason) == ("grpcio", "auto: the installed dwcp_inference_native has no front "
                                                      "(reinstall ./native)")
    with pytest.raises(ValueError, match="--front native: the installed dwcp_inference_native has no front"):
        front.choose("native")
    assert front.choose("grpcio").name == "grpcio"
    with pytest.raises(ValueError, match="--front: expected one of"):
        front.choose("tonic")


def test_the_front_is_named_in_the_start_log_and_a_gauge(native, caplog):
    with caplog.at_level(logging.INFO, logger="dwcp_inference.services.server"):
        running = start_server(bundled_models(), admin_port=-1, poll_seconds=0)  # the default: auto
    try:
        assert "native front, auto: the extension is installed" in caplog.text
        assert running.metrics.registry.get_sample_value("dwcp_inference_front_info", {"front": "native"}) == 1
        assert running.front is not None and running.front.port == running.port
    finally:
        running.stop(0)


def test_inference_health_and_outcomes_through_the_front(running):
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        stub = pb_grpc.InferenceServiceStub(ch)
        answer = stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history()), timeout=10)
        assert answer.model.name == "bandwidth_predictor"
        outcome = stub.ReportOutcome(pb.ReportOutcomeRequest(  # forwarded to the server behind the front
            prediction_id=answer.prediction.prediction_id, actual_network=pb.NetworkSample(bandwidth_mbps=90.0)),
            timeout=10)
        assert outcome.model.name == "bandwidth_predictor"
        health = health_pb2_grpc.HealthStub(ch)
        assert health.Check(health_pb2.HealthCheckRequest(service="bandwidth_predictor"), timeout=10).status == SERVING


def test_the_server_behind_the_front_takes_calls_from_the_front_only(running):
    behind = f"127.0.0.1:{running.front.upstream_port}"
    request = pb.ReportOutcomeRequest(prediction_id="x", was_anomaly=True)
    with grpc.insecure_channel(behind) as ch:
        for metadata in ((), ((front.TOKEN_HEADER, "guessed"),)):
            with pytest.raises(grpc.RpcError) as refused:
                pb_grpc.InferenceServiceStub(ch).ReportOutcome(request, timeout=10, metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert refused.value.details() == "this port takes calls from the front only"
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:  # a caller's own token header is dropped
        with pytest.raises(grpc.RpcError) as answered:
            pb_grpc.InferenceServiceStub(ch).ReportOutcome(request, timeout=10,
                                                           metadata=((front.TOKEN_HEADER, "guessed"),))
        assert answered.value.code() == grpc.StatusCode.NOT_FOUND  # reached the servicer: an unknown id
        assert "no prediction 'x' made by this service" in answered.value.details()


def test_a_drain_answers_the_call_in_flight_and_refuses_new_ones(native):
    running = start_server(bundled_models(), front="native", admin_port=-1, poll_seconds=0, threads=1)
    heavy = pb.PredictBandwidthBatchRequest(histories=[link_history(1000)] * 64)  # under 4 MiB
    target = f"127.0.0.1:{running.port}"
    with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        stub = pb_grpc.InferenceServiceStub(ch)
        in_flight = stub.PredictBandwidthBatch.future(heavy, timeout=60)
        while running.front.front.admitted == 0 and not in_flight.done():  # taken by the worker, or answered
            threading.Event().wait(0.005)
        stopped = threading.Thread(target=running.stop, args=(30,))
        stopped.start()
        assert len(in_flight.result().predictions) == 64
        stopped.join(60)
        assert not stopped.is_alive()
    with grpc.insecure_channel(target) as ch:
        with pytest.raises(grpc.RpcError) as after:
            pb_grpc.InferenceServiceStub(ch).PredictBandwidth(pb.PredictBandwidthRequest(history=link_history()),
                                                              timeout=5)
        assert after.value.code() == grpc.StatusCode.UNAVAILABLE


def _pair(tmp_path, ca: trustme.CA, name: str) -> tuple:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    return chain, key, cert


def test_mutual_tls_on_the_front(native, tmp_path):
    server_ca, client_ca = trustme.CA(), trustme.CA()
    chain, key, _ = _pair(tmp_path, server_ca, "server")
    (tmp_path / "clients.pem").write_bytes(client_ca.cert_pem.bytes())
    running = start_server(bundled_models(), front="native", admin_port=-1, metrics_port=-1, poll_seconds=0,
                           tls_cert=chain, tls_key=key, tls_client_ca=tmp_path / "clients.pem")
    request = pb.PredictBandwidthRequest(history=link_history())
    target = f"127.0.0.1:{running.port}"
    try:
        client = client_ca.issue_cert("client")
        good = grpc.ssl_channel_credentials(server_ca.cert_pem.bytes(), client.private_key_pem.bytes(),
                                            b"".join(b.bytes() for b in client.cert_chain_pems))
        stranger = trustme.CA().issue_cert("client")
        refused = {
            "no client certificate": grpc.ssl_channel_credentials(server_ca.cert_pem.bytes()),
            "a certificate the CA did not sign": grpc.ssl_channel_credentials(
                server_ca.cert_pem.bytes(), stranger.private_key_pem.bytes(),
                b"".join(b.bytes() for b in stranger.cert_chain_pems)),
        }
        for why, credentials in refused.items():
            with grpc.secure_channel(target, credentials) as ch:
                with pytest.raises(grpc.RpcError) as e:
                    pb_grpc.InferenceServiceStub(ch).PredictBandwidth(request, timeout=10)
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE, why
        with grpc.insecure_channel(target) as ch:  # plaintext on the TLS port: refused, the front keeps serving
            with pytest.raises(grpc.RpcError):
                pb_grpc.InferenceServiceStub(ch).PredictBandwidth(request, timeout=10)
        with grpc.secure_channel(target, good) as ch:
            stub = pb_grpc.InferenceServiceStub(ch)
            assert stub.PredictBandwidth(request, timeout=10).model.name == "bandwidth_predictor"
            health = health_pb2_grpc.HealthStub(ch)  # forwarded: the front terminated TLS
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == SERVING
    finally:
        running.stop(0)


def test_a_client_that_stops_reading_holds_up_no_one_else(native):
    """Streams forwarded for one client connection go over an upstream connection of its own: 24 GetModel streams
    that never read (each 236 KB, more than HTTP/2's windows between the front and the server behind it hold) fill
    only their own connection's windows; another client's forwarded calls still get through."""
    from dwcp_inference.api import distribution_pb2 as dpb, distribution_pb2_grpc as dpb_grpc

    running = start_server(bundled_models(), front="native", admin_port=-1, poll_seconds=0, max_concurrent_rpcs=64)
    target = f"127.0.0.1:{running.port}"
    stalled = grpc.insecure_channel(target, options=[("grpc.http2.bdp_probe", 0)])
    try:
        streams = [dpb_grpc.ModelDistributionStub(stalled).GetModel(dpb.GetModelRequest(model="bandwidth_predictor"))
                   for _ in range(24)]
        for call in streams:
            assert next(call).WhichOneof("part") == "manifest"  # then never read again
        with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            for _ in range(5):
                assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == SERVING
            first = next(iter(dpb_grpc.ModelDistributionStub(ch).GetModel(
                dpb.GetModelRequest(model="compression_selector"), timeout=10)))
            assert first.manifest.model.name == "compression_selector"
        for call in streams:
            call.cancel()
    finally:
        stalled.close()
        running.stop(0)
