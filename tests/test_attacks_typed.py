"""The typed API's selectors echo what the caller sent into the error message: a huge version or label must come
back cut, with its status, not overflow the trailers (the client then sees RESOURCE_EXHAUSTED, "received metadata
size exceeds hard limit", instead of NOT_FOUND)."""

from __future__ import annotations

import grpc
import pytest

from dwcp_inference.api import inference_pb2 as pb, inference_pb2_grpc as pb_grpc
from dwcp_inference.services.settings import bundled_models

from .conftest import start_server

HUGE = "9" * 100_000


@pytest.fixture(scope="module")
def stub():
    server = start_server(bundled_models())
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.InferenceServiceStub(channel)
    server.stop(0)


@pytest.mark.parametrize("selector, words", [(pb.ModelSelector(version=HUGE), "no loaded version '9999"),
                                             (pb.ModelSelector(label=HUGE), "has no label '9999")])
def test_a_huge_selector_is_not_found_with_its_value_cut(stub, selector, words):
    request = pb.SelectCompressionRequest(link=pb.LinkState(throughput_mbps=100, rtt_ms=40, link_type=pb.LINK_TYPE_WAN),
                                          payload=pb.PayloadTraits(size_bytes=4096, sample=bytes(range(256)) * 16),
                                          model=selector)
    with pytest.raises(grpc.RpcError) as e:
        stub.SelectCompression(request)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND, e.value.details()
    assert words in e.value.details() and "(100000 long)" in e.value.details()
    assert len(e.value.details()) < 1000
    assert stub.SelectCompression(request.__class__(link=request.link, payload=request.payload)).model.version
