"""Admin state apart from the models, tested the way it is deployed: the real server under the systemd unit's
sandbox (a private mount namespace with the repository bind-mounted read-only, an unprivileged user, a writable
state directory), driven through the real admin CLI. Also: policies validated on the way in, a failed admin
operation changes nothing, one unreadable version affects only itself, the refused-versions gauge is current."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dwcp_inference import metadata
from dwcp_inference.api import admin_pb2 as apb
from dwcp_inference.api import admin_pb2_grpc as apb_grpc
from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc
from dwcp_inference.services.settings import bundled_models
from dwcp_inference.commands.soak import publish_copy

from .conftest import free_port, start_server
from .samples import compression_query, link_history

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "systemd" / "dwcp-inference.service"
CLI = ROOT / ".venv" / "bin" / "dwcp-inference"
MODEL = "bandwidth_predictor"
SERVER_UID = 10001  # the pod's and image's user; systemd's DynamicUser is some such unprivileged uid


# ------------------------------------------------------------------------------------------------ helpers

def unit_settings() -> dict[str, list[str]]:
    """The [Service] settings of the shipped unit that the sandbox reproduces, e.g. {"ReadOnlyPaths": [...]}."""
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            out.setdefault(key.strip(), []).extend(value.split())
    return out


def unit_environment() -> dict[str, str]:
    return dict(item.split("=", 1) for item in unit_settings().get("Environment", []))


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and directory under root: its mode and, for files, its sha256."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = f"{st.st_mode:o}" + (
                ":" + hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "")
    return out


def publish_with_export(repo: Path, model: str = MODEL, source: str = "1") -> Path:
    """A new version published by export/publish.py (as root, under a strict umask), from a bundled version's
    graph: parity inputs are its test vectors, the reference its own outputs."""
    from dwcp_inference.export import publish

    vdir = repo / model / source
    meta = metadata.read(vdir)
    onnx_bytes = (vdir / metadata.MODEL_FILE).read_bytes()
    inputs = np.asarray([tv["input"] for tv in meta.test_vectors], dtype=np.float32)
    parity = np.repeat(inputs, -(-publish.MIN_PARITY_INPUTS // len(inputs)), axis=0)
    reference = publish.run_onnx(onnx_bytes, parity)
    old = os.umask(0o077)
    try:
        return publish.publish(repo, meta, onnx_bytes, parity, reference)
    finally:
        os.umask(old)


def new_repo(tmp_path: Path) -> tuple[Path, Path]:
    """`varlib` stands for /var/lib/dwcp-inference: models/ (the bundled ones) and room for state/."""
    varlib = tmp_path / "varlib"
    varlib.mkdir()
    varlib.chmod(0o755)
    shutil.copytree(bundled_models(), varlib / "models")
    return varlib, varlib / "models"


class SandboxedServer:
    """`dwcp-inference serve` as the systemd unit runs it: in a private mount namespace where `varlib` is
    /var/lib/dwcp-inference, each ReadOnlyPaths= bind-mounted read-only, each StateDirectory= created and owned
    by the server's user, the unit's Environment= set, as an unprivileged user with no new privileges."""

    def __init__(self, varlib: Path, log: Path, poll_seconds: float = 0.3, env: dict[str, str] | None = None):
        unit = unit_settings()
        self.port, self.admin_port, self.metrics_port = free_port(), free_port(), free_port()
        environment = {**unit_environment(), "DWCP_INFERENCE_HOST": "127.0.0.1",
                       "DWCP_INFERENCE_PORT": str(self.port), "DWCP_INFERENCE_ADMIN_PORT": str(self.admin_port),
                       "DWCP_INFERENCE_METRICS_HOST": "127.0.0.1",
                       "DWCP_INFERENCE_METRICS_PORT": str(self.metrics_port),
                       "DWCP_INFERENCE_POLL_SECONDS": str(poll_seconds), "HOME": "/nonexistent", **(env or {})}
        if os.environ.get("PYTHONPATH"):  # the code under test, when the caller points somewhere else
            environment["PYTHONPATH"] = os.environ["PYTHONPATH"]
        script = ["set -e", "mount -t tmpfs -o mode=0755 tmpfs /var/lib", "mkdir -p /var/lib/dwcp-inference",
                  f"mount --bind {shlex.quote(str(varlib))} /var/lib/dwcp-inference"]
        script += _reachable_interpreter()
        for d in unit.get("StateDirectory", []):
            script += [f"mkdir -p /var/lib/{d}", f"chown {SERVER_UID}:{SERVER_UID} /var/lib/{d}"]
        for path in unit["ReadOnlyPaths"]:  # what systemd does for ReadOnlyPaths=
            path = path.lstrip("-")
            script += [f"mount --bind {path} {path}", f"mount -o remount,bind,ro {path}"]
        script.append(f"exec setpriv --reuid {SERVER_UID} --regid {SERVER_UID} --clear-groups --no-new-privs "
                      f"env -i PATH=/usr/bin:/bin "
                      + " ".join(f"{k}={shlex.quote(v)}" for k, v in environment.items())
                      + f" {CLI} serve")
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                          "\n".join(script)], stdout=out, stderr=subprocess.STDOUT)
        self._wait_serving()

    def _wait_serving(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as ch:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"the sandboxed server exited {self.proc.returncode}:\n"
                                         + self.log.read_text()[-3000:])
                try:
                    status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if status.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise AssertionError("the sandboxed server did not become SERVING:\n" + self.log.read_text()[-3000:])

    def version(self) -> str:
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as ch:
            return pb_grpc.InferenceServiceStub(ch).PredictBandwidth(
                pb.PredictBandwidthRequest(history=link_history()), timeout=10).model.version

    def versions(self, n: int) -> Counter:
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as ch:
            stub = pb_grpc.InferenceServiceStub(ch)
            return Counter(stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history()),
                                                 timeout=10).model.version for _ in range(n))

    def models(self, *args: str) -> subprocess.CompletedProcess:
        """The real admin CLI against this server's admin port."""
        return subprocess.run([str(CLI), "models", "--admin", f"127.0.0.1:{self.admin_port}", *args],
                              capture_output=True, text=True, timeout=120)

    def metric(self, name: str, model: str) -> float | None:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        m = re.search(rf'^{name}{{model="{model}"}} (\S+)$', text, re.M)
        return float(m.group(1)) if m else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _reachable_interpreter() -> list[str]:
    """Mount commands that let the server's user reach the dev venv's interpreter. The unit runs
    /opt/dwcp-inference, readable by everyone; the dev venv's python may live under a directory only root may
    enter (pyenv in /root): show that directory's one needed entry on an open tmpfs, in this namespace only."""
    interpreter = Path(os.path.realpath(CLI.parent / "python3"))
    for closed in interpreter.parents:
        if closed != Path("/") and not closed.stat().st_mode & 0o001:
            entry = interpreter.parents[len(interpreter.parents) - len(closed.parts) - 1]
            stash = "/var/lib/.interpreter"
            return [f"mkdir {stash}", f"mount --bind {entry} {stash}",
                    f"mount -t tmpfs -o mode=0755 tmpfs {closed}", f"mkdir -p {entry}",
                    f"mount --move {stash} {entry}"]
    return []


