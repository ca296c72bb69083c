"""Single calls that arrive together, computed as one batch (services/transport.py `Coalescer` and the native
front's workers in services/front.py, servicers.py `InferenceServicer.many`): each caller gets what it gets alone (answers, statuses, messages, ids that verify),
through real servers on loopback (native and python decoders) and, for the cases a burst cannot force, in-process."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import shutil
import threading

import grpc
import pytest
from google.protobuf.json_format import MessageToDict

from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.services import convert, decode
from dwcp_inference.services.settings import bundled_models
from dwcp_inference.services.transport import Aborted, CallContext

from .conftest import start_server
from .samples import compression_query, consensus_window, link_history, node_metrics
from .test_native import _vector_requests, valid_requests

SERVICE = "/dwcp.inference.v1.InferenceService/"
SINGLE = ("PredictBandwidth", "SelectCompression", "DetectAnomaly", "DetectHighLatency")
# A call each RPC refuses in its batch computation (a value or a length the model cannot take), not before it.
BAD = {
    "PredictBandwidth": pb.PredictBandwidthRequest(history=link_history(3)),
    "SelectCompression": pb.SelectCompressionRequest(link=pb.LinkState(throughput_mbps=-5, rtt_ms=40,
                                                                       link_type=pb.LINK_TYPE_WAN),
                                                     payload=compression_query()[1]),
    "DetectAnomaly": pb.DetectAnomalyRequest(metrics=node_metrics(cpu=math.nan)),
    "DetectHighLatency": pb.DetectHighLatencyRequest(window=consensus_window(2)),
}
OUTCOMES = {"PredictBandwidth": pb.ReportOutcomeRequest(actual_network=pb.NetworkSample(bandwidth_mbps=100)),
            "SelectCompression": pb.ReportOutcomeRequest(best_choice=pb.CompressionChoice(codec=pb.CODEC_LZ4)),
            "DetectAnomaly": pb.ReportOutcomeRequest(was_anomaly=True),
            "DetectHighLatency": pb.ReportOutcomeRequest(was_anomaly=False)}


def _repository(tmp_path_factory):
    """The bundled models, with a second bandwidth version (a copy of the first) for version selectors."""
    repo = tmp_path_factory.mktemp("coalesce") / "repo"
    shutil.copytree(bundled_models(), repo)
    second = repo / "bandwidth_predictor" / "2"
    shutil.copytree(repo / "bandwidth_predictor" / "1", second)
    meta = json.loads((second / "metadata.json").read_text())
    (second / "metadata.json").write_text(json.dumps({**meta, "version": "2"}))
    return repo


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """The same repository served by the native decoder behind the native front (its workers coalesce) and by the
    python one on the grpc.aio transport (transport.Coalescer), coalescing (the default)."""
    repo = _repository(tmp_path_factory)
    running = {name: start_server(repo, decoder=name, front=front, admin_port=-1, poll_seconds=0,
                                  max_concurrent_rpcs=512)
               for name, front in (("native", "native"), ("python", "grpcio"))}
    channels = {name: grpc.insecure_channel(f"127.0.0.1:{r.port}") for name, r in running.items()}
    yield running, channels
    for name in running:
        channels[name].close()
        running[name].stop(0)


@pytest.fixture(autouse=True)
def fixed_now(monkeypatch):
    """One time of answering for every call (the servers run in this process): answers sent at different times
    compare whole (a history without timestamps is valid until then plus the horizon)."""
    monkeypatch.setattr(convert, "now", lambda: 1_764_570_000.25)


def _call(channel: grpc.Channel, rpc: str):
    return channel.unary_unary(SERVICE + rpc, request_serializer=lambda b: b,
                               response_deserializer=getattr(pb, rpc + "Response").FromString)


def _outcome(response_or_error) -> tuple:
    if isinstance(response_or_error, grpc.RpcError):
        return response_or_error.code().name, response_or_error.details()
    return "OK", response_or_error


def _one_by_one(channel: grpc.Channel, rpc: str, requests: list[bytes]) -> list[tuple]:
    out = []
    for data in requests:
        try:
            out.append(_outcome(_call(channel, rpc)(data, timeout=30)))
        except grpc.RpcError as e:
            out.append(_outcome(e))
    return out


HEAVY = pb.PredictBandwidthBatchRequest(histories=[link_history(1000)] * 64).SerializeToString()
WORKERS = 2  # the servers' threads (the default)


def _together(channel: grpc.Channel, rpc: str, requests: list[bytes], timeouts: list[float] | None = None) -> list:
    """All the calls fired at once on one channel (none waits for another's answer), in order, while every worker
    computes a heavy batch: they wait together, whichever transport hands them out and however fast it is."""
    call = _call(channel, rpc)
    heavy = [_call(channel, "PredictBandwidthBatch").future(HEAVY, timeout=60) for _ in range(WORKERS)]
    threading.Event().wait(0.02)  # the heavy calls are taken first (a wait for order, asserting nothing)
    futures = [call.future(data, timeout=t) for data, t in zip(requests, timeouts or [30] * len(requests))]
    for f in heavy:
        f.result()
    out = []
    for f in futures:
        try:
            out.append(_outcome(f.result()))
        except grpc.RpcError as e:
            out.append(_outcome(e))
    return out


def _groups(running, rpc: str) -> float:
    """Batches of single calls computed together so far (dwcp_inference_coalesced_calls)."""
    return running.metrics.registry.get_sample_value("dwcp_inference_coalesced_calls_count", {"rpc": rpc}) or 0


def _comparable(response) -> dict:
    """The answer without what differs between two calls by design: the prediction id."""
    d = MessageToDict(response, preserving_proto_field_name=True)
    for item in d.values():
        if isinstance(item, dict):
            item.pop("prediction_id", None)
    return d


def _close(a, b) -> bool:
    """Equal, floats within float32 rounding: onnxruntime's float32 sums may round differently at another batch
    size (as when the micro-batcher gathers calls)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
    return a == b


def _same(alone: list[tuple], together: list[tuple]) -> None:
    for k, (one, many) in enumerate(zip(alone, together, strict=True)):
        assert one[0] == many[0], f"call {k}: alone {one}, together {many}"
        if one[0] == "OK":
            assert _close(_comparable(one[1]), _comparable(many[1])), f"call {k}: alone {one[1]}, together {many[1]}"
        else:
            assert one == many


def _requests(rpc: str) -> list[bytes]:
    """The bundled versions' test vectors and the valid requests of test_native for one RPC."""
    cases = _vector_requests() + valid_requests(random.Random(0))
    return [data for name, data in cases if name == rpc]


@pytest.mark.parametrize("decoder", ["native", "python"])
@pytest.mark.parametrize("rpc", SINGLE)
def test_calls_fired_together_get_the_answers_they_get_alone(servers, decoder, rpc):
    running, channels = servers
    requests = _requests(rpc) * 6
    alone = _one_by_one(channels[decoder], rpc, requests)
    assert all(code == "OK" for code, _ in alone)
    before = _groups(running[decoder], rpc)
    together = _together(channels[decoder], rpc, requests)
    assert _groups(running[decoder], rpc) > before, "no calls were computed together"
    _same(alone, together)
    for _, response in together:  # every id signed for a batch of calls verifies, naming its version
        item = next(v for f, v in response.ListFields() if f.name != "model")
        outcome = pb.ReportOutcomeRequest()
        outcome.CopyFrom(OUTCOMES[rpc])
        outcome.prediction_id = item.prediction_id
        answer = _call(channels[decoder], "ReportOutcome")(outcome.SerializeToString(), timeout=30)
        assert (answer.model.name, answer.model.version) == (response.model.name, response.model.version)


@pytest.mark.parametrize("decoder", ["native", "python"])
@pytest.mark.parametrize("rpc", SINGLE)
def test_a_bad_call_among_good_ones_gets_the_message_it_gets_alone(servers, decoder, rpc):
    running, channels = servers
    good = _requests(rpc)[:4] * 8
    bad = BAD[rpc].SerializeToString()
    requests = good[:16] + [bad] + good[16:] + [bad]
    alone = _one_by_one(channels[decoder], rpc, requests)
    assert alone[16][0] == "INVALID_ARGUMENT" and alone[-1] == alone[16]
    before = _groups(running[decoder], rpc)
    together = _together(channels[decoder], rpc, requests)
    assert _groups(running[decoder], rpc) > before, "no calls were computed together"
    _same(alone, together)


def test_selectors_in_one_burst_are_each_answered_by_their_version(servers):
    running, channels = servers
    history = link_history(30)
    selectors = [pb.ModelSelector(version="1"), pb.ModelSelector(version="2"), pb.ModelSelector(label="latest"),
                 pb.ModelSelector(), pb.ModelSelector(version="7")] * 8
    requests = [pb.PredictBandwidthRequest(history=history, model=s).SerializeToString() for s in selectors]
    alone = _one_by_one(channels["native"], "PredictBandwidth", requests)
    before = _groups(running["native"], "PredictBandwidth")
    together = _together(channels["native"], "PredictBandwidth", requests)
    assert _groups(running["native"], "PredictBandwidth") > before
    _same(alone, together)
    expected = {"1": "1", "2": "2", "latest": "2", "": "2"}
    for selector, (code, answer) in zip(selectors, together):
        if selector.version == "7":
            assert code == "NOT_FOUND" and "no loaded version '7'" in answer
        else:
            assert code == "OK" and answer.model.version == expected[selector.version or selector.label]


def test_a_call_whose_deadline_passes_in_a_burst_is_answered_deadline_exceeded(servers):
    running, channels = servers
    requests = _requests("DetectHighLatency")[:4] * 10
    timeouts = [30.0] * len(requests)
    timeouts[len(requests) // 2] = 0.0001
    together = _together(channels["native"], "DetectHighLatency", requests, timeouts)
    codes = [code for code, _ in together]
    assert codes[len(requests) // 2] == "DEADLINE_EXCEEDED"
    assert codes.count("OK") == len(requests) - 1


def test_coalesce_max_1_computes_every_call_alone(tmp_path_factory, caplog):
    repo = _repository(tmp_path_factory)
    with caplog.at_level(logging.INFO, logger="dwcp_inference.services.server"):
        running = start_server(repo, admin_port=-1, poll_seconds=0, max_concurrent_rpcs=512, coalesce_max=1)
    try:
        assert "single calls: computed one by one (--coalesce-max 1)" in caplog.text
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            together = _together(channel, "PredictBandwidth", _requests("PredictBandwidth") * 8)
        assert all(code == "OK" for code, _ in together)
        assert _groups(running, "PredictBandwidth") == 0
    finally:
        running.stop(0)


# ------------------------------------------------------------------ in-process: what a burst cannot force

class _NoDeadline:
    def time_remaining(self) -> None:
        return None


def test_a_busy_rpc_does_not_hold_back_another_rpc_waiting_for_a_thread():
    """One pool thread: while RPC A's calls keep coming, B's call waiting for the thread is computed before A's
    next batch (the drain goes to the back of the pool's queue after each batch)."""
    from concurrent.futures import ThreadPoolExecutor

    from dwcp_inference.services.metrics import Metrics
    from dwcp_inference.services.transport import Admission, LoopThread, threaded_handler

    computed, gate = [], threading.Event()

    def a_alone(request, context):
        computed.append(("A", request))
        gate.wait(10)
        return request

    def a_together(requests, contexts):
        computed.append(("A", tuple(requests)))
        return list(requests)

    def b_alone(request, context):
        computed.append(("B", request))
        return request

    pool, loop, admission, metrics = ThreadPoolExecutor(1), LoopThread(), Admission(100), Metrics()
    a = threaded_handler("A", a_alone, pool, admission, metrics, many=a_together, max_calls=8)
    b = threaded_handler("B", b_alone, pool, admission, metrics, many=lambda r, c: list(r), max_calls=8)

    async def scenario():
        first = asyncio.ensure_future(a(1, _NoDeadline()))
        while not computed:  # A's drain holds the only thread
            await asyncio.sleep(0.001)
        more = [asyncio.ensure_future(a(k, _NoDeadline())) for k in (2, 3)]
        other = asyncio.ensure_future(b("b", _NoDeadline()))
        await asyncio.sleep(0)  # all three queued
        gate.set()
        return await asyncio.gather(first, *more, other)

    try:
        assert loop.run(scenario(), timeout=20) == [1, 2, 3, "b"]
    finally:
        loop.close()
        pool.shutdown()
    assert computed == [("A", 1), ("B", "b"), ("A", (2, 3))]
    assert admission.admitted == 0

@pytest.fixture(scope="module")
def servicer():
    from dwcp_inference.services.metrics import Metrics
    from dwcp_inference.services.outcomes import OutcomeTracker
    from dwcp_inference.services.repository import Repository
    from dwcp_inference.services.servicers import InferenceServicer

    metrics = Metrics()
    repo = Repository(bundled_models())
    repo.load_all()
    return InferenceServicer(repo, OutcomeTracker(metrics, b"k" * 32), metrics, 1024)


class ExpiresWhileComputed(CallContext):
    """A call whose deadline passes after the servicer has looked at it once (while its batch is computed)."""

    def __init__(self):
        super().__init__(None)
        self.looks = 0

    def time_remaining(self) -> float:
        self.looks += 1
        return 10.0 if self.looks == 1 else -1.0


def _decoded_requests(decoder: str, rpc: str, datas: list[bytes]) -> list:
    deserialize = decode.choose(decoder).deserializer(getattr(pb, rpc + "Request"))
    return [deserialize(d) for d in datas]


@pytest.mark.parametrize("decoder", ["native", "python"])
@pytest.mark.parametrize("rpc", SINGLE)
def test_many_answers_each_call_as_alone_whatever_its_batch_does(servicer, decoder, rpc):
    """A bad call in the batch (each call is then computed alone), a deadline passed before or while computing."""
    datas = _requests(rpc)[:3] + [BAD[rpc].SerializeToString()] + _requests(rpc)[:3]
    requests = _decoded_requests(decoder, rpc, datas)
    alone = [servicer.many(rpc, [r], [CallContext(None)])[0] for r in requests]
    assert isinstance(alone[3], Aborted) and alone[3].code == grpc.StatusCode.INVALID_ARGUMENT
    answers = servicer.many(rpc, requests, [CallContext(None) for _ in requests])
    assert (answers[3].code, answers[3].details) == (alone[3].code, alone[3].details)
    assert not any(isinstance(a, Aborted) for k, a in enumerate(answers) if k != 3)

    good = [r for k, r in enumerate(requests) if k != 3]
    contexts = [CallContext(None) for _ in good]
    contexts[1], contexts[4] = CallContext(-1.0), ExpiresWhileComputed()
    answers = servicer.many(rpc, good, contexts)
    assert (answers[1].code, answers[1].details) == (
        grpc.StatusCode.DEADLINE_EXCEEDED, f"{rpc}: the deadline passed before the call was computed")
    assert (answers[4].code, answers[4].details) == (
        grpc.StatusCode.DEADLINE_EXCEEDED, f"{rpc}: the deadline passed while the call was computed")
    assert not any(isinstance(a, Aborted) for k, a in enumerate(answers) if k not in (1, 4))


@pytest.mark.parametrize("decoder", ["native", "python"])
@pytest.mark.parametrize("rpc", SINGLE)
def test_a_batch_of_64_split_is_byte_for_byte_the_single_responses(servicer, decoder, rpc):
    """The batch response's bytes [1: item]... [2: model] cut into single responses [1: item k] [2: model] are the
    bytes the single form's message serializes to, for the same answers and ids."""
    from dwcp_inference.services.servicers import COALESCED
    datas = (_requests(rpc) * 64)[:64]
    requests = _decoded_requests(decoder, rpc, datas)
    calls = [decode.from_message(decode.parsed(r)) for r in requests]
    reply = COALESCED[rpc].compute(servicer, calls, decode.Selector())
    ids = [f"id-{k}" for k in range(64)]
    batch = reply.render(lambda *a, **kw: ids)  # the batch form's message: its items
    items = getattr(batch, reply.fields[1])
    native = requests[0].native if isinstance(requests[0], decode.Encoded) else None
    singles = reply.render_singles(lambda *a, **kw: ids, native)
    assert len(singles) == 64
    for k, single in enumerate(singles):
        expected = reply.single_cls(**{reply.fields[0]: items[k]}, model=batch.model)
        got = single if native is not None else single.SerializeToString()
        assert got == expected.SerializeToString(), f"{rpc} item {k}"
