"""Operations: versions appear and disappear under load with no failed request; labels, splits, rollback and the
admin API; broken versions never serve."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from dwcp_inference import metadata
from dwcp_inference.api import admin_pb2 as apb
from dwcp_inference.api import admin_pb2_grpc as apb_grpc
from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc
from dwcp_inference.commands.soak import publish_copy

from .conftest import start_server
from .samples import link_history, node_metrics

MODEL = "bandwidth_predictor"


def publish_broken(repo: Path, version: str, kind: str) -> None:
    """A bad version of one of four kinds, written straight into place as careless tools do."""
    vdir = repo / MODEL / version
    if kind == "half-copied":  # metadata there, model.onnx cut short
        vdir.mkdir()
        shutil.copy(repo / MODEL / "1" / "metadata.json", vdir)
        data = (repo / MODEL / "1" / "model.onnx").read_bytes()
        (vdir / "model.onnx").write_bytes(data[: len(data) // 3])
    else:
        publish_copy(repo, MODEL, version, source="1")
        meta = json.loads((vdir / "metadata.json").read_text())
        if kind == "corrupt-onnx":
            (vdir / "model.onnx").write_bytes(b"\x08\x07not an onnx graph" * 100)
            meta["sha256"] = metadata.sha256_file(vdir / "model.onnx")
        elif kind == "wrong-shapes":
            shutil.copy(repo / "compression_selector" / "1" / "model.onnx", vdir / "model.onnx")
            meta["sha256"] = metadata.sha256_file(vdir / "model.onnx")
        elif kind == "bad-metadata":
            meta["features"][0]["transform"] = "cube"
        (vdir / "metadata.json").write_text(json.dumps(meta))


@pytest.fixture()
def ops(repo_copy):
    running = start_server(repo_copy, metrics_port=-1, poll_seconds=0.2, threads=8)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    admin_channel = grpc.insecure_channel(f"127.0.0.1:{running.admin_port}")
    yield (running, repo_copy, pb_grpc.InferenceServiceStub(channel), apb_grpc.AdminServiceStub(admin_channel))
    channel.close()
    admin_channel.close()
    running.stop(0)


def _wait(predicate, timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("timed out")
        time.sleep(0.01)
    return time.monotonic() - start


def test_a_published_version_serves_within_a_poll(ops):
    running, repo, stub, _ = ops
    request = pb.PredictBandwidthRequest(history=link_history())
    assert stub.PredictBandwidth(request).model.version == "1"
    publish_copy(repo, MODEL, "2", source="1")
    seconds = _wait(lambda: stub.PredictBandwidth(request).model.version == "2")
    print(f"version on disk to serving: {seconds * 1000:.0f} ms (poll every 0.2 s)")
    assert seconds < 5


def test_fifty_swaps_under_load_fail_no_request(ops):
    running, repo, stub, admin = ops
    good = {"1"}
    stop = threading.Event()
    failures: list[str] = []
    answered: Counter = Counter()
    lock = threading.Lock()

    def client(i: int) -> None:
        request = pb.PredictBandwidthRequest(history=link_history())
        while not stop.is_set():
            try:
                version = stub.PredictBandwidth(request, timeout=10).model.version
            except grpc.RpcError as e:
                with lock:
                    failures.append(f"{e.code().name}: {e.details()}")
                continue
            with lock:
                answered[version] += 1
                if version not in good:
                    failures.append(f"answered by version {version}, which is not a good one")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    bad_kinds = ["corrupt-onnx", "wrong-shapes", "bad-metadata", "half-copied"]
    version, swaps = 1, 0
    try:
        while swaps < 50:
            version += 1
            if version % 3 == 0:  # every third one is broken
                publish_broken(repo, str(version), bad_kinds[version % 4])
                admin.Reload(apb.ReloadRequest(), timeout=30)
                continue
            with lock:
                good.add(str(version))
            publish_copy(repo, MODEL, str(version), source="1")
            admin.Reload(apb.ReloadRequest(), timeout=30)
            swaps += 1
            time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join()
    total = sum(answered.values())
    print(f"{swaps} swaps, {version - 1 - swaps} broken versions, {total} requests, {len(failures)} failed")
    assert failures == []
    assert swaps == 50 and total > 200
    refused = {r.version for r in running.repository.refused}
    assert {str(v) for v in range(3, version + 1, 3)} <= refused
    assert stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history())).model.version == \
        max(good, key=int)


def test_a_version_changed_in_place_to_something_broken_keeps_serving_its_loaded_copy(ops):
    running, repo, stub, admin = ops
    with open(repo / MODEL / "1" / "model.onnx", "r+b") as f:
        f.write(b"\x00" * 64)
    admin.Reload(apb.ReloadRequest())
    assert stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history())).model.version == "1"
    assert any(r.version == "1" and "sha256" in r.reason for r in running.repository.refused)


def test_labels_split_and_rollback(ops):
    running, repo, stub, admin = ops
    publish_copy(repo, MODEL, "2", source="1")
    publish_copy(repo, MODEL, "3", source="1")
    admin.Reload(apb.ReloadRequest())
    request = pb.PredictBandwidthRequest(history=link_history())
    assert stub.PredictBandwidth(request).model.version == "3"  # latest by default

    admin.Promote(apb.PromoteRequest(model=MODEL, label="stable", version="2"))
    admin.Promote(apb.PromoteRequest(model=MODEL, label="canary", version="3"))
    assert stub.PredictBandwidth(request).model.version == "2"  # stable wins over latest
    canary = pb.PredictBandwidthRequest(history=link_history(), model=pb.ModelSelector(label="canary"))
    assert stub.PredictBandwidth(canary).model.version == "3"

    admin.SetSplit(apb.SetSplitRequest(model=MODEL, weights={"stable": 70, "canary": 30}))
    seen = Counter(stub.PredictBandwidth(request).model.version for _ in range(400))
    assert 0.2 < seen["3"] / 400 < 0.4, seen

    admin.SetSplit(apb.SetSplitRequest(model=MODEL, weights={}))
    admin.Promote(apb.PromoteRequest(model=MODEL, label="stable", version="3"))
    assert stub.PredictBandwidth(request).model.version == "3"
    status = admin.Rollback(apb.RollbackRequest(model=MODEL, label="stable"))
    assert status.labels["stable"] == "2"
    assert stub.PredictBandwidth(request).model.version == "2"
    # The policy is on disk: a restarted server keeps it.
    assert json.loads((repo / MODEL / "policy.json").read_text())["labels"] == {"stable": "2", "canary": "3"}


def test_a_label_is_removed_unless_it_routes_traffic(ops):
    running, repo, stub, admin = ops
    publish_copy(repo, MODEL, "2", source="1")
    admin.Reload(apb.ReloadRequest())
    admin.Promote(apb.PromoteRequest(model=MODEL, label="stable", version="1"))
    admin.Promote(apb.PromoteRequest(model=MODEL, label="canary", version="2"))
    admin.Promote(apb.PromoteRequest(model=MODEL, label="canary", version="1"))  # history: 2
    admin.SetSplit(apb.SetSplitRequest(model=MODEL, weights={"stable": 90, "canary": 10}))
    for request, code, words in [
        (apb.RemoveLabelRequest(model=MODEL, label="canary"), grpc.StatusCode.INVALID_ARGUMENT, "change the split"),
        (apb.RemoveLabelRequest(model=MODEL, label="stable"), grpc.StatusCode.INVALID_ARGUMENT, "default route"),
        (apb.RemoveLabelRequest(model=MODEL, label="nope"), grpc.StatusCode.NOT_FOUND, "no such label"),
        (apb.RemoveLabelRequest(model=MODEL, label=""), grpc.StatusCode.INVALID_ARGUMENT, "expected the label"),
        (apb.RemoveLabelRequest(model="weather", label="canary"), grpc.StatusCode.NOT_FOUND, "unknown model"),
    ]:
        with pytest.raises(grpc.RpcError) as e:
            admin.RemoveLabel(request)
        assert e.value.code() == code and words in e.value.details(), e.value.details()
    assert json.loads((repo / MODEL / "policy.json").read_text())["labels"] == {"stable": "1", "canary": "1"}

    admin.SetSplit(apb.SetSplitRequest(model=MODEL, weights={}))
    status = admin.RemoveLabel(apb.RemoveLabelRequest(model=MODEL, label="canary"))
    assert dict(status.labels) == {"stable": "1"}
    saved = json.loads((repo / MODEL / "policy.json").read_text())
    assert saved["labels"] == {"stable": "1"} and "canary" not in saved.get("history", {})
    with pytest.raises(grpc.RpcError) as e:  # gone for callers who name it
        stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history(),
                                                         model=pb.ModelSelector(label="canary")))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_admin_refuses_bad_operations_with_reasons(ops):
    running, repo, stub, admin = ops
    publish_broken(repo, "2", "corrupt-onnx")
    admin.Reload(apb.ReloadRequest())
    for call, request, code, words in [
        (admin.Promote, apb.PromoteRequest(model=MODEL, label="stable", version="2"),
         grpc.StatusCode.INVALID_ARGUMENT, "not loaded"),
        (admin.Promote, apb.PromoteRequest(model="weather", label="stable", version="1"),
         grpc.StatusCode.NOT_FOUND, "unknown model"),
        (admin.Rollback, apb.RollbackRequest(model=MODEL, label="stable"),
         grpc.StatusCode.INVALID_ARGUMENT, "no earlier version"),
        (admin.SetSplit, apb.SetSplitRequest(model=MODEL, weights={"nope": 1}),
         grpc.StatusCode.INVALID_ARGUMENT, "point at no version"),
        (admin.LoadVersion, apb.VersionRequest(model=MODEL, version="2"),
         grpc.StatusCode.INVALID_ARGUMENT, "onnxruntime cannot load"),
        (admin.LoadVersion, apb.VersionRequest(model=MODEL, version="77"), grpc.StatusCode.NOT_FOUND, "on disk"),
    ]:
        with pytest.raises(grpc.RpcError) as e:
            call(request)
        assert e.value.code() == code and words in e.value.details(), e.value.details()
    listing = admin.ListModels(apb.ListModelsRequest(model=MODEL)).models[0]
    states = {v.version: (v.state, v.reason) for v in listing.versions}
    assert states["1"][0] == "serving" and states["2"][0] == "refused" and "onnxruntime" in states["2"][1]


def test_unload_and_load_a_version(ops):
    running, repo, stub, admin = ops
    publish_copy(repo, MODEL, "2", source="1")
    admin.Reload(apb.ReloadRequest())
    request = pb.PredictBandwidthRequest(history=link_history())
    admin.UnloadVersion(apb.VersionRequest(model=MODEL, version="2"))
    assert stub.PredictBandwidth(request).model.version == "1"
    admin.LoadVersion(apb.VersionRequest(model=MODEL, version="2"))
    assert stub.PredictBandwidth(request).model.version == "2"


def test_live_accuracy_in_the_admin_listing(ops):
    running, repo, stub, admin = ops
    for error_rate, truth in ((0.2, True), (0.004, False), (0.004, True)):
        v = stub.DetectAnomaly(pb.DetectAnomalyRequest(metrics=node_metrics(error_rate=error_rate))).verdict
        stub.ReportOutcome(pb.ReportOutcomeRequest(prediction_id=v.prediction_id, was_anomaly=truth))
    version = admin.ListModels(apb.ListModelsRequest(model="reliability_detector")).models[0].versions[0]
    assert version.outcomes == 3
    assert version.live_accuracy["precision"] == 1.0 and version.live_accuracy["recall"] == 0.5


def test_admin_is_not_reachable_on_the_inference_port(ops):
    running, repo, stub, admin = ops
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        with pytest.raises(grpc.RpcError) as e:
            apb_grpc.AdminServiceStub(ch).ListModels(apb.ListModelsRequest())
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_models_cli(ops):
    running, repo, stub, admin = ops
    publish_copy(repo, MODEL, "2", source="1")
    target = f"127.0.0.1:{running.admin_port}"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dwcp_inference.commands.cli", "models", "--admin", target, *args],
                              capture_output=True, text=True)

    reloaded = cli("reload")  # the fixture's watcher may have loaded v2 first: changed is True or False
    assert reloaded.returncode == 0 and "changed: " in reloaded.stdout, reloaded.stderr
    promoted = cli("promote", MODEL, "1")
    assert promoted.returncode == 0 and "stable->1" in promoted.stdout
    listing = cli("list", MODEL).stdout
    assert "v2" in listing and "v1" in listing and "serving" in listing
    bad = cli("promote", MODEL, "9")
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr


def test_selector_live_accuracy_and_regret_from_measured_times(ops):
    running, repo, stub, admin = ops
    from .samples import compression_query

    link, payload = compression_query()
    d = stub.SelectCompression(pb.SelectCompressionRequest(link=link, payload=payload)).decision
    picked, other = d.scores[0], d.scores[1]
    times = pb.CompressionTimes(times=[
        pb.CompressionTimes.Time(codec=picked.codec, level=picked.level, seconds=2.0),
        pb.CompressionTimes.Time(codec=other.codec, level=other.level, seconds=1.0)])
    stub.ReportOutcome(pb.ReportOutcomeRequest(prediction_id=d.prediction_id, compression_times=times))
    v = admin.ListModels(apb.ListModelsRequest(model="compression_selector")).models[0].versions[0]
    assert v.live_accuracy["accuracy"] == 0.0 and v.live_accuracy["regret_pct"] == pytest.approx(50.0)
    d = stub.SelectCompression(pb.SelectCompressionRequest(link=link, payload=payload)).decision
    with pytest.raises(grpc.RpcError) as e:
        stub.ReportOutcome(pb.ReportOutcomeRequest(prediction_id=d.prediction_id, compression_times=pb.CompressionTimes(
            times=[pb.CompressionTimes.Time(codec=pb.CODEC_LZ4, seconds=-1)])))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "times[0].seconds" in e.value.details()


def test_server_is_not_ready_while_a_model_has_no_valid_version(repo_copy):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    for f in (repo_copy / "consensus_latency" / "1").iterdir():
        if f.name == "model.onnx":
            f.write_bytes(b"broken")
    running = start_server(repo_copy, metrics_port=-1, poll_seconds=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            status = {s: health.Check(health_pb2.HealthCheckRequest(service=s)).status
                      for s in ("", "consensus_latency", "bandwidth_predictor")}
    finally:
        running.stop(0)
    assert status == {"": health_pb2.HealthCheckResponse.NOT_SERVING,
                      "consensus_latency": health_pb2.HealthCheckResponse.NOT_SERVING,
                      "bandwidth_predictor": health_pb2.HealthCheckResponse.SERVING}