def _require_sandbox_tools() -> None:
    missing = [t for t in ("unshare", "setpriv", "mount") if shutil.which(t) is None]
    if missing or os.geteuid() != 0:
        pytest.fail(f"the sandbox tests need root and util-linux ({missing or 'not root'})")


def _until(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture()
def sandbox(tmp_path):
    _require_sandbox_tools()
    servers: list[SandboxedServer] = []

    def run(varlib: Path, **kw) -> SandboxedServer:
        servers.append(SandboxedServer(varlib, tmp_path / f"server{len(servers)}.log", **kw))
        return servers[-1]

    yield run
    for s in servers:
        s.stop()


# ------------------------------------------------------------------------------------ the deployed layout

def test_the_unit_keeps_the_repository_read_only_and_the_state_writable():
    unit, env = unit_settings(), unit_environment()
    repo, state = env["DWCP_INFERENCE_REPOSITORY"], env["DWCP_INFERENCE_STATE_DIR"]
    assert repo in unit["ReadOnlyPaths"]
    assert any(state == f"/var/lib/{d}" for d in unit["StateDirectory"])
    assert not any(state.startswith(p.rstrip("/") + "/") or state == p for p in unit["ReadOnlyPaths"])


def test_promote_split_rollback_under_the_systemd_sandbox(sandbox, tmp_path):
    varlib, repo = new_repo(tmp_path)
    published = publish_with_export(repo)  # as root, umask 077: the server runs as uid 10001
    assert published.name == "2" and (published.stat().st_mode & 0o777) == 0o755
    before = tree_digest(repo)
    server = sandbox(varlib)
    assert server.version() == "2"  # latest by default; it could read what root published

    assert server.models("promote", MODEL, "1").returncode == 0
    assert server.version() == "1"
    assert server.models("promote", MODEL, "2", "--label", "canary").returncode == 0
    split = server.models("split", MODEL, "stable=50", "canary=50")
    assert split.returncode == 0, split.stderr
    seen = server.versions(200)
    assert seen["1"] > 40 and seen["2"] > 40, seen
    assert server.models("split", MODEL).returncode == 0
    assert server.models("promote", MODEL, "2").returncode == 0
    assert server.version() == "2"
    rolled = server.models("rollback", MODEL)
    assert rolled.returncode == 0 and "stable->1" in rolled.stdout, rolled.stdout + rolled.stderr
    assert server.version() == "1"

    policy = json.loads((varlib / "state" / MODEL / "policy.json").read_text())
    assert policy["labels"] == {"stable": "1", "canary": "2"} and policy["history"] == {"stable": []}
    assert tree_digest(repo) == before  # the server wrote nothing into the repository


def test_v2_and_model_distribution_under_the_systemd_sandbox(sandbox, tmp_path):
    """V2 ModelInfer, its HTTP health, GetModel and WatchModels as deployed: uid 10001, the repository read-only
    (versions root published under umask 077, one while it serves), policies in the state directory."""
    from google.protobuf.json_format import ParseDict

    from dwcp_inference.api import grpc_predict_v2_pb2 as v2, grpc_predict_v2_pb2_grpc as v2_grpc
    from dwcp_inference.bench.requests import v2_request

    from .test_distribution import Watch, get_model

    varlib, repo = new_repo(tmp_path)
    published = publish_with_export(repo)
    before = tree_digest(repo)
    server = sandbox(varlib)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = v2_grpc.GRPCInferenceServiceStub(ch)
        for case in ("PredictBandwidth", "SelectCompression/traits", "DetectAnomaly", "DetectHighLatency"):
            answer = stub.ModelInfer(ParseDict(v2_request(case, 2), v2.ModelInferRequest()), timeout=30)
            assert answer.outputs and answer.outputs[0].shape[0] == 2, case
        assert stub.ModelInfer(ParseDict(v2_request("PredictBandwidth"), v2.ModelInferRequest())).model_version == "2"
        with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/v2/models/{MODEL}/versions/2/ready",
                                    timeout=10) as r:
            assert r.status == 200

        manifest, files = get_model(ch, MODEL, version="2")
        assert manifest.model.version == "2"
        assert files == {name: (published / name).read_bytes() for name in (metadata.METADATA_FILE,
                                                                            metadata.MODEL_FILE)}
        watch = Watch(ch, [MODEL])
        try:
            first = watch.next().models[0]
            assert [v.version for v in first.versions] == ["1", "2"] and first.default_version == "2"
            assert server.models("promote", MODEL, "1").returncode == 0
            state = watch.until(MODEL, lambda s: s.labels.get("stable") == "1")
            assert state.default_version == "1"
            third = publish_with_export(repo, source="2")  # published by root while it serves
            watch.until(MODEL, lambda s: [v.version for v in s.versions] == ["1", "2", "3"])
        finally:
            watch.call.cancel()
        assert get_model(ch, MODEL, version="3")[1][metadata.MODEL_FILE] == (third / metadata.MODEL_FILE).read_bytes()
    assert json.loads((varlib / "state" / MODEL / "policy.json").read_text())["labels"] == {"stable": "1"}
    after = {k: v for k, v in tree_digest(repo).items() if not k.startswith(f"{MODEL}/3")}
    assert after == before  # the server wrote nothing into the repository


