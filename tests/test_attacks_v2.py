"""Hostile callers of today's surfaces, on a real server over loopback: V2 tensors that cost nothing to send but
much to build or to describe, odd HTTP health paths and half-open connections to the metrics port, ModelDistribution
requests that echo huge names. Each answer is the right status with a message naming the field, and the server
keeps serving."""

from __future__ import annotations

import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from dwcp_inference.api import distribution_pb2 as dpb, distribution_pb2_grpc as dpb_grpc
from dwcp_inference.api import grpc_predict_v2_pb2 as v2, grpc_predict_v2_pb2_grpc as v2_grpc
from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.services import distribution, v2_health
from dwcp_inference.services.settings import bundled_models

from .conftest import start_server

MAX_BATCH = 64
BANDWIDTH = [("bandwidth_mbps", "FP64"), ("latency_ms", "FP64"), ("packet_loss", "FP64"), ("jitter_ms", "FP64"),
             ("time_of_day", "INT32"), ("day_of_week", "INT32")]
HUGE = "x" * 100_000  # echoed whole, a message would not fit in the trailers (8 KiB of metadata by default)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory):
    repo = tmp_path_factory.mktemp("attacks") / "repo"
    shutil.copytree(bundled_models(), repo)
    server = start_server(repo, max_batch=MAX_BATCH)
    yield server
    server.stop(0)


@pytest.fixture(scope="module")
def channel(running):
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return v2_grpc.GRPCInferenceServiceStub(channel)


def tensor(name: str, datatype: str, shape: list[int], **contents) -> v2.ModelInferRequest.InferInputTensor:
    t = v2.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    for field, values in contents.items():
        getattr(t.contents, field).extend(values)
    return t


def compression(n: int = 1, **replace) -> v2.ModelInferRequest:
    inputs = {"throughput_mbps": tensor("throughput_mbps", "FP64", [n], fp64_contents=[100.0] * n),
              "rtt_ms": tensor("rtt_ms", "FP64", [n], fp64_contents=[20.0] * n),
              "packet_loss": tensor("packet_loss", "FP64", [n], fp64_contents=[0.01] * n),
              "link_type": tensor("link_type", "BYTES", [n], bytes_contents=[b"wan"] * n),
              "size_bytes": tensor("size_bytes", "INT64", [n], int64_contents=[1000] * n),
              "payload_entropy": tensor("payload_entropy", "FP64", [n], fp64_contents=[5.0] * n),
              "payload_ratio": tensor("payload_ratio", "FP64", [n], fp64_contents=[0.5] * n)}
    inputs.update(replace)
    return v2.ModelInferRequest(model_name="compression_selector", inputs=list(inputs.values()))


def refused(stub, request, timeout: float = 10) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(request, timeout=timeout)
    return e.value


def still_serving(stub) -> None:
    assert stub.ModelInfer(compression(), timeout=10).outputs[0].name == "codec"


# ------------------------------------------------------------------ V2 ModelInfer


def test_empty_tensors_with_a_huge_batch_are_refused_before_any_item_is_built(stub):
    # No elements cost no bytes: [2_000_000, 0] is a 100-byte request that used to become two million typed items
    # (about 26 s of a worker and 300 MB) before --max-batch refused it.
    request = v2.ModelInferRequest(model_name="bandwidth_predictor", inputs=[
        tensor(name, datatype, [2_000_000, 0]) for name, datatype in BANDWIDTH])
    e = refused(stub, request, timeout=5)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.details()
    assert e.details() == ("input 'bandwidth_mbps' (the first dimension): expected at most 64 items, "
                           "got 2000000")
    still_serving(stub)


@pytest.mark.parametrize("shape", [[0, 2**62], [1, 2**62, 0], [2**31, 2**31]])
def test_shapes_too_large_for_an_array_are_invalid_argument_naming_the_input(stub, shape):
    e = refused(stub, compression(throughput_mbps=tensor("throughput_mbps", "FP64", shape)))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.details()
    assert e.details().startswith("input 'throughput_mbps'")
    still_serving(stub)


def test_a_tensor_of_a_hundred_dimensions_is_refused_in_a_short_message(stub):
    e = refused(stub, compression(throughput_mbps=tensor("throughput_mbps", "FP64", [1] * 100,
                                                         fp64_contents=[1.0])))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.details() == "input 'throughput_mbps': shape has 100 dimensions, expected at most 8"


@pytest.mark.parametrize("request_, code, start", [
    (compression(link_type=tensor("link_type", "BYTES", [1], bytes_contents=[HUGE.encode()])),
     grpc.StatusCode.INVALID_ARGUMENT, "input 'link_type'[0]: expected one of"),
    (v2.ModelInferRequest(model_name=HUGE), grpc.StatusCode.NOT_FOUND, "model_name: unknown model 'xxx"),
    (v2.ModelInferRequest(model_name="compression_selector", model_version="9" * 100_000),
     grpc.StatusCode.NOT_FOUND, "model_version: compression_selector has no loaded version"),
    (compression(extra=tensor(HUGE, "FP64", [1], fp64_contents=[1.0])), grpc.StatusCode.INVALID_ARGUMENT,
     "input 'xxx"),
], ids=["link_type value", "model name", "version", "input name"])
def test_huge_names_and_values_are_quoted_short_so_the_status_arrives(stub, request_, code, start):
    e = refused(stub, request_)
    assert e.code() == code, e.details()
    assert e.details().startswith(start) and len(e.details()) < 4096
    still_serving(stub)


