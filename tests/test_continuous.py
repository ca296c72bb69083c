"""Continuous training's parts: the stages in the policy, the admin API's SetStage and shadow statistics on a real
server, the data feed on DWCP's export format, the triggers, the evidence tests, MLflow tracking, and the command
(--dry-run, --pause). The whole loop on a real server: tests/test_continuous_e2e.py."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from dwcp_inference.api import admin_pb2 as apb
from dwcp_inference.api import admin_pb2_grpc as apb_grpc
from dwcp_inference.commands.ct_data import DataFeed, dwcp_export
from dwcp_inference.commands.ct_evidence import EvidenceConfig, judge
from dwcp_inference.commands.ct_triggers import Observation, TriggerConfig, Triggers
from dwcp_inference.services.policy import Policy, PolicyError, PolicyInvalid, validate
from dwcp_inference.services.settings import bundled_models

from .conftest import free_port, start_server

CLI = str(Path(sys.executable).parent / "dwcp-inference")


# ---------------------------------------------------------------------------------------------- policy stages

def test_policy_stages_are_validated_and_the_candidate_label_follows_staging():
    with pytest.raises(PolicyInvalid, match=r"stages\.3: expected one of \['staging', 'production', 'archived'\]"):
        validate({"stages": {"3": "beta"}})
    with pytest.raises(PolicyInvalid, match="at most one version in staging"):
        validate({"stages": {"3": "staging", "4": "staging"}})
    with pytest.raises(PolicyInvalid, match="stages: expected version strings"):
        validate({"stages": {"v3": "staging"}})
    p = Policy(labels={"stable": "1"})
    p.set_stage("2", "staging")
    assert p.labels == {"stable": "1", "candidate": "2"} and p.stages == {"2": "staging"}
    p.keep_latest = 1
    assert p.wanted(["1", "2", "3", "4"]) == ["1", "2", "4"]  # staging stays loaded, whatever keep_latest says
    p.set_stage("3", "staging")  # a new candidate archives the old one
    assert p.labels["candidate"] == "3" and p.stages == {"2": "archived", "3": "staging"}
    p.set_stage("3", "production")
    assert "candidate" not in p.labels and p.stages["3"] == "production"
    with pytest.raises(PolicyError, match="stage: expected one of"):
        p.set_stage("3", "beta")
    p.promote("canary", "3")
    p.split = {"stable": 90, "canary": 10}
    p.set_stage("3", "archived")  # a failed canary: its label and share go, stable stays
    assert p.labels == {"stable": "1"} and p.split == {"stable": 90} and p.stages["3"] == "archived"


# ---------------------------------------------------------------------------------------------- admin API

@pytest.fixture()
def bundled_copy(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(bundled_models(), repo)
    # a second bandwidth version to stage: the same model under number 2
    shutil.copytree(repo / "bandwidth_predictor" / "1", repo / "bandwidth_predictor" / "2")
    meta = json.loads((repo / "bandwidth_predictor" / "2" / "metadata.json").read_text())
    meta["version"] = "2"
    (repo / "bandwidth_predictor" / "2" / "metadata.json").write_text(json.dumps(meta))
    return repo


def test_set_stage_moves_a_version_and_lists_it_with_its_stage(bundled_copy: Path, tmp_path: Path):
    running = start_server(bundled_copy, admin_port=0, state_dir=tmp_path / "state")
    try:
        admin = apb_grpc.AdminServiceStub(grpc.insecure_channel(f"127.0.0.1:{running.admin_port}"))
        admin.Promote(apb.PromoteRequest(model="bandwidth_predictor", label="stable", version="1"))
        status = admin.SetStage(apb.SetStageRequest(model="bandwidth_predictor", version="2", stage="staging"))
        assert status.labels["candidate"] == "2"
        assert {v.version: v.stage for v in status.versions} == {"2": "staging", "1": ""}
        assert next(v.state for v in status.versions if v.version == "1") == "serving"  # the candidate never answers
        with pytest.raises(grpc.RpcError) as e:
            admin.SetStage(apb.SetStageRequest(model="bandwidth_predictor", version="2", stage="beta"))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "stage: expected one of" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            admin.SetStage(apb.SetStageRequest(model="bandwidth_predictor", version="9", stage="staging"))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and "no version '9'" in e.value.details()
        status = admin.SetStage(apb.SetStageRequest(model="bandwidth_predictor", version="2", stage="archived"))
        assert "candidate" not in status.labels and status.versions[0].stage == "archived"
        stats = admin.GetShadowStats(apb.ShadowStatsRequest(model="bandwidth_predictor"))
        assert list(stats.comparisons) == []  # nothing shadowed yet
        written = json.loads((tmp_path / "state" / "bandwidth_predictor" / "policy.json").read_text())
        assert written["stages"] == {"2": "archived"}
    finally:
        running.stop(0)


# ---------------------------------------------------------------------------------------------- data feed

def _export(path: Path, start: int, n: int, seed: int = 0, scale: float = 1.0) -> None:
    rng = np.random.default_rng(seed)
    ts = start + 60 * np.arange(n)
    dwcp_export(path, ts, scale * (500 + 50 * rng.standard_normal(n)).clip(1), 20 + rng.random(n),
                0.001 + 0.001 * rng.random(n), 2 + rng.random(n))


def test_data_feed_reads_dwcp_exports_once_and_refuses_bad_files_with_the_reason(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    _export(data / "node-a.csv", 1_767_000_000, 100)
    header = (data / "node-a.csv").read_text().splitlines()[0]
    assert header == "timestamp,bandwidth_mbps,latency_ms,packet_loss,jitter_ms,time_of_day,day_of_week"
    (data / "broken.csv").write_text(header + "\n1767000000,-5,20,0.001,2,10,3\n1767000060,6,21,0.002,3,10,3\n")
    feed = DataFeed(data, "bandwidth_predictor")
    first = {f.name: f for f in feed.scan()}
    assert first["node-a.csv"].rows == 100 and not first["node-a.csv"].refused
    assert "row 2, column bandwidth_mbps: -5 is outside [0, None]" in first["broken.csv"].refused
    assert feed.scan() == []  # remembered by name, size and modification time
    state = feed.state()
    _export(data / "node-b.csv", 1_767_100_000, 50, seed=1)
    again = DataFeed(data, "bandwidth_predictor", state)  # a restarted controller
    assert [f.name for f in again.scan()] == ["node-b.csv"]
    assert [f.name for f in again.newest(60)] == ["node-b.csv"] and len(again.newest(10_000)) == 2
    fp = DataFeed.fingerprint(again.accepted())
    assert len(fp) == 64 and fp != DataFeed.fingerprint(again.newest(60))
    merged = tmp_path / "merged.csv"
    assert again.merge(again.accepted(), merged) == 150
    from dwcp_inference.training.data.csv_schema import load_csv

    columns = load_csv(merged, "bandwidth_predictor")  # what train reads: one link per exported file
    assert sorted(set(columns["link_id"])) == ["node-a", "node-b"] and len(columns["bandwidth_mbps"]) == 150


# ---------------------------------------------------------------------------------------------- triggers

def test_triggers_fire_on_their_evidence_only():
    t = Triggers("bandwidth_predictor", TriggerConfig(drift_threshold=2, drift_checks=2, accuracy_margin=0.25,
                                                       accuracy_min_outcomes=10, schedule_seconds=0,
                                                       min_new_rows=100))
    calm = Observation(now=100, drift={"bw": 1.1}, live={"mape": 9.0}, outcomes=50, held_out=8.0, new_rows=99,
                       last_trained=0)
    assert t.check(calm) == []  # 9 < 8 * 1.25, 99 < 100 rows
    drifted = Observation(now=100, drift={"bw": 3.5, "lat": 1.0}, held_out=8.0)
    assert t.check(drifted) == []  # one check above the threshold is not a while
    (fired,) = t.check(drifted)
    assert fired.trigger == "drift" and fired.evidence == {"feature": "bw", "rms": 3.5, "threshold": 2,
                                                            "checks": 2}
    worse = Observation(now=100, live={"mape": 10.5}, outcomes=10, held_out=8.0, new_rows=100)
    assert sorted(f.trigger for f in t.check(worse)) == ["accuracy", "rows"]
    assert t.check(Observation(now=100, live={"mape": 10.5}, outcomes=9, held_out=8.0)) == []  # too few outcomes
    clock = Triggers("compression_selector", TriggerConfig(schedule_seconds=60))
    assert [f.trigger for f in clock.check(Observation(now=1000, last_trained=900))] == ["schedule"]
    assert clock.check(Observation(now=1000, last_trained=950)) == []
    acc = Triggers("compression_selector", TriggerConfig(accuracy_margin=0.1, accuracy_min_outcomes=5))
    assert acc.check(Observation(now=0, live={"accuracy": 0.85}, outcomes=5, held_out=0.9)) == []
    assert [f.trigger for f in acc.check(Observation(now=0, live={"accuracy": 0.8}, outcomes=5,
                                                     held_out=0.9))] == ["accuracy"]


# ---------------------------------------------------------------------------------------------- evidence

def _paired(d: np.ndarray) -> dict:
    return {"outcomes": len(d), "mean_difference": float(d.mean()), "variance_difference": float(d.var(ddof=1))}


def test_paired_t_test_promotes_a_clearly_better_challenger_and_rejects_a_worse_one():
    rng = np.random.default_rng(0)
    c = EvidenceConfig(min_outcomes=30, max_outcomes=500, margin=1.0, alpha=0.05)
    assert judge("bandwidth_predictor", _paired(rng.normal(-5, 4, 20)), c).decision == "wait"  # too few
    better = judge("bandwidth_predictor", _paired(rng.normal(-5, 4, 40)), c)
    assert better.decision == "promote" and better.figures["p_better"] < 0.05
    from scipy import stats

    d = rng.normal(-1.5, 4, 200)  # the textbook test, on the same data, agrees with the running statistics
    ours = judge("bandwidth_predictor", _paired(d), c).figures["p_better"]
    assert math.isclose(ours, stats.ttest_1samp(d + 1.0, 0, alternative="less").pvalue, rel_tol=1e-2)
    worse = judge("bandwidth_predictor", _paired(rng.normal(3, 4, 40)), c)
    assert worse.decision == "reject" and "higher by" in worse.reason
    noise = judge("bandwidth_predictor", _paired(rng.normal(-0.2, 4, 500)), c)
    assert noise.decision == "reject" and "no evidence" in noise.reason  # better, but not by the margin


def test_mcnemar_decides_on_the_discordant_outcomes():
    c = EvidenceConfig(min_outcomes=30, margin=0.02, alpha=0.05)
    cells = {"outcomes": 100, "both_right": 80, "both_wrong": 5}
    assert judge("compression_selector", {**cells, "only_champion_right": 2, "only_candidate_right": 13},
                 c).decision == "promote"
    assert judge("compression_selector", {**cells, "only_champion_right": 13, "only_candidate_right": 2},
                 c).decision == "reject"
    assert judge("reliability_detector", {**cells, "only_champion_right": 7, "only_candidate_right": 8},
                 c).decision == "wait"


# ---------------------------------------------------------------------------------------------- tracking

def test_mlflow_tracking_records_params_metrics_and_artifacts_offline(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    from dwcp_inference.commands.ct_tracking import Tracker, default_uri, held_out_metrics

    tracker = Tracker(default_uri(tmp_path), tmp_path / "mlruns")
    run_id = tracker.start("bandwidth_predictor", {"seed": 0, "data_fingerprint": "ab" * 32}, {"trigger": "drift"})
    (tmp_path / "metadata.json").write_text("{}")
    metrics = held_out_metrics({"test": {"lstm (ours)": {"mape_pct": 4.5}, "last_value": {"mape_pct": 9.0}}})
    tracker.finish(run_id, metrics, [tmp_path / "metadata.json"], "FINISHED", {"version": "2"})
    run = MlflowClient(default_uri(tmp_path)).get_run(run_id)
    assert run.data.params["data_fingerprint"] == "ab" * 32 and run.data.tags["trigger"] == "drift"
    assert run.data.metrics == {"test.lstm _ours_.mape_pct": 4.5, "test.last_value.mape_pct": 9.0}
    assert run.info.status == "FINISHED" and (tmp_path / "mlruns").is_dir()
    assert [a.path for a in MlflowClient(default_uri(tmp_path)).list_artifacts(run_id)] == ["metadata.json"]


# ---------------------------------------------------------------------------------------------- the command

def test_dry_run_says_what_it_would_do_and_changes_nothing_and_pause_stops_it(bundled_copy: Path, tmp_path: Path):
    running = start_server(bundled_copy, admin_port=0, metrics_port=0, state_dir=tmp_path / "server-state")
    data = tmp_path / "data"
    data.mkdir()
    _export(data / "node-a.csv", 1_767_000_000, 300)
    state = tmp_path / "ct"
    base = [CLI, "continuous", "--repository", str(bundled_copy), "--admin", f"127.0.0.1:{running.admin_port}",
            "--target", f"127.0.0.1:{running.port}", "--metrics-url", "", "--data", str(data),
            "--state-dir", str(state), "--once", "--min-new-rows", "100", "--tracking-uri", "off"]
    try:
        out = subprocess.run(base + ["--dry-run"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "[dry-run] would call Promote(label='stable', version='2')" in out.stdout  # adopts the serving one
        assert "[dry-run] trigger: rows: 300 new rows (at least 100)" in out.stdout
        assert "would train a challenger on 1 files (300 rows)" in out.stdout
        assert not (state / "controller-bandwidth_predictor.json").exists()
        assert not (tmp_path / "server-state" / "bandwidth_predictor").exists()  # no admin change
        assert sorted(p.name for p in (bundled_copy / "bandwidth_predictor").iterdir()) == ["1", "2"]
        subprocess.run([CLI, "continuous", "--state-dir", str(state), "--pause"], check=True, timeout=60)
        out = subprocess.run(base, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        events = [json.loads(x) for x in (state / "events.jsonl").read_text().splitlines()]
        assert events[-1]["event"] == "paused"
        assert not (tmp_path / "server-state" / "bandwidth_predictor").exists()
        subprocess.run([CLI, "continuous", "--state-dir", str(state), "--resume"], check=True, timeout=60)
        assert not (state / "paused").exists()
    finally:
        running.stop(0)


def test_bad_settings_are_refused_naming_the_setting(tmp_path: Path):
    (tmp_path / "ct.toml").write_text("drift_threshold = 2.5\nwobble = 1\n")
    out = subprocess.run([CLI, "continuous", "--repository", str(tmp_path), "--data", str(tmp_path),
                          "--config", str(tmp_path / "ct.toml")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "unknown settings ['wobble']" in out.stderr
    out = subprocess.run([CLI, "continuous", "--repository", str(tmp_path / "nope"), "--data", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--repository" in out.stderr and "not a directory" in out.stderr
    out = subprocess.run([CLI, "continuous", "--repository", str(tmp_path), "--data", str(tmp_path),
                          "--canary-weight", "-3"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "canary_weight: expected a number >= 0" in out.stderr


def test_several_replicas_statistics_merge_exactly():
    from dwcp_inference.commands.continuous import combine

    rng = np.random.default_rng(1)
    parts = [rng.normal(-2, 3, n) for n in (7, 40, 1)]
    replies = []
    for i, d in enumerate(parts):
        m = apb.ModelStatus(name="bandwidth_predictor", labels={"stable": "1"})
        m.versions.add(version="1", outcomes=10 * (i + 1), live_accuracy={"mape": float(i + 1)})
        m.shadow.add(candidate="2", champion="1", outcomes=len(d), mean_difference=float(d.mean()),
                     variance_difference=float(d.var(ddof=1)) if len(d) > 1 else 0.0, shadowed=len(d) + 1)
        replies.append(m)
    merged = combine(replies)
    pooled = np.concatenate(parts)
    (c,) = merged.shadow
    assert c.outcomes == 48 and c.shadowed == 51
    assert math.isclose(c.mean_difference, pooled.mean()) and math.isclose(c.variance_difference, pooled.var(ddof=1))
    assert merged.versions[0].outcomes == 60
    assert math.isclose(merged.versions[0].live_accuracy["mape"], (10 * 1 + 20 * 2 + 30 * 3) / 60)


# ---------------------------------------------------------------------------------------------- the shadow

def test_ids_of_shadowed_calls_name_the_candidate_and_format_1_ids_still_open():
    from dwcp_inference.services.prediction_ids import Signer

    signer = Signer(b"k" * 32)
    (old,) = signer.sign_many("bandwidth_predictor", "1", np.array([512.0]), 1_767_000_000)
    (new,) = signer.sign_many("bandwidth_predictor", "1", np.array([512.0]), 1_767_000_000, nonces=b"n" * 8,
                              shadow_version="12")
    assert signer.open(old).shadow_version == "" and signer.open(old).predicted == 512.0
    opened = signer.open(new)
    assert (opened.version, opened.predicted, opened.shadow_version, opened.nonce) == ("1", 512.0, "12", b"n" * 8)
    assert len(new) == len(old) + 4  # one length byte and "12"
    raw = bytearray(__import__("base64").urlsafe_b64decode(new + "=="))
    raw[-17] ^= 1  # the candidate's version, altered
    assert signer.open(__import__("base64").urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()) is None
    for model, predicted in (("compression_selector", [("zstd", 3)]), ("reliability_detector", np.array([True]))):
        (i,) = signer.sign_many(model, "4", predicted, 1_767_000_000, nonces=b"m" * 8, shadow_version="5")
        assert signer.open(i).shadow_version == "5" and signer.open(i).model == model


class _Repo:
    """Just what the shadow asks of a repository: policies and loaded runtimes."""

    def __init__(self, candidate, runtimes):
        self.candidate, self.runtimes = candidate, runtimes

    def policies(self):
        return {"bandwidth_predictor": Policy(labels={"candidate": self.candidate})}

    def loaded(self):
        return {"bandwidth_predictor": self.runtimes}


class _Rt:
    name = "bandwidth_predictor"

    def __init__(self, version):
        self.version = version


def test_the_shadow_skips_calls_when_its_queue_is_full_and_never_blocks_the_caller():
    import threading
    from types import SimpleNamespace

    from dwcp_inference.services.metrics import Metrics
    from dwcp_inference.services.shadow import Shadow

    release = threading.Event()

    def slow(rt, columns):  # the candidate's decision, stuck until released
        release.wait(10)
        return SimpleNamespace(bandwidth_mbps=np.array([400.0] * len(columns["x"])))

    shadow = Shadow(_Repo("2", {"1": _Rt("1"), "2": _Rt("2")}), Metrics(), fraction=1.0, queue_size=2)
    tickets = []
    for _ in range(5):  # one running, two queued, two skipped
        shadow.offer(slow, _Rt("1"), {"x": np.zeros(3)}, 3)
        tickets.append(shadow.take())
    assert shadow.take() is None  # taken once
    shadow.offer(slow, _Rt("2"), {"x": np.zeros(1)}, 1)  # the candidate itself answered: not shadowed
    assert shadow.take() is None
    release.set()
    shadow.wait_idle()
    counts = {c["candidate"]: c for c in shadow.comparisons("bandwidth_predictor")}["2"]
    skipped = [t for t in tickets if t is None]
    assert len(skipped) == counts["skipped"] >= 1 and counts["shadowed"] == 5 - len(skipped)
    model, version, nonces = next(t for t in tickets if t is not None)
    assert (model, version) == ("bandwidth_predictor", "2") and shadow.prediction(nonces[8:16], "2") == 400.0
    assert shadow.prediction(nonces[8:16], "2") is None  # once


def test_outcomes_of_shadowed_calls_judge_both_versions_on_a_real_server(bundled_copy: Path, tmp_path: Path):
    from dwcp_inference.api import inference_pb2 as pb
    from dwcp_inference.api import inference_pb2_grpc as pb_grpc

    from .samples import link_history

    running = start_server(bundled_copy, admin_port=0, shadow_fraction=1.0, state_dir=tmp_path / "state")
    try:
        admin = apb_grpc.AdminServiceStub(grpc.insecure_channel(f"127.0.0.1:{running.admin_port}"))
        stub = pb_grpc.InferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{running.port}"))
        admin.Promote(apb.PromoteRequest(model="bandwidth_predictor", label="stable", version="1"))
        admin.SetStage(apb.SetStageRequest(model="bandwidth_predictor", version="2", stage="staging"))
        before = stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history()))
        assert before.model.version == "1"  # the candidate never answers
        ids = []
        for i in range(12):
            r = stub.PredictBandwidthBatch(pb.PredictBandwidthBatchRequest(
                histories=[link_history(bandwidth=400.0 + i), link_history(bandwidth=600.0 + i)]))
            assert r.model.version == "1"
            ids += [p.prediction_id for p in r.predictions]
        _until_shadowed(admin, 13)
        for i, pid in enumerate(ids):
            stub.ReportOutcome(pb.ReportOutcomeRequest(prediction_id=pid, actual_network=pb.NetworkSample(
                bandwidth_mbps=300.0 + 10 * i)))
        status = admin.ListModels(apb.ListModelsRequest(model="bandwidth_predictor")).models[0]
        (c,) = status.shadow
        assert (c.candidate, c.champion, c.outcomes, c.shadowed, c.skipped, c.unmatched) == ("2", "1", 24, 12 + 1, 0, 0)
        # version 2 is a copy of version 1: every paired difference is 0, and both versions' tallies agree
        assert c.mean_difference == 0 and c.variance_difference == 0
        outcomes = {v.version: (v.outcomes, dict(v.live_accuracy)) for v in status.versions}
        assert outcomes["1"] == outcomes["2"] and outcomes["2"][0] == 24
        stats = admin.GetShadowStats(apb.ShadowStatsRequest(model="bandwidth_predictor"))
        assert stats.comparisons[0] == c
        listing = subprocess.run([CLI, "models", "--admin", f"127.0.0.1:{running.admin_port}", "list", "bandwidth"],
                                 capture_output=True, text=True, timeout=60).stdout
        assert "stage: staging" in listing and "shadow: v2 beside v1: 24 paired outcomes, mean difference +0 pp" \
            in listing, listing
        with pytest.raises(grpc.RpcError) as e:
            admin.GetShadowStats(apb.ShadowStatsRequest(model="bandwidth"))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        running.stop(0)


def _until_shadowed(admin, calls: int) -> None:
    """Until the shadow thread has run `calls` calls (it runs after they were answered)."""
    import time

    end = time.monotonic() + 30
    while time.monotonic() < end:
        stats = admin.GetShadowStats(apb.ShadowStatsRequest(model="bandwidth_predictor")).comparisons
        if stats and stats[0].shadowed + stats[0].skipped >= calls:
            return
        time.sleep(0.05)
    raise AssertionError(f"the shadow ran {list(stats)} calls, expected {calls}")


def test_the_kubernetes_controller_validates_strictly_and_reaches_the_admin_port(tmp_path: Path):
    import yaml

    from .test_deploy import K8S, _gobin, _tool, _validate

    kustomize = _tool("kustomize", _gobin())
    out = subprocess.run([kustomize, "build", str(K8S / "overlays" / "continuous")], capture_output=True, text=True,
                         check=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    core = tmp_path / "core.yaml"
    core.write_text(yaml.safe_dump_all([d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com")]))
    proc = _validate(core)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "dwcp-inference-continuous")
    assert dep["metadata"]["namespace"] == "dwcp" and dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"]["type"] == "Recreate"  # its state must not be shared by two controllers
    pod = dep["spec"]["template"]
    c = pod["spec"]["containers"][0]
    assert c["command"] == ["dwcp-inference", "continuous"] and c["securityContext"]["readOnlyRootFilesystem"]
    assert c["image"].endswith("dwcp-inference-train:0.1.0")
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    admin = next(r for r in policy["spec"]["ingress"] if any(p["port"] == 50052 for p in r["ports"]))
    assert all(pod["metadata"]["labels"].get(k) == v for k, v in admin["from"][0]["podSelector"]["matchLabels"].items())
    import tomllib
    from dataclasses import fields

    from dwcp_inference.commands.continuous import SECTIONS

    toml = tomllib.loads(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["continuous.toml"])
    assert set(toml) <= {f.name for s in SECTIONS for f in fields(s)}  # every setting one the command knows


class _AdminAnswers:
    """The server as the controller reads it (a fixed ModelStatus); the changes it asks for are recorded."""

    def __init__(self, model):
        self.model = model
        self.calls = []

    def healthy(self):
        return True

    def status(self, model):
        return self.model

    def scrape(self, model):
        return {"drift": {}, "nonfinite": {}, "buckets": {}}

    def call(self, rpc, **kw):
        self.calls.append((rpc, kw))


def test_a_pinned_stable_version_is_never_moved_and_a_canary_is_not_shadowed(tmp_path: Path):
    import argparse

    from dwcp_inference.commands.continuous import ControllerConfig, Controller

    m = apb.ModelStatus(name="bandwidth_predictor", labels={"stable": "1", "candidate": "2"}, pinned=["1"])
    m.versions.add(version="2", state="loaded", stage="staging", outcomes=50)
    m.versions.add(version="1", state="serving", stage="production", outcomes=500)
    m.shadow.add(candidate="2", champion="1", outcomes=50, mean_difference=-8.0, variance_difference=4.0)
    data = tmp_path / "data"
    data.mkdir()
    args = argparse.Namespace(model="bandwidth_predictor", dry_run=False, state_dir=tmp_path / "ct", data=data,
                              repository=tmp_path, metrics_port=-1, tracking_uri="off", target="")
    server = _AdminAnswers(m)
    controller = Controller(args, TriggerConfig(), EvidenceConfig(min_outcomes=20), ControllerConfig(), server)
    controller.state.update(phase="shadow", challenger="2", champion="1")
    assert controller.check() == "shadow" and server.calls == []  # better, but stable 1 is pinned
    assert [e["event"] for e in map(json.loads, (tmp_path / "ct" / "events.jsonl").read_text().splitlines())] == [
        "held"]
    del server.model.pinned[:]
    assert controller.check() == "canary"
    assert server.calls == [("Promote", {"model": "bandwidth_predictor", "label": "canary", "version": "2"}),
                            ("SetSplit", {"model": "bandwidth_predictor", "weights": {"stable": 90.0, "canary": 10.0}})]
    from dwcp_inference.services.shadow import Shadow
    from dwcp_inference.services.metrics import Metrics

    repo = _Repo("2", {"1": _Rt("1"), "2": _Rt("2")})
    shadow = Shadow(repo, Metrics(), fraction=1.0)
    assert shadow.candidate("bandwidth_predictor", "1") is repo.runtimes["2"]
    repo.policies = lambda: {"bandwidth_predictor": Policy(labels={"candidate": "2", "canary": "2", "stable": "1"},
                                                           split={"stable": 90, "canary": 10})}
    assert shadow.candidate("bandwidth_predictor", "1") is None  # it answers its own share now


# ---------------------------------------------------------------------------------------------- training in flight

# Stands in for `dwcp-inference train` (the e2e tests run the real one): what it does is in the file `mode` beside
# it. "hold": waits for the file `release`, then builds the bundled version into --out; "hang": never ends.
FAKE_TRAIN = """#!{python}
import shutil, sys, time
from pathlib import Path
here = Path(__file__).parent
out = Path(sys.argv[sys.argv.index("--out") + 1])
mode = (here / "mode").read_text()
while mode == "hang" or not (here / "release").exists():
    time.sleep(0.05)
