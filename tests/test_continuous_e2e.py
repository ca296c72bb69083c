"""Continuous training end to end, on a real server (`dwcp-inference serve`) and the real controller
(`dwcp-inference continuous`), with a client calling and reporting outcomes all along:

1. the links change (traffic B: a 16-sample cycle the served forecaster, trained on DWCP-like daily cycles, follows
   only a step late); their DWCP exports are in the data directory. Live accuracy falls below the champion's
   held-out figure: retraining; the challenger shadows the champion, beats it (paired t-test), goes through the
   canary and becomes stable;
2. the links change again (traffic D: the same cycle at four times the bandwidth): the promoted version degrades
   and is rolled back to the archived champion. Meanwhile a feed of other links' data (C) arrives;
3. traffic goes back to the champion's own kind (A): retraining on the newest data (C) makes a challenger that
   passes its offline gate but is worse live: rejected on the evidence.

No call fails throughout. The test prints the timeline (what fired when, with the figures that decided).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from dwcp_inference.api import admin_pb2 as apb
from dwcp_inference.api import admin_pb2_grpc as apb_grpc
from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc
from dwcp_inference.commands.ct_data import dwcp_export
from dwcp_inference.services.settings import bundled_models

from .conftest import free_port

CLI = str(Path(sys.executable).parent / "dwcp-inference")
WINDOW = 24
ROWS = 1500  # per exported file; three files per feed


def stream(kind: str, n: int, seed: int) -> tuple[np.ndarray, ...]:
    """(timestamps, bandwidth, latency, loss, jitter) of one link. A: DWCP-like daily cycles (what the bundled
    forecaster was trained on); B: a 16-sample cycle around 500 Mbps; C: a 40-sample one; D: B at four times the
    bandwidth; E: B over long-haul paths (latency and jitter twenty times B's)."""
    rng = np.random.default_rng(seed)
    if kind == "A":
        from dwcp_inference.training.data.generators import network_samples

        cols = network_samples(links=1, days=4, seed=seed)
        ts = cols["timestamp"].astype("datetime64[s]").astype(np.int64)
        return ts, cols["bandwidth_mbps"], cols["latency_ms"], cols["packet_loss"], cols["jitter_ms"]
    period, scale = {"B": (16, 1.0), "C": (40, 1.0), "D": (16, 4.0), "E": (16, 1.0)}[kind]
    far = 20 if kind == "E" else 1
    i = np.arange(n)
    bw = scale * (500 + 200 * np.sin(2 * np.pi * (i + 3 * seed) / period)) * np.exp(rng.normal(0, 0.02, n))
    return (1_767_000_000 + 60 * i, bw, far * (20 + 5 * rng.random(n)), 0.001 + 0.002 * rng.random(n),
            far * (2 + rng.random(n)))


def export_feed(data: Path, kind: str) -> None:
    for i in range(3):
        dwcp_export(data / f"links-{kind}{i}.csv", *stream(kind, ROWS, seed=i + 10 * ord(kind)))


class Traffic(threading.Thread):
    """One client: predicts the next sample of the current stream's link and reports what came, counting every
    failed call."""

    def __init__(self, target: str):
        super().__init__(daemon=True)
        self.stub = pb_grpc.InferenceServiceStub(grpc.insecure_channel(target))
        self.kind = "B"
        self.calls = self.failures = 0
        self.errors: list[str] = []
        self.answered_by: dict[str, int] = {}
        self.stopping = threading.Event()
        # the hours and days the feeds cover: a model trained on a day of samples knows only those days
        self._streams = {k: stream(k, ROWS, seed=7) for k in "ABDE"}

    def run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            ts, bw, lat, loss, jit = self._streams[self.kind]
            i = (i + 1) % (len(ts) - WINDOW - 1)
            samples = []
            for j in range(i, i + WINDOW + 1):
                t = np.datetime64(int(ts[j]), "s")
                stamp = Timestamp(seconds=int(ts[j]))
                hour = int((t - t.astype("datetime64[D]")).astype(int) // 3600)
                dow = int((t.astype("datetime64[D]").astype(int) + 4) % 7)
                samples.append(pb.NetworkSample(timestamp=stamp, bandwidth_mbps=float(bw[j]), latency_ms=float(lat[j]),
                                                packet_loss=float(loss[j]), jitter_ms=float(jit[j]),
                                                time_of_day=hour, day_of_week=dow))
            try:
                r = self.stub.PredictBandwidth(pb.PredictBandwidthRequest(
                    history=pb.LinkHistory(samples=samples[:WINDOW])), timeout=10)
                self.answered_by[r.model.version] = self.answered_by.get(r.model.version, 0) + 1
                self.stub.ReportOutcome(pb.ReportOutcomeRequest(prediction_id=r.prediction.prediction_id,
                                                                actual_network=samples[WINDOW]), timeout=10)
            except grpc.RpcError as e:
                self.failures += 1
                self.errors.append(f"{e.code().name}: {e.details()}")
            self.calls += 1
            time.sleep(0.002)


def _events(state: Path) -> list[dict]:
    path = state / "events.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _wait_event(state: Path, kind: str, timeout: float, after: int = 0, procs: tuple = (), **match) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for e in _events(state)[after:]:
            if e["event"] == kind and all(e.get(k) == v for k, v in match.items()):
                return e
        for p in procs:
            assert p.poll() is None, f"{p.args[1]} exited with {p.returncode}"
        time.sleep(0.2)
    raise AssertionError(f"no {kind} event {match} within {timeout} s; events: "
                         + json.dumps([(e['event'], e['message']) for e in _events(state)], indent=1))


def _timeline(state: Path, started: float) -> str:
    shown = ("trigger", "train", "published", "shadow", "canary", "promote", "rollback", "reject", "adopt")
    lines = []
    for e in _events(state):
        if e["event"] in shown:
            figures = e.get("figures") or e.get("evidence") or {}
            lines.append(f"  t+{e['time'] - started:6.1f}s  {e['event']:<9} {e['message']}"
                         + (f"  {json.dumps(figures)}" if figures and e["event"] != "trigger" else ""))
    return "\n".join(lines)


@pytest.mark.timeout(300)
def test_drift_retrains_promotes_rejects_and_rolls_back_with_no_failed_call(tmp_path: Path):
    repo, data, state, server_state = (tmp_path / n for n in ("repo", "data", "ct", "server-state"))
    shutil.copytree(bundled_models() / "bandwidth_predictor", repo / "bandwidth_predictor")
    data.mkdir()
    export_feed(data, "B")
    port, admin_port, metrics_port = free_port(), free_port(), free_port()
    env = {**os.environ, "DWCP_INFERENCE_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([CLI, "serve", "--repository", str(repo), "--port", str(port),
                               "--admin-port", str(admin_port), "--metrics-port", str(metrics_port),
                               "--metrics-host", "127.0.0.1", "--state-dir", str(server_state),
                               "--shadow-fraction", "0.5", "--poll-seconds", "0.5"], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"))
    procs = [server]
    traffic = Traffic(f"127.0.0.1:{port}")
    try:
        _wait_serving(port)
        started = time.time()
        controller = subprocess.Popen([
            CLI, "continuous", "--model", "bandwidth", "--repository", str(repo), "--data", str(data),
            "--admin", f"127.0.0.1:{admin_port}", "--target", f"127.0.0.1:{port}",
            "--metrics-url", f"http://127.0.0.1:{metrics_port}/metrics", "--state-dir", str(state),
            "--interval", "0.5", "--size", "quick", "--max-rows", str(3 * ROWS),
            "--drift-threshold", "3", "--accuracy-margin", "0.25", "--accuracy-min-outcomes", "20",
            "--min-outcomes", "20", "--margin", "1.0", "--alpha", "0.05",
            "--canary-weight", "50", "--canary-outcomes", "15",
            "--watch-seconds", "120", "--watch-outcomes", "20", "--watch-margin", "0.25"],
            env={**env, "DWCP_INFERENCE_LOG_LEVEL": "INFO"}, stdout=open(tmp_path / "controller.out", "w"),
            stderr=subprocess.STDOUT)
        procs.append(controller)
        traffic.start()

        # 1. traffic B: retrained, shadowed, promoted through the canary
        promoted = _wait_event(state, "promote", 150, procs=procs)
        challenger = promoted["challenger"]
        _until(admin_port, lambda m: m.labels["stable"] == challenger and _stages(m)[challenger] == "production")
        meta = json.loads((repo / "bandwidth_predictor" / challenger / "metadata.json").read_text())
        provenance = meta["training"]["provenance"]
        assert len(provenance["mlflow_run_id"]) == 32 and provenance["trigger"]
        assert sorted(provenance["files"]) == ["links-B0.csv", "links-B1.csv", "links-B2.csv"]

        # 2. traffic D: the promoted version degrades and is rolled back; other links' data arrives meanwhile
        seen = len(_events(state))
        export_feed(data, "C")
        traffic.kind = "D"
        rollback = _wait_event(state, "rollback", 90, after=seen, procs=procs)
        assert rollback["archived"] == promoted["champion"]
        _until(admin_port, lambda m: m.labels["stable"] == promoted["champion"] and _stages(m)[challenger] == "archived"
               and "canary" not in m.labels)

        # 3. traffic A: a challenger trained on the newest data (C) is worse live: rejected on the evidence
        seen = len(_events(state))
        traffic.kind = "A"
        rejected = _wait_event(state, "reject", 120, after=seen, procs=procs, reason="evidence")
        assert rejected["figures"]["p_worse"] < 0.05
        worse = rejected["challenger"]
        _until(admin_port, lambda m: m.labels["stable"] == promoted["champion"] and "candidate" not in m.labels
               and _stages(m)[worse] == "archived")

        traffic.stopping.set()
        traffic.join(15)
        print(f"\ncontinuous training timeline ({traffic.calls} calls, {traffic.failures} failed; answered by "
              f"{traffic.answered_by}):\n{_timeline(state, started)}")
        assert traffic.calls > 500
        assert traffic.failures == 0, traffic.errors[:5]
    finally:
        traffic.stopping.set()
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def _wait_serving(port: int) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not start serving within 60 s")


def _stages(m) -> dict[str, str]:
    return {v.version: v.stage for v in m.versions}


def _until(admin_port: int, ok, timeout: float = 10, model: str = "bandwidth_predictor") -> None:
    """Until the model's status satisfies `ok` (the controller's calls follow the event that announces them)."""
    end = time.monotonic() + timeout
    while not ok(m := _status(admin_port, model)):
        assert time.monotonic() < end, f"status not reached within {timeout} s: {m}"
        time.sleep(0.1)


def _status(admin_port: int, model: str = "bandwidth_predictor"):
    stub = apb_grpc.AdminServiceStub(grpc.insecure_channel(f"127.0.0.1:{admin_port}"))
    return stub.ListModels(apb.ListModelsRequest(model=model), timeout=10).models[0]
