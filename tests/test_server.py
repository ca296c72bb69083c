"""The whole chain: models trained by the real jobs, served by the real server, called through a real channel."""

from __future__ import annotations

import shutil
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from dwcp_inference import MODEL_KINDS
from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc

from .conftest import start_server
from .samples import compression_query, consensus_window, link_history, node_metrics

pytestmark = pytest.mark.chain


def test_predict_bandwidth_answers_from_onnx_and_names_its_version(stub):
    resp = stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history()))
    p = resp.prediction
    assert resp.model.name == "bandwidth_predictor" and resp.model.version == "1"
    assert 200 < p.predicted_bandwidth_mbps < 1500
    assert 0 <= p.predicted_packet_loss <= 1 and p.predicted_latency_ms > 0 and p.predicted_jitter_ms >= 0
    assert 0 <= p.confidence <= 1
    last = link_history().samples[-1].timestamp.seconds
    assert p.valid_until.seconds > last
    assert p.prediction_id


def test_bandwidth_follows_the_link(stub):
    slow = stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history(bandwidth=50)))
    fast = stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history(bandwidth=2000)))
    assert fast.prediction.predicted_bandwidth_mbps > 5 * slow.prediction.predicted_bandwidth_mbps


def test_batch_forms_answer_each_item_in_order(stub):
    bw = stub.PredictBandwidthBatch(pb.PredictBandwidthBatchRequest(
        histories=[link_history(bandwidth=50), link_history(bandwidth=2000)]))
    assert [p.predicted_bandwidth_mbps > 500 for p in bw.predictions] == [False, True]
    queries = [pb.CompressionQuery(link=link, payload=payload) for link, payload in
               (compression_query(), compression_query(sample=bytes(range(256)) * 16))]
    sc = stub.SelectCompressionBatch(pb.SelectCompressionBatchRequest(queries=queries))
    assert len(sc.decisions) == 2 and sc.model.name == "compression_selector"
    an = stub.DetectAnomalyBatch(pb.DetectAnomalyBatchRequest(metrics=[node_metrics(), node_metrics(error_rate=0.2)]))
    assert [v.is_anomaly for v in an.verdicts] == [False, True]
    hl = stub.DetectHighLatencyBatch(pb.DetectHighLatencyBatchRequest(windows=[consensus_window()] * 3))
    assert len(hl.verdicts) == 3 and hl.model.name == "consensus_latency"


def test_select_compression_ranks_every_choice(stub):
    link, payload = compression_query()
    resp = stub.SelectCompression(pb.SelectCompressionRequest(link=link, payload=payload))
    d = resp.decision
    assert resp.model.version == "1"
    assert d.choice == d.scores[0]
    assert len(d.scores) == 6 and abs(sum(s.score for s in d.scores) - 1) < 1e-4
    assert [s.score for s in d.scores] == sorted((s.score for s in d.scores), reverse=True)


def test_select_compression_takes_traits_instead_of_a_sample(stub):
    link, _ = compression_query()
    payload = pb.PayloadTraits(size_bytes=4096, entropy_bits_per_byte=7.99, recent_compression_ratio=1.0)
    resp = stub.SelectCompression(pb.SelectCompressionRequest(link=link, payload=payload))
    assert resp.decision.choice.codec != pb.CODEC_UNSPECIFIED


def test_detect_anomaly_flags_an_error_burst_and_says_why(stub):
    calm = stub.DetectAnomaly(pb.DetectAnomalyRequest(metrics=node_metrics())).verdict
    burst = stub.DetectAnomaly(pb.DetectAnomalyRequest(metrics=node_metrics(error_rate=0.2))).verdict
    assert not calm.is_anomaly and calm.severity == pb.SEVERITY_INFO
    assert burst.is_anomaly and burst.score >= burst.threshold
    assert burst.severity in (pb.SEVERITY_WARNING, pb.SEVERITY_CRITICAL)
    assert burst.contributions[0].feature == "error_rate" and burst.contributions[0].deviation > 3


def test_detect_high_latency_flags_a_congested_window(stub):
    calm = stub.DetectHighLatency(pb.DetectHighLatencyRequest(window=consensus_window(p99=30))).verdict
    hot = stub.DetectHighLatency(pb.DetectHighLatencyRequest(window=consensus_window(p99=3000))).verdict
    assert not calm.is_high_latency and hot.is_high_latency
    assert hot.reconstruction_error > calm.reconstruction_error
    assert len(hot.feature_errors) == 18