def test_without_a_state_dir_a_read_only_repository_answers_failed_precondition(sandbox, tmp_path):
    varlib, repo = new_repo(tmp_path)
    before = tree_digest(repo)
    server = sandbox(varlib, env={"DWCP_INFERENCE_STATE_DIR": ""})  # the old layout: policies in the repository
    promoted = server.models("promote", MODEL, "1")
    assert promoted.returncode == 1
    assert "FAILED_PRECONDITION" in promoted.stderr and "INTERNAL" not in promoted.stderr, promoted.stderr
    for words in (f"/var/lib/dwcp-inference/models/{MODEL}/policy.json", "Read-only file system", "--state-dir"):
        assert words in promoted.stderr, promoted.stderr
    assert server.version() == "1" and tree_digest(repo) == before


def test_a_promote_that_cannot_take_effect_leaves_no_label(sandbox, tmp_path):
    varlib, repo = new_repo(tmp_path)
    publish_copy(repo, MODEL, "2", source="1")
    server = sandbox(varlib, poll_seconds=0)
    assert server.models("promote", MODEL, "1").returncode == 0
    policy_file = varlib / "state" / MODEL / "policy.json"
    before = policy_file.read_bytes()
    repo.chmod(0o711)  # the server may enter the repository but not list it: the rescan after a write fails
    try:
        promoted = server.models("promote", MODEL, "2")
    finally:
        repo.chmod(0o755)
    assert promoted.returncode == 1 and "FAILED_PRECONDITION" in promoted.stderr, promoted.stderr
    assert "Permission denied" in promoted.stderr and "put back" in promoted.stderr
    assert policy_file.read_bytes() == before  # the label was not left behind to take effect later
    assert server.models("reload").returncode == 0 and server.version() == "1"


