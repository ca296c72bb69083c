"""ModelDistribution on a real server over loopback: GetModel streams a loaded version's files byte for byte,
WatchModels tells what is loaded, labelled and split, at once and after each change; both keep to their bounds."""

from __future__ import annotations

import hashlib
import json
import queue
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from dwcp_inference.api import admin_pb2 as apb, admin_pb2_grpc as apb_grpc
from dwcp_inference.api import distribution_pb2 as dpb, distribution_pb2_grpc as dpb_grpc
from dwcp_inference.api import inference_pb2 as pb, inference_pb2_grpc as pb_grpc
from dwcp_inference.services.settings import bundled_models

from .conftest import start_server

MODEL = "compression_selector"
WAIT = 30  # seconds a test waits for what must come (a rescan every 0.2 s)


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    """The bundled models, with a second compression_selector version (the same graph, published as 2)."""
    root = tmp_path / "repo"
    shutil.copytree(bundled_models(), root)
    publish_copy(root, MODEL, "1", "2")
    return root


def publish_copy(root: Path, model: str, source: str, version: str) -> None:
    """Publish a copy of a version under a new number, as export/publish.py does: staging dir, then rename."""
    staging = root / model / f".staging-{version}"
    shutil.copytree(root / model / source, staging)
    meta = json.loads((staging / "metadata.json").read_text())
    meta["version"] = version
    (staging / "metadata.json").write_text(json.dumps(meta, indent=1))
    staging.rename(root / model / version)


@pytest.fixture()
def running(repo: Path):
    # Small messages: model.onnx comes in several chunks.
    server = start_server(repo, poll_seconds=0.2, max_message_bytes=8192)
    yield server
    server.stop(0)


@pytest.fixture()
def channel(running):
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        yield ch


def get_model(channel, model: str, version: str = "", label: str = "") -> tuple[dpb.VersionManifest, dict]:
    stub = dpb_grpc.ModelDistributionStub(channel)
    chunks = list(stub.GetModel(dpb.GetModelRequest(model=model, selector=pb.ModelSelector(
        version=version, label=label)), timeout=WAIT))
    assert chunks[0].WhichOneof("part") == "manifest"
    files: dict[str, bytearray] = {}
    for chunk in chunks[1:]:
        assert chunk.WhichOneof("part") == "data"
        data = files.setdefault(chunk.data.file, bytearray())
        assert chunk.data.offset == len(data), "chunks of a file come in order, without gaps"
        data += chunk.data.data
    return chunks[0].manifest, {name: bytes(b) for name, b in files.items()}


def test_get_model_streams_every_file_byte_identical_with_its_checksum(running, channel, repo: Path):
    for model in ("bandwidth_predictor", "compression_selector", "reliability_detector", "consensus_latency"):
        manifest, files = get_model(channel, model, version="1")
        assert (manifest.model.name, manifest.model.version) == (model, "1")
        assert [f.name for f in manifest.files] == ["metadata.json", "model.onnx"]
        for f in manifest.files:
            on_disk = (repo / model / "1" / f.name).read_bytes()
            assert files[f.name] == on_disk
            assert f.size == len(on_disk)
            assert f.sha256 == hashlib.sha256(on_disk).hexdigest()
        assert json.loads(files["metadata.json"])["sha256"] == hashlib.sha256(files["model.onnx"]).hexdigest()


def test_model_onnx_comes_in_chunks_no_larger_than_the_message_limit(running, channel, repo: Path):
    stub = dpb_grpc.ModelDistributionStub(channel)
    chunks = [c for c in stub.GetModel(dpb.GetModelRequest(model=MODEL), timeout=WAIT) if c.HasField("data")]
    sizes = [len(c.data.data) for c in chunks if c.data.file == "model.onnx"]
    assert len(sizes) > 1 and max(sizes) <= 8192


def test_a_selector_resolves_as_the_inference_rpcs_resolve_it(running, channel):
    admin = apb_grpc.AdminServiceStub(grpc.insecure_channel(f"127.0.0.1:{running.admin_port}"))
    admin.Promote(apb.PromoteRequest(model=MODEL, label="stable", version="1"))
    admin.Promote(apb.PromoteRequest(model=MODEL, label="canary", version="2"))
    inference = pb_grpc.InferenceServiceStub(channel)
    request = pb.SelectCompressionRequest(link=pb.LinkState(throughput_mbps=100, rtt_ms=40, link_type=pb.LINK_TYPE_WAN),
                                          payload=pb.PayloadTraits(size_bytes=4096, sample=bytes(range(256)) * 16))
    for selector, expected in ((pb.ModelSelector(label="canary"), "2"), (pb.ModelSelector(label="stable"), "1"),
                               (pb.ModelSelector(), "1"), (pb.ModelSelector(version="2"), "2"),
                               (pb.ModelSelector(label="latest"), "2")):  # docs/operations.md: the newest
        request.model.CopyFrom(selector)
        assert inference.SelectCompression(request).model.version == expected
        manifest, _ = get_model(channel, MODEL, selector.version, selector.label)
        assert manifest.model.version == expected, selector