def test_report_outcome_matches_its_prediction(stub, server):
    pred = stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history())).prediction
    resp = stub.ReportOutcome(pb.ReportOutcomeRequest(prediction_id=pred.prediction_id,
                                                      actual_network=pb.NetworkSample(bandwidth_mbps=500)))
    assert resp.model.name == "bandwidth_predictor"
    with pytest.raises(grpc.RpcError) as e:  # reported once: it is no longer pending
        stub.ReportOutcome(pb.ReportOutcomeRequest(prediction_id=pred.prediction_id,
                                                   actual_network=pb.NetworkSample(bandwidth_mbps=500)))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def _status(call, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        call(request)
    return e.value.code(), e.value.details()


def _with(history: pb.LinkHistory, i: int, **fields) -> pb.LinkHistory:
    for k, v in fields.items():
        setattr(history.samples[i], k, v)
    return history


BAD = [
    ("PredictBandwidth", pb.PredictBandwidthRequest(history=link_history(5)), "history.samples",
     "at least 24 samples"),
    ("PredictBandwidth", pb.PredictBandwidthRequest(history=_with(link_history(), 29, bandwidth_mbps=float("nan"))),
     "history.samples[29].bandwidth_mbps", "finite"),
    ("PredictBandwidth", pb.PredictBandwidthRequest(history=_with(link_history(), 10, latency_ms=float("inf"))),
     "history.samples[10].latency_ms", "finite"),
    ("PredictBandwidth", pb.PredictBandwidthRequest(history=_with(link_history(), 12, bandwidth_mbps=-5)),
     "history.samples[12].bandwidth_mbps", ">= 0"),
    ("PredictBandwidth", pb.PredictBandwidthRequest(history=_with(link_history(), 12, time_of_day=30)),
     "history.samples[12].time_of_day", "<= 23"),
    ("PredictBandwidthBatch", pb.PredictBandwidthBatchRequest(), "histories", "at least one item"),
    ("PredictBandwidthBatch", pb.PredictBandwidthBatchRequest(
        histories=[link_history(), _with(link_history(), 27, packet_loss=2)]),
     "histories[1].samples[27].packet_loss", "<= 1"),
    ("SelectCompression", pb.SelectCompressionRequest(link=compression_query(link_type=0)[0],
                                                      payload=compression_query()[1]), "link.link_type", "LINK_TYPE_DC"),
    ("SelectCompression", pb.SelectCompressionRequest(link=compression_query(link_type=9)[0],
                                                      payload=compression_query()[1]), "link.link_type", "got 9"),
    ("SelectCompression", pb.SelectCompressionRequest(link=compression_query()[0],
                                                      payload=pb.PayloadTraits(size_bytes=10)), "payload", "sample"),
    ("SelectCompressionBatch", pb.SelectCompressionBatchRequest(), "queries", "at least one item"),
    ("DetectAnomaly", pb.DetectAnomalyRequest(metrics=node_metrics(cpu=float("nan"))), "metrics.cpu_usage", "finite"),
    ("DetectAnomalyBatch", pb.DetectAnomalyBatchRequest(metrics=[node_metrics(), node_metrics(error_rate=-1)]),
     "metrics[1].error_rate", ">= 0"),
    ("DetectHighLatency", pb.DetectHighLatencyRequest(window=consensus_window(3)), "window.samples",
     "at least 20 samples"),
    ("DetectHighLatencyBatch", pb.DetectHighLatencyBatchRequest(), "windows", "at least one item"),
    ("ReportOutcome", pb.ReportOutcomeRequest(), "prediction_id", "expected"),
    ("DetectAnomaly", pb.DetectAnomalyRequest(), "metrics", "got none"),
]


@pytest.mark.parametrize("rpc,request_,field,expected", BAD, ids=[f"{b[0]}:{b[2]}" for b in BAD])
def test_bad_input_is_invalid_argument_naming_the_field(stub, rpc, request_, field, expected):
    code, details = _status(getattr(stub, rpc), request_)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(field + ":") and expected in details, details
    assert stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history())).prediction.prediction_id