def test_one_unreadable_version_is_refused_alone_and_counted_at_once(sandbox, tmp_path):
    varlib, repo = new_repo(tmp_path)
    server = sandbox(varlib)
    assert server.metric("dwcp_inference_refused_versions", MODEL) == 0
    locked = publish_copy(repo, MODEL, "2", source="1")
    locked.chmod(0o700)  # root's, and the server (uid 10001) cannot enter it
    publish_copy(repo, "compression_selector", "2", source="1")  # another model's new version must still load

    link, payload = compression_query()

    def selector_version() -> str:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            return pb_grpc.InferenceServiceStub(ch).SelectCompression(
                pb.SelectCompressionRequest(link=link, payload=payload), timeout=10).model.version

    _until(lambda: selector_version() == "2", what="compression_selector version 2")
    _until(lambda: server.metric("dwcp_inference_refused_versions", MODEL) == 1, what="the refused gauge")
    listing = server.models("list", MODEL)
    assert re.search(r"v2\s+refused.*Permission denied", listing.stdout), listing.stdout
    assert server.version() == "1"
    assert "refused bandwidth_predictor version 2" in server.log.read_text()

    locked.chmod(0o755)  # fixed: it loads, and the gauge clears at once
    _until(lambda: server.version() == "2", what="version 2 once readable")
    _until(lambda: server.metric("dwcp_inference_refused_versions", MODEL) == 0, what="the gauge to clear")


def test_a_published_version_is_readable_by_other_users(tmp_path):
    vdir = publish_with_export(shutil.copytree(bundled_models(), tmp_path / "repo"))
    assert vdir.stat().st_mode & 0o777 == 0o755
    assert {f.name: f.stat().st_mode & 0o777 for f in vdir.iterdir()} == {
        metadata.MODEL_FILE: 0o644, metadata.METADATA_FILE: 0o644}