shutil.copytree({bundled!r}, out / "bandwidth_predictor" / "1")
"""


def _training_controller(tmp_path: Path, monkeypatch, **config):
    import argparse

    from dwcp_inference.commands import continuous

    fake = tmp_path / "bin" / "train"
    fake.parent.mkdir()
    fake.write_text(FAKE_TRAIN.format(python=sys.executable,
                                      bundled=str(bundled_models() / "bandwidth_predictor" / "1")))
    fake.chmod(0o755)
    monkeypatch.setattr(continuous, "_train_command", lambda: str(fake))
    m = apb.ModelStatus(name="bandwidth_predictor", labels={"stable": "1"})
    m.versions.add(version="1", state="serving", stage="production", outcomes=10)
    (tmp_path / "data").mkdir()
    shutil.copytree(bundled_models() / "bandwidth_predictor", tmp_path / "repo" / "bandwidth_predictor")
    args = argparse.Namespace(model="bandwidth_predictor", dry_run=False, state_dir=tmp_path / "ct",
                              data=tmp_path / "data", repository=tmp_path / "repo", metrics_port=-1,
                              tracking_uri="off", target="")
    server = _AdminAnswers(m)
    controller = continuous.Controller(args, TriggerConfig(min_new_rows=1), EvidenceConfig(),
                                       continuous.ControllerConfig(**config), server)
    return controller, server, fake.parent


def _new_file(data: Path, name: str) -> None:
    n, rng = 50, np.random.default_rng(len(name) + ord(name[0]))
    dwcp_export(data / name, 1_767_000_000 + 60 * np.arange(n), 500 + 50 * rng.random(n), 20 + rng.random(n),
                0.001 + 0.001 * rng.random(n), 2 + rng.random(n))


def _kinds(state: Path) -> list[str]:
    return [json.loads(x)["event"] for x in (state / "events.jsonl").read_text().splitlines()]


@pytest.mark.timeout(60)
def test_checks_go_on_while_a_challenger_trains_and_a_paused_controller_publishes_nothing(tmp_path, monkeypatch):
    controller, server, bin_dir = _training_controller(tmp_path, monkeypatch)
    (bin_dir / "mode").write_text("hold")
    _new_file(tmp_path / "data", "a.csv")
    assert controller.check() == "idle" and controller.training  # the check returned with the training running
    assert _kinds(tmp_path / "ct")[-2:] == ["trigger", "train"]
    for name in ("b.csv", "c.csv"):  # further triggers while it trains: no second training, said once
        _new_file(tmp_path / "data", name)
        controller.check()
    assert _kinds(tmp_path / "ct").count("train") == 1 and _kinds(tmp_path / "ct").count("busy") == 1

    (tmp_path / "ct" / "paused").write_text("")
    (bin_dir / "release").write_text("")
    controller.training.proc.wait(60)
    controller.check()
    assert "published" not in _kinds(tmp_path / "ct") and server.calls == []  # paused: the challenger waits
    (tmp_path / "ct" / "paused").unlink()
    assert controller.check() == "shadow" and controller.training is None
    assert server.calls == [("SetStage", {"model": "bandwidth_predictor", "version": "2", "stage": "staging"})]
    assert (tmp_path / "repo" / "bandwidth_predictor" / "2" / "metadata.json").exists()


@pytest.mark.timeout(60)
def test_a_training_past_its_time_limit_is_ended_and_the_next_trigger_trains_again(tmp_path, monkeypatch):
    controller, server, bin_dir = _training_controller(tmp_path, monkeypatch, train_timeout_seconds=0.5)
    (bin_dir / "mode").write_text("hang")
    _new_file(tmp_path / "data", "a.csv")
    controller.check()
    hung = controller.training.proc
    while controller.training:  # waits for the limit (no assertion on time)
        controller.check()
    assert hung.poll() is not None  # ended, not left behind
    rejected = json.loads((tmp_path / "ct" / "events.jsonl").read_text().splitlines()[-1])
    assert rejected["event"] == "reject" and rejected["reason"] == "train_timeout"
    assert rejected["seconds"] >= 0.5 and "0.5 s" in rejected["message"]
    assert controller.state.get("last_fingerprint") is None  # a timeout says nothing of the data: not marked tried
    _new_file(tmp_path / "data", "b.csv")
    controller.check()
    assert _kinds(tmp_path / "ct").count("train") == 2 and controller.training
    controller.stop_training()
