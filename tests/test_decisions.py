"""Decisions as columns (services/decisions.py) answer what the per-item rules they replaced answered: the same
response, byte for byte once ids and times are cleared, from the same model outputs, for every RPC, single and a
batch of 64 (the per-item path is kept in bench/encode.py to measure against)."""

from __future__ import annotations

import numpy as np
import pytest

from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.bench import encode as bench
from dwcp_inference.bench.floor_python import _our_answers
from dwcp_inference.bench.requests import BATCH_FORMS, cases, method
from dwcp_inference.services import decisions, decode

from .test_native import _normalized


@pytest.fixture(scope="module")
def servicer():
    return _our_answers()


@pytest.mark.parametrize("batch", (1, 64))
@pytest.mark.parametrize("case", [c for c in cases("all") if c != "SelectCompression/sample"])
def test_batch_decisions_answer_as_the_per_item_rules(servicer, case, batch):
    module = decode.native_module()
    paths = bench.paths(servicer, case, batch, module)
    rpc = method(case) if batch == 1 else BATCH_FORMS[method(case)]
    old = _normalized(paths["per item"](), rpc)
    assert _normalized(paths["batch, python"](), rpc) == old
    if module is not None:  # test_native fails when the extension should be there and is not
        assert _normalized(paths["batch, native"](), rpc) == old
    assert len(getattr(pb, rpc + "Response").FromString(old).ListFields()[0][1] if batch > 1 else [1]) == batch


def test_an_answer_object_gives_each_item_in_the_per_item_form():
    values = np.array([1.0, 2.0])
    answers = decisions.BandwidthAnswers(values, values, values, values, values, 300.0)
    assert answers[-1] == decisions.BandwidthAnswer(2.0, 2.0, 2.0, 2.0, 2.0, 300.0)
    assert [a.bandwidth_mbps for a in answers] == [1.0, 2.0]
    with pytest.raises(IndexError):
        answers[2]
    ranked = decisions.CompressionAnswers(np.array([[1, 0]]), np.array([[0.75, 0.25]]), ["lz4", "zstd"], [1, 3])
    assert ranked[0].ranked == [("zstd", 3, 0.75), ("lz4", 1, 0.25)]
    assert decisions.SEVERITY_CODES == {"info": pb.SEVERITY_INFO, "warning": pb.SEVERITY_WARNING,
                                        "critical": pb.SEVERITY_CRITICAL}