# ------------------------------------------------------------------------------------- shared admin state

@pytest.fixture()
def two_servers(tmp_path):
    repo = shutil.copytree(bundled_models(), tmp_path / "repo")
    publish_copy(repo, MODEL, "2", source="1")
    state = tmp_path / "state"
    servers = [start_server(repo, state_dir=state, metrics_port=-1, poll_seconds=0.2) for _ in range(2)]
    yield repo, state, servers
    for s in servers:
        s.stop(0)


def _stubs(running):
    ch = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    admin = grpc.insecure_channel(f"127.0.0.1:{running.admin_port}")
    return pb_grpc.InferenceServiceStub(ch), apb_grpc.AdminServiceStub(admin)


def test_replicas_sharing_a_state_dir_serve_each_others_promote(two_servers):
    repo, state, (a, b) = two_servers
    _, admin_a = _stubs(a)
    stub_b, _ = _stubs(b)
    request = pb.PredictBandwidthRequest(history=link_history())
    assert stub_b.PredictBandwidth(request).model.version == "2"
    admin_a.Promote(apb.PromoteRequest(model=MODEL, label="stable", version="1"))
    start = time.monotonic()
    _until(lambda: stub_b.PredictBandwidth(request).model.version == "1", timeout=10, what="b to serve 1")
    print(f"replica b served the promote after {time.monotonic() - start:.2f} s (poll 0.2 s)")
    assert (state / MODEL / "policy.json").exists() and not (repo / MODEL / "policy.json").exists()


def test_the_repositorys_policy_is_the_default_until_the_state_dir_has_one(tmp_path):
    repo = shutil.copytree(bundled_models(), tmp_path / "repo")
    publish_copy(repo, MODEL, "2", source="1")
    (repo / MODEL / "policy.json").write_text(json.dumps({"labels": {"stable": "1"}}))
    running = start_server(repo, state_dir=tmp_path / "state", metrics_port=-1, poll_seconds=0)
    try:
        stub, admin = _stubs(running)
        request = pb.PredictBandwidthRequest(history=link_history())
        assert stub.PredictBandwidth(request).model.version == "1"  # the publisher's default
        admin.Promote(apb.PromoteRequest(model=MODEL, label="stable", version="2"))
        assert stub.PredictBandwidth(request).model.version == "2"
        assert json.loads((repo / MODEL / "policy.json").read_text()) == {"labels": {"stable": "1"}}
        assert json.loads((tmp_path / "state" / MODEL / "policy.json").read_text())["history"] == {"stable": ["1"]}
    finally:
        running.stop(0)


# ------------------------------------------------------------------------------------ validated policies

@pytest.mark.parametrize("data, words", [
    ({"keep_latest": "2"}, "keep_latest: expected an integer >= 1, got '2'"),
    ({"keep_latest": True}, "keep_latest: expected an integer >= 1, got True"),
    ({"keep_latest": 0}, "keep_latest"),
    ({"pinned": "3"}, "pinned: expected a list"),
    ({"pinned": [3]}, "pinned[0]: expected a version string"),
    ({"disabled": ["v2"]}, "disabled[0]"),
    ({"labels": {"stable": 3}}, "labels.stable: expected a version string"),
    ({"labels": {"stable": "1"}, "split": {"stable": math.nan}}, "split.stable: expected a finite number"),
    ({"labels": {"stable": "1"}, "split": {"stable": math.inf}}, "split.stable"),
    ({"labels": {"stable": "1"}, "split": {"stable": -1}}, "split.stable"),
    ({"labels": {"stable": "1"}, "split": {"stable": "50"}}, "split.stable"),
    ({"labels": {"stable": "1"}, "split": {"stable": 0}}, "split: expected a positive total"),
    ({"split": {"canary": 1}}, "split.canary: names no label"),
    ({"history": {"stable": "2"}}, "history.stable: expected a list"),
    ({"keep_latest": 2, "labels": {}, "extra": 1}, "unknown field(s) ['extra']"),
    (["not", "an", "object"], "expected a JSON object"),
])
def test_every_field_of_a_policy_is_validated(data, words):
    from dwcp_inference.services.policy import PolicyInvalid, validate

    with pytest.raises(PolicyInvalid) as e:
        validate(data, "/repo/m/policy.json")
    assert str(e.value).startswith("/repo/m/policy.json: ") and words in str(e.value), str(e.value)