def test_unknown_category_names_the_allowed_values(stub):
    window = consensus_window()
    window.samples[4].consensus_type = "paxos"
    code, details = _status(stub.DetectHighLatency, pb.DetectHighLatencyRequest(window=window))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("window.samples[4].consensus_type:") and "'raft'" in details


def test_unknown_version_is_not_found(stub):
    code, details = _status(stub.PredictBandwidth, pb.PredictBandwidthRequest(
        history=link_history(), model=pb.ModelSelector(version="99")))
    assert code == grpc.StatusCode.NOT_FOUND and "99" in details


def test_random_bytes_are_rejected_and_the_server_keeps_serving(channel, stub):
    call = channel.unary_unary("/dwcp.inference.v1.InferenceService/PredictBandwidth",
                               request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as e:
        call(b"\xff\xfe\x00garbage\x12\x99")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a serialized dwcp.inference.v1.PredictBandwidthRequest" in e.value.details()
    assert stub.DetectAnomaly(pb.DetectAnomalyRequest(metrics=node_metrics())).model.version == "1"


def test_health_per_model(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "dwcp.inference.v1.InferenceService", *MODEL_KINDS):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == \
            health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_the_service(channel):
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    db = ProtoReflectionDescriptorDatabase(channel)
    assert "dwcp.inference.v1.InferenceService" in db.get_services()
    service = DescriptorPool(db).FindServiceByName("dwcp.inference.v1.InferenceService")
    assert {"PredictBandwidth", "SelectCompression", "DetectAnomaly", "DetectHighLatency",
            "ReportOutcome"} <= {m.name for m in service.methods}


def test_metrics_endpoint_parses_and_counts(stub, server):
    stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history()))
    _status(stub.PredictBandwidth, pb.PredictBandwidthRequest(history=link_history(3)))
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    latency = families["dwcp_inference_request_duration_seconds"]
    assert any(s.labels.get("rpc") == "PredictBandwidth" and s.labels.get("version") == "1"
               and s.name.endswith("_count") and s.value >= 1 for s in latency.samples)
    codes = {(s.labels["rpc"], s.labels["code"]) for s in families["dwcp_inference_requests"].samples
             if s.name.endswith("_total")}
    assert {("PredictBandwidth", "OK"), ("PredictBandwidth", "INVALID_ARGUMENT")} <= codes
    info = {s.labels["model"] for s in families["dwcp_inference_model_info"].samples if s.value == 1}
    assert info == set(MODEL_KINDS)


def test_a_broken_version_is_refused_and_the_valid_one_serves(repo_copy):
    broken = repo_copy / "bandwidth_predictor" / "2"
    shutil.copytree(repo_copy / "bandwidth_predictor" / "1", broken)
    (broken / "metadata.json").write_text((broken / "metadata.json").read_text().replace('"version": "1"',
                                                                                         '"version": "2"'))
    with open(broken / "model.onnx", "r+b") as f:  # flip bytes: the checksum no longer matches
        f.seek(200)
        f.write(b"\x00\x01\x02\x03")
    bad_meta = repo_copy / "consensus_latency" / "2"
    bad_meta.mkdir()
    (bad_meta / "metadata.json").write_text("{not json")
    running = start_server(repo_copy, metrics_port=-1)
    try:
        refused = {(r.model, r.version): r.reason for r in running.repository.refused}
        assert "sha256" in refused[("bandwidth_predictor", "2")]
        assert "unreadable" in refused[("consensus_latency", "2")]
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            resp = pb_grpc.InferenceServiceStub(ch).PredictBandwidth(
                pb.PredictBandwidthRequest(history=link_history()))
        assert resp.model.version == "1"
    finally:
        running.stop(0)


def test_stop_lets_in_flight_requests_finish(trained_repo):
    running = start_server(trained_repo, metrics_port=-1, threads=1)
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        stub = pb_grpc.InferenceServiceStub(ch)
        request = pb.PredictBandwidthBatchRequest(histories=[link_history(30)] * 1000)
        futures = [stub.PredictBandwidthBatch.future(request) for _ in range(30)]
        time.sleep(0.3)  # all received; one worker answers them one after another
        unfinished = sum(not f.done() for f in futures)
        running.stop(30)
        results = [len(f.result(timeout=60).predictions) for f in futures]
    assert unfinished >= 1, "the requests finished before the stop: the test proves nothing"
    assert results == [1000] * 30
