"""Answers a caller can trust, outcomes any replica can judge (issue 15, items 7, 8 and 9's deadlines), on real
servers over real channels: a non-finite model output never answers OK, ReportOutcome's actuals are validated,
replicas sharing an outcome key judge each other's prediction ids, and work whose caller gave up is not computed."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dwcp_inference import metadata
from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc
from dwcp_inference.services.errors import VersionRefused
from dwcp_inference.services.runtime import ModelRuntime
from dwcp_inference.services.settings import bundled_models

from .conftest import start_server
from .samples import link_history, node_metrics

CPU = 7  # reliability_detector's feature column of cpu_usage (identity transform)


def _stub(running) -> pb_grpc.InferenceServiceStub:
    return pb_grpc.InferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{running.port}"))


def _value(running, name: str, **labels) -> float:
    return running.metrics.registry.get_sample_value(name, labels) or 0.0


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code(), e.value.details()


# ------------------------------------------------------------------ item 8: one key, any replica

@pytest.fixture()
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "outcome.key"
    path.write_text("a shared secret of more than sixteen bytes\n")
    return path


def test_replicas_sharing_a_key_judge_each_others_predictions_and_others_refuse(key_file):
    a = start_server(bundled_models(), outcome_key_file=key_file, admin_port=-1)
    b = start_server(bundled_models(), outcome_key_file=key_file, admin_port=-1)
    stranger = start_server(bundled_models(), admin_port=-1)  # a random key of its own
    try:
        pred = _stub(a).PredictBandwidth(pb.PredictBandwidthRequest(history=link_history())).prediction
        report = pb.ReportOutcomeRequest(prediction_id=pred.prediction_id,
                                         actual_network=pb.NetworkSample(bandwidth_mbps=480))
        code, details = _code(lambda: _stub(stranger).ReportOutcome(report))
        assert code == grpc.StatusCode.NOT_FOUND and "signed with another outcome key" in details
        assert _stub(b).ReportOutcome(report).model.name == "bandwidth_predictor"
        assert _value(b, "dwcp_inference_outcomes_total", model="bandwidth_predictor", version="1") == 1
        code, details = _code(lambda: _stub(b).ReportOutcome(report))  # a replay to the same process
        assert code == grpc.StatusCode.NOT_FOUND and "already reported" in details
    finally:
        for s in (a, b, stranger):
            s.stop(0)


def test_a_short_key_file_stops_the_server_with_a_clear_error(tmp_path):
    short = tmp_path / "key"
    short.write_text("too short")
    with pytest.raises(ValueError, match="outcome-key-file .*: the key is 9 bytes, expected at least 16"):
        start_server(bundled_models(), outcome_key_file=short, admin_port=-1, metrics_port=-1)


# ------------------------------------------------------------------ item 7: actuals validated

def test_actuals_that_are_not_finite_positive_bandwidths_or_times_are_refused_naming_the_field():
    running = start_server(bundled_models(), admin_port=-1)
    stub = _stub(running)
    try:
        for actual in (0.0, -5.0, float("inf"), float("nan"), 2e7):
            pid = stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history())).prediction.prediction_id
            code, details = _code(lambda: stub.ReportOutcome(pb.ReportOutcomeRequest(
                prediction_id=pid, actual_network=pb.NetworkSample(bandwidth_mbps=actual))))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (actual, details)
            assert details.startswith("actual_network.bandwidth_mbps: expected a finite number > 0"), details
        from .samples import compression_query
        link, payload = compression_query()
        pid = stub.SelectCompression(pb.SelectCompressionRequest(link=link, payload=payload)).decision.prediction_id
        times = pb.CompressionTimes(times=[pb.CompressionTimes.Time(codec=pb.CODEC_LZ4, level=1, seconds=float("inf"))])
        code, details = _code(lambda: stub.ReportOutcome(pb.ReportOutcomeRequest(prediction_id=pid,
                                                                                 compression_times=times)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "compression_times.times[0].seconds" in details
        assert _value(running, "dwcp_inference_outcomes_total", model="bandwidth_predictor", version="1") == 0
    finally:
        running.stop(0)


# ------------------------------------------------------------------ item 7: non-finite outputs

def _nan_where(tmp_path: Path, condition: str, bound: float) -> Path:
    """A copy of the bundled repository whose reliability_detector answers NaN probabilities where its cpu_usage
    feature is >= bound ("edge") or within 1e-3 of bound ("inside")."""
    repo = tmp_path / "repo"
    shutil.copytree(bundled_models(), repo)
    version = repo / "reliability_detector" / "1"
    model = onnx.load(version / metadata.MODEL_FILE)
    g = model.graph
    for node in g.node:
        node.output[:] = ["raw_probabilities" if o == "probabilities" else o for o in node.output]
    g.initializer.extend([helper.make_tensor("cpu_col", TensorProto.INT64, [], [CPU]),
                          helper.make_tensor("bound", TensorProto.FLOAT, [], [bound]),
                          helper.make_tensor("width", TensorProto.FLOAT, [], [1e-3]),
                          helper.make_tensor("nan", TensorProto.FLOAT, [], [float("nan")]),
                          helper.make_tensor("axis1", TensorProto.INT64, [1], [1])])
    g.node.extend([helper.make_node("Gather", ["features", "cpu_col"], ["cpu"], axis=1)])
    if condition == "edge":
        g.node.extend([helper.make_node("GreaterOrEqual", ["cpu", "bound"], ["hit"])])
    else:
        g.node.extend([helper.make_node("Sub", ["cpu", "bound"], ["off"]), helper.make_node("Abs", ["off"], ["dist"]),
                       helper.make_node("Less", ["dist", "width"], ["hit"])])
    g.node.extend([helper.make_node("Unsqueeze", ["hit", "axis1"], ["hit2"]),
                   helper.make_node("Where", ["hit2", "nan", "raw_probabilities"], ["probabilities"])])
    onnx.checker.check_model(model)
    onnx.save(model, version / metadata.MODEL_FILE)
    meta_path = version / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = metadata.sha256_file(version / metadata.MODEL_FILE)
    meta_path.write_text(json.dumps(meta))
    return repo


def test_a_version_with_nan_at_the_edge_of_a_fields_range_is_refused_at_load(tmp_path):
    repo = _nan_where(tmp_path, "edge", 0.999)  # cpu_usage is valid up to 1.0
    with pytest.raises(VersionRefused, match=r"edge probe: non-finite output \(probabilities\)"):
        ModelRuntime.load(repo / "reliability_detector" / "1")


def test_a_nan_inside_the_range_fails_only_its_call_with_internal_and_is_counted(tmp_path):
    running = start_server(_nan_where(tmp_path, "inside", 0.5), admin_port=-1)
    stub = _stub(running)
    try:
        ok = stub.DetectAnomaly(pb.DetectAnomalyRequest(metrics=node_metrics(cpu=0.4)))
        assert np.isfinite(ok.verdict.score)
        code, details = _code(lambda: stub.DetectAnomaly(pb.DetectAnomalyRequest(metrics=node_metrics(cpu=0.5))))
        assert code == grpc.StatusCode.INTERNAL
        assert details == ("reliability_detector v1: the model gave a non-finite output (probabilities) for "
                           "item(s) 0 of this call; no answer is given")
        code, details = _code(lambda: stub.DetectAnomalyBatch(pb.DetectAnomalyBatchRequest(
            metrics=[node_metrics(cpu=0.3), node_metrics(cpu=0.5), node_metrics(cpu=0.6), node_metrics(cpu=0.5)])))
        assert code == grpc.StatusCode.INTERNAL and "item(s) 1, 3 of this call" in details
        assert _value(running, "dwcp_inference_nonfinite_outputs_total", model="reliability_detector",
                      version="1") == 2
        assert _value(running, "dwcp_inference_requests_total", rpc="DetectAnomaly", code="INTERNAL") == 1
        assert stub.DetectAnomaly(pb.DetectAnomalyRequest(metrics=node_metrics(cpu=0.6))).model.version == "1"
    finally:
        running.stop(0)


def test_non_finite_outputs_among_calls_computed_together_are_counted_once_per_call(tmp_path):
    """A burst of single calls is computed as one batch (the transport's coalescer); a NaN in it fails that
    group, whose calls are then answered alone: only the calls whose own output is non-finite fail and count."""
    cpus = [0.3, 0.5, 0.4, 0.6, 0.5, 0.2] * 8
    running = start_server(_nan_where(tmp_path, "inside", 0.5), admin_port=-1, threads=1,
                           max_concurrent_rpcs=2 * len(cpus))  # none shed
    stub = _stub(running)
    try:
        for _ in range(20):  # until a burst has been computed together
            futures = [stub.DetectAnomaly.future(pb.DetectAnomalyRequest(metrics=node_metrics(cpu=c))) for c in cpus]
            codes = [f.exception().code() if f.exception() else grpc.StatusCode.OK for f in futures]
            assert codes == [grpc.StatusCode.INTERNAL if c == 0.5 else grpc.StatusCode.OK for c in cpus]
            if _value(running, "dwcp_inference_coalesced_calls_count", rpc="DetectAnomaly"):
                break
        else:
            pytest.fail("no burst was computed together")
        failed = _value(running, "dwcp_inference_requests_total", rpc="DetectAnomaly", code="INTERNAL")
        assert failed == cpus.count(0.5) * (_ + 1)
        assert _value(running, "dwcp_inference_nonfinite_outputs_total", model="reliability_detector",
                      version="1") == failed
    finally:
        running.stop(0)


# ------------------------------------------------------------------ item 9: deadlines

def test_work_whose_caller_gave_up_is_not_computed_and_not_counted_ok(monkeypatch):
    running = start_server(bundled_models(), admin_port=-1)
    stub = _stub(running)
    rows: list[int] = []
    entered = threading.Event()
    run, run_raw = ModelRuntime.run, ModelRuntime.run_raw

    def slowly(rows_in: int) -> None:  # a slow model: the first call holds the version while the second queues
        rows.append(rows_in)
        entered.set()
        time.sleep(3)

    def slow_run(self, x):  # a version without the feature graph
        slowly(len(x))
        return run(self, x)

    def slow_run_raw(self, columns):  # a version with it
        slowly(len(next(iter(columns.values()))))
        return run_raw(self, columns)

    monkeypatch.setattr(ModelRuntime, "run", slow_run)
    monkeypatch.setattr(ModelRuntime, "run_raw", slow_run_raw)
    try:
        request = pb.PredictBandwidthRequest(history=link_history())
        codes = []

        def call(timeout):
            codes.append(_code(lambda: stub.PredictBandwidth(request, timeout=timeout))[0])

        first = threading.Thread(target=call, args=(2,))
        first.start()
        assert entered.wait(10), "the first call never reached the model"
        call(1)  # queues behind the first, which holds the model for 3 s
        first.join()
        assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * 2
        deadline = time.monotonic() + 5
        while _value(running, "dwcp_inference_requests_total", rpc="PredictBandwidth",
                     code="DEADLINE_EXCEEDED") < 2:  # the server learns it after the client does
            assert time.monotonic() < deadline, "the server did not count two DEADLINE_EXCEEDED calls"
            time.sleep(0.05)
        time.sleep(0.2)
        assert _value(running, "dwcp_inference_requests_total", rpc="PredictBandwidth", code="OK") == 0
        assert rows == [1], f"the model ran for rows {rows}: the queued call whose caller gave up was computed"
    finally:
        monkeypatch.undo()
        running.stop(0)