def test_a_bad_policy_file_stops_the_server_at_start_with_one_line(tmp_path):
    from dwcp_inference.services.policy import PolicyInvalid

    repo = shutil.copytree(bundled_models(), tmp_path / "repo")
    (repo / MODEL / "policy.json").write_text('{"keep_latest": "2"}')
    with pytest.raises(PolicyInvalid):
        start_server(repo, metrics_port=-1, poll_seconds=0)
    proc = subprocess.run([str(CLI), "serve", "--repository", str(repo), "--host", "127.0.0.1", "--port", "0",
                           "--admin-port", "-1", "--metrics-port", "-1"], capture_output=True, text=True,
                          timeout=120)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{repo / MODEL / 'policy.json'}: keep_latest: expected an integer >= 1, got '2'" in last, proc.stderr


def test_a_bad_policy_on_reload_keeps_the_last_good_one_logged_once(tmp_path, caplog):
    repo = shutil.copytree(bundled_models(), tmp_path / "repo")
    publish_copy(repo, MODEL, "2", source="1")
    running = start_server(repo, state_dir=tmp_path / "state", metrics_port=-1, poll_seconds=0.1)
    try:
        stub, admin = _stubs(running)
        request = pb.PredictBandwidthRequest(history=link_history())
        admin.Promote(apb.PromoteRequest(model=MODEL, label="stable", version="1"))
        policy_file = tmp_path / "state" / MODEL / "policy.json"
        policy_file.write_text(json.dumps({"labels": {"stable": "1"}, "split": {"stable": float("nan")}}))
        status = _until(lambda: (admin.ListModels(apb.ListModelsRequest(model=MODEL)).models[0].policy_error
                                 or None), what="the policy error in the listing")
        assert str(policy_file) in status and "split.stable" in status
        assert {stub.PredictBandwidth(request).model.version for _ in range(20)} == {"1"}  # the last good policy
        time.sleep(1.0)  # ten polls of the same bad file
        refusals = [r for r in caplog.records if "policy refused" in r.getMessage()]
        assert len(refusals) == 1, [r.getMessage() for r in refusals]
        policy_file.write_text(json.dumps({"labels": {"stable": "2"}}))
        _until(lambda: stub.PredictBandwidth(request).model.version == "2", what="the fixed policy")
        assert admin.ListModels(apb.ListModelsRequest(model=MODEL)).models[0].policy_error == ""
    finally:
        running.stop(0)


# ---------------------------------------------------------------------------- bad admin input, no changes

@pytest.fixture()
def ops(tmp_path):
    repo = shutil.copytree(bundled_models(), tmp_path / "repo")
    publish_copy(repo, MODEL, "2", source="1")
    running = start_server(repo, metrics_port=-1, poll_seconds=0)
    stub, admin = _stubs(running)
    admin.Promote(apb.PromoteRequest(model=MODEL, label="stable", version="1"))
    admin.Promote(apb.PromoteRequest(model=MODEL, label="canary", version="2"))
    yield repo, stub, admin
    running.stop(0)


@pytest.mark.parametrize("weights, words", [
    ({"stable": math.nan, "canary": 1}, "weights[stable]: expected a finite number"),
    ({"stable": math.inf}, "weights[stable]"),
    ({"stable": -1, "canary": 2}, "weights[stable]"),
    ({"stable": 0, "canary": 0}, "must weigh more than 0"),
])
def test_a_bad_split_is_refused_and_nothing_is_written(ops, weights, words):
    repo, stub, admin = ops
    before = (repo / MODEL / "policy.json").read_bytes()
    with pytest.raises(grpc.RpcError) as e:
        admin.SetSplit(apb.SetSplitRequest(model=MODEL, weights=weights))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in e.value.details(), e.value.details()
    assert (repo / MODEL / "policy.json").read_bytes() == before
    assert stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history())).model.version == "1"