@pytest.mark.parametrize("request_, code, words", [
    (dpb.GetModelRequest(model="no_such_model"), grpc.StatusCode.NOT_FOUND, "unknown model"),
    (dpb.GetModelRequest(model=MODEL, selector=pb.ModelSelector(version="9")), grpc.StatusCode.NOT_FOUND,
     "no loaded version '9'"),
    (dpb.GetModelRequest(model=MODEL, selector=pb.ModelSelector(label="blue")), grpc.StatusCode.NOT_FOUND,
     "no label 'blue'"),
    (dpb.GetModelRequest(model=MODEL, selector=pb.ModelSelector(version="../1")), grpc.StatusCode.INVALID_ARGUMENT,
     "selector.version"),
    (dpb.GetModelRequest(model=MODEL, selector=pb.ModelSelector(version="1", label="stable")),
     grpc.StatusCode.INVALID_ARGUMENT, "selector: give a version or a label"),
    (dpb.GetModelRequest(), grpc.StatusCode.INVALID_ARGUMENT, "model: required"),
])
def test_get_model_refuses_bad_requests_with_their_status(running, channel, request_, code, words):
    stub = dpb_grpc.ModelDistributionStub(channel)
    with pytest.raises(grpc.RpcError) as e:
        list(stub.GetModel(request_, timeout=WAIT))
    assert e.value.code() == code and words in e.value.details()
    assert get_model(channel, MODEL)[0].model.version == "2"  # and the server keeps serving


def test_watch_names_unknown_models_not_found(running, channel):
    stub = dpb_grpc.ModelDistributionStub(channel)
    with pytest.raises(grpc.RpcError) as e:
        next(stub.WatchModels(dpb.WatchModelsRequest(models=[MODEL, "nope"]), timeout=WAIT))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "models[1]: unknown model 'nope'" in e.value.details()


class Watch:
    """A WatchModels stream read in a thread, its messages in a queue, its end status in `status`."""

    def __init__(self, channel, models=()):
        self.call = dpb_grpc.ModelDistributionStub(channel).WatchModels(dpb.WatchModelsRequest(models=models))
        self.updates: queue.Queue = queue.Queue()
        self.status: grpc.RpcError | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for update in self.call:
                self.updates.put(update)
        except grpc.RpcError as e:
            self.status = e
        self.updates.put(None)

    def next(self) -> dpb.ModelUpdate:
        update = self.updates.get(timeout=WAIT)
        assert update is not None, f"the watch ended: {self.status}"
        return update

    def until(self, model: str, condition) -> dpb.ModelState:
        while True:
            for state in self.next().models:
                if state.name == model and condition(state):
                    return state


def test_watch_tells_the_state_at_once_then_promotes_and_published_versions(running, channel, repo: Path):
    watch = Watch(channel, [MODEL])
    first = watch.next()
    assert [s.name for s in first.models] == [MODEL]
    state = first.models[0]
    meta = json.loads((repo / MODEL / "1" / "metadata.json").read_text())
    assert [(v.version, v.model_sha256) for v in state.versions] == [("1", meta["sha256"]), ("2", meta["sha256"])]
    assert state.default_version == "2" and not state.labels

    admin = apb_grpc.AdminServiceStub(grpc.insecure_channel(f"127.0.0.1:{running.admin_port}"))
    admin.Promote(apb.PromoteRequest(model=MODEL, label="stable", version="1"))
    state = watch.until(MODEL, lambda s: s.labels.get("stable") == "1")
    assert state.default_version == "1"

    publish_copy(repo, MODEL, "1", "3")  # noticed by the repository's poll
    state = watch.until(MODEL, lambda s: "3" in [v.version for v in s.versions])
    # keep_latest 2: versions 2 and 3, plus 1 that stable names
    assert [v.version for v in state.versions] == ["1", "2", "3"] and state.default_version == "1"
    watch.call.cancel()