def test_values_in_the_wrong_contents_field_name_the_field_the_datatype_reads(stub):
    e = refused(stub, compression(size_bytes=tensor("size_bytes", "INT32", [1], int64_contents=[1000])))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.details() == ("input 'size_bytes': shape [1] holds 1 elements, got 0 in contents.int_contents "
                           "(where INT32 travels)")


# ------------------------------------------------------------------ HTTP health on the metrics port


def http(port: int, path: str, method: str = "GET") -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method),
                                    timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.parametrize("path", ["/v2/health/readyz", "/v2/health", "/v2/models/compression_selector/versions/1",
                                  "/v2/models/../x/ready", "/v2/models/compression_selector/ready/"])
def test_a_v2_path_not_served_is_404_not_the_metrics_page(running, path):
    # A readiness probe with a typo must not read 200.
    assert http(running.metrics_port, path) == 404
    assert http(running.metrics_port, path, "HEAD") == 404
    assert http(running.metrics_port, "/v2/health/ready") == 200


def test_half_open_connections_to_the_metrics_port_are_bounded_and_closed_when_idle(running, monkeypatch):
    monkeypatch.setattr(v2_health._Quiet, "timeout", 1.0)
    port = running.metrics_port
    before = threading.active_count()
    extra = v2_health.MAX_CONNECTIONS + 40
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(extra)]
    try:
        for s in socks:  # a request line, then nothing: each used to hold a thread of the server for ever
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
        time.sleep(0.5)
        assert threading.active_count() - before <= v2_health.MAX_CONNECTIONS
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and threading.active_count() > before:
            time.sleep(0.1)
        assert threading.active_count() <= before, "idle connections are closed after IDLE_SECONDS"
        assert http(port, "/metrics") == 200
        assert http(port, "/v2/health/live") == 200
    finally:
        for s in socks:
            s.close()


# ------------------------------------------------------------------ ModelDistribution


@pytest.mark.parametrize("request_, code, start", [
    (dpb.GetModelRequest(model=HUGE), grpc.StatusCode.NOT_FOUND, "model: unknown model 'xxx"),
    (dpb.GetModelRequest(model="compression_selector", selector=pb.ModelSelector(version="9" * 100_000)),
     grpc.StatusCode.INVALID_ARGUMENT, "selector.version: expected a version of digits"),
    (dpb.GetModelRequest(model="compression_selector", selector=pb.ModelSelector(version="7")),
     grpc.StatusCode.NOT_FOUND, "selector.version: compression_selector has no loaded version '7'"),
    (dpb.GetModelRequest(model="compression_selector", selector=pb.ModelSelector(label="blue")),
     grpc.StatusCode.NOT_FOUND, "selector.label: compression_selector has no label 'blue'"),
], ids=["huge model name", "huge version", "unknown version", "unknown label"])
def test_get_model_refusals_name_the_selector_field_and_fit_in_the_status(channel, request_, code, start):
    stub = dpb_grpc.ModelDistributionStub(channel)
    with pytest.raises(grpc.RpcError) as e:
        list(stub.GetModel(request_, timeout=10))
    assert e.value.code() == code, e.value.details()
    assert e.value.details().startswith(start) and len(e.value.details()) < 4096


def test_a_watch_naming_a_huge_model_is_not_found_in_a_short_message(channel):
    stub = dpb_grpc.ModelDistributionStub(channel)
    with pytest.raises(grpc.RpcError) as e:
        next(stub.WatchModels(dpb.WatchModelsRequest(models=["compression_selector", HUGE]), timeout=10))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert e.value.details().startswith("models[1]: unknown model 'xxx") and len(e.value.details()) < 4096


def test_a_get_model_client_that_never_reads_is_cut_and_frees_its_place(tmp_path, monkeypatch):
    # GetModel holds one of --max-concurrent-rpcs places while it streams: clients that open streams and never read
    # (with HTTP/2's window at its 64 KiB start, as bdp_probe=0 keeps it) used to hold every place for ever, and
    # every inference call was RESOURCE_EXHAUSTED.
    monkeypatch.setattr(distribution, "STALL_SECONDS", 1.0, raising=False)
    repo = tmp_path / "repo"
    shutil.copytree(bundled_models(), repo)
    server = start_server(repo, max_concurrent_rpcs=2)
    stalled = []
    try:
        for _ in range(2):
            ch = grpc.insecure_channel(f"127.0.0.1:{server.port}", options=[
                ("grpc.use_local_subchannel_pool", 1), ("grpc.http2.bdp_probe", 0)])
            call = dpb_grpc.ModelDistributionStub(ch).GetModel(dpb.GetModelRequest(model="bandwidth_predictor"))
            assert next(call).WhichOneof("part") == "manifest"  # then never read again
            stalled.append((ch, call))
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = v2_grpc.GRPCInferenceServiceStub(ch)
            e = refused(stub, compression())
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # the two places are held, for now
            deadline = time.monotonic() + 20
            while True:
                try:
                    still_serving(stub)
                    break
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline
                    time.sleep(0.2)
            first = next(iter(dpb_grpc.ModelDistributionStub(ch).GetModel(
                dpb.GetModelRequest(model="compression_selector"), timeout=10)))
            assert first.manifest.model.name == "compression_selector"
        for _, call in stalled:  # the stalled streams end, and say why
            with pytest.raises(grpc.RpcError) as e:
                for _ in call:
                    pass
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e.value.details()
            assert "no data taken for 1 s" in e.value.details()
    finally:
        for ch, _ in stalled:
            ch.close()
        server.stop(0)