def test_a_split_whose_loaded_labels_weigh_zero_still_answers(ops):
    repo, stub, admin = ops
    admin.Promote(apb.PromoteRequest(model=MODEL, label="canary", version="2"))
    policy = json.loads((repo / MODEL / "policy.json").read_text())
    policy.update(labels={"stable": "1", "canary": "9"}, split={"stable": 0, "canary": 10})  # 9: not loaded
    (repo / MODEL / "policy.json").write_text(json.dumps(policy))
    admin.Reload(apb.ReloadRequest())
    assert stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history())).model.version == "1"
    listing = admin.ListModels(apb.ListModelsRequest(model=MODEL)).models[0]
    assert listing.split["stable"] == 0 and {v.version: v.state for v in listing.versions}["1"] == "serving"


def test_a_refused_load_leaves_the_policy_as_it_was(ops):
    repo, stub, admin = ops
    broken = publish_copy(repo, MODEL, "3", source="1")
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    admin.UnloadVersion(apb.VersionRequest(model=MODEL, version="3"))  # disabled, so it is not refused yet
    before = (repo / MODEL / "policy.json").read_bytes()
    with pytest.raises(grpc.RpcError) as e:
        admin.LoadVersion(apb.VersionRequest(model=MODEL, version="3"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sha256" in e.value.details()
    assert (repo / MODEL / "policy.json").read_bytes() == before  # neither pinned nor taken out of disabled


def test_the_refused_gauge_follows_a_refusal_and_its_clearing_at_once(tmp_path):
    repo = shutil.copytree(bundled_models(), tmp_path / "repo")
    running = start_server(repo, metrics_port=-1, poll_seconds=0.1)

    def gauge() -> float:
        return running.metrics.registry.get_sample_value("dwcp_inference_refused_versions", {"model": MODEL})

    try:
        assert gauge() == 0
        broken = publish_copy(repo, MODEL, "2", source="1")
        (broken / "model.onnx").write_bytes(b"not an onnx graph")
        _until(lambda: gauge() == 1, timeout=10, what="the gauge to count the refusal")
        shutil.rmtree(broken)
        _until(lambda: gauge() == 0, timeout=10, what="the gauge to clear")
    finally:
        running.stop(0)


def test_kubernetes_mounts_the_models_read_only_and_the_state_read_write(tmp_path):
    import yaml

    from .test_deploy import K8S, _gobin, _tool, _validate

    kustomize = _tool("kustomize", _gobin())
    for overlay in ("dev", "prod"):
        docs = [d for d in yaml.safe_load_all(subprocess.run(
            [kustomize, "build", str(K8S / "overlays" / overlay)], capture_output=True, text=True,
            check=True).stdout) if d]
        claims = {d["metadata"]["name"]: d["spec"]["accessModes"] for d in docs
                  if d["kind"] == "PersistentVolumeClaim"}
        assert claims == {"dwcp-inference-models": ["ReadWriteMany"], "dwcp-inference-state": ["ReadWriteMany"]}
        pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
        assert mounts["models"]["readOnly"] and volumes["models"]["readOnly"]
        assert not mounts["state"].get("readOnly") and not volumes["state"].get("readOnly")
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["DWCP_INFERENCE_STATE_DIR"] == mounts["state"]["mountPath"]
    job_file = K8S / "examples" / "publish-job.yaml"
    proc = _validate(job_file)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = yaml.safe_load(job_file.read_text())["spec"]["template"]["spec"]
    assert job["volumes"][0]["persistentVolumeClaim"] == {"claimName": "dwcp-inference-models"}
    assert not any(m.get("readOnly") for m in job["containers"][0]["volumeMounts"])