def test_watch_sees_a_policy_another_replica_wrote_into_the_shared_state_dir(repo: Path, tmp_path: Path):
    state_dir = tmp_path / "state"
    server = start_server(repo, poll_seconds=0.2, state_dir=state_dir)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            watch = Watch(channel)
            assert {s.name for s in watch.next().models} == {"bandwidth_predictor", MODEL, "reliability_detector",
                                                              "consensus_latency"}
            (state_dir / MODEL).mkdir(parents=True)
            (state_dir / MODEL / "policy.json").write_text(json.dumps(
                {"labels": {"stable": "1", "canary": "2"}, "split": {"stable": 75, "canary": 25}}))
            state = watch.until(MODEL, lambda s: bool(s.split))
            assert dict(state.split) == {"stable": 75, "canary": 25} and dict(state.labels) == {"stable": "1",
                                                                                                "canary": "2"}
            watch.call.cancel()
    finally:
        server.stop(0)


def scrape(server) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=WAIT).read().decode()


def test_watches_have_their_own_bound_and_a_gauge(repo: Path):
    server = start_server(repo, max_watchers=2, max_concurrent_rpcs=1)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            watches = [Watch(channel), Watch(channel)]
            for w in watches:
                w.next()
            with pytest.raises(grpc.RpcError) as e:
                next(dpb_grpc.ModelDistributionStub(channel).WatchModels(dpb.WatchModelsRequest(), timeout=WAIT))
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-watchers" in e.value.details()
            # Two watches open and one inference slot: the slot is still free for calls.
            assert get_model(channel, MODEL)[0].model.version == "2"
            text = scrape(server)
            assert "dwcp_inference_open_watches 2.0" in text
            assert 'dwcp_inference_requests_total{code="RESOURCE_EXHAUSTED",rpc="WatchModels"} 1.0' in text
            assert 'dwcp_inference_requests_total{code="OK",rpc="GetModel"} 1.0' in text
            watches[0].call.cancel()
            watches[0].thread.join(WAIT)
            deadline = time.monotonic() + WAIT  # the cancelled watch leaves once its handler has unwound
            while "dwcp_inference_open_watches 1.0" not in scrape(server) and time.monotonic() < deadline:
                time.sleep(0.05)
            third = Watch(channel)
            assert third.next().models
            for w in (watches[1], third):
                w.call.cancel()
    finally:
        server.stop(0)


def test_shutdown_ends_watches_with_unavailable_without_waiting_the_grace(repo: Path):
    server = start_server(repo)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    watch = Watch(channel)
    watch.next()
    stopper = threading.Thread(target=server.stop, args=(600,), daemon=True)  # a grace no test would wait for
    stopper.start()
    stopper.join(WAIT)
    assert not stopper.is_alive(), "shutdown waited for the watch"
    watch.thread.join(WAIT)
    assert watch.status is not None and watch.status.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in watch.status.details()
    channel.close()


class AbortedCall(Exception):
    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


class RecordingContext:
    """The one part of a call a direct call of the handler needs: abort ends it with a status."""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AbortedCall(code, details)


def test_get_model_aborts_when_its_version_is_unloaded_mid_stream(running):
    """The server's own handler, driven on its loop one message at a time (a real client's flow-control window
    would take the whole version before the test could unload it)."""
    stream = running.distribution.GetModel(dpb.GetModelRequest(model=MODEL, selector=pb.ModelSelector(version="2")),
                                           RecordingContext())
    first = running.loop.run(stream.__anext__())
    assert first.manifest.model.version == "2"
    admin = apb_grpc.AdminServiceStub(grpc.insecure_channel(f"127.0.0.1:{running.admin_port}"))
    admin.UnloadVersion(apb.VersionRequest(model=MODEL, version="2"))
    with pytest.raises(AbortedCall) as e:
        running.loop.run(stream.__anext__())
    assert e.value.code == grpc.StatusCode.ABORTED and "version 2 was unloaded while it streamed" in e.value.details
    assert running.distribution.admission.admitted == 0  # its inference slot is given back


def test_distribution_speaks_the_inference_ports_tls(repo: Path, tmp_path: Path):
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain, key = tmp_path / "server.pem", tmp_path / "server.key"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    server = start_server(repo, metrics_port=-1, tls_cert=chain, tls_key=key)
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
        with grpc.secure_channel(f"127.0.0.1:{server.port}", creds,
                                 options=[("grpc.ssl_target_name_override", "localhost")]) as channel:
            manifest, files = get_model(channel, MODEL, version="1")
            assert files["model.onnx"] == (repo / MODEL / "1" / "model.onnx").read_bytes()
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as plaintext:
            with pytest.raises(grpc.RpcError):
                get_model(plaintext, MODEL)
    finally:
        server.stop(0)
