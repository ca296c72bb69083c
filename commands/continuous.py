"""`dwcp-inference continuous`: the continuous-training controller of one model (docs/continuous-training.md).

Beside the server (or as a Kubernetes Deployment), never inside it: it talks to the server through its admin API
(labels, split, stages, the shadow's statistics), its metrics endpoint (drift, non-finite outputs, latency) and
its health service, reads the data directory and the repository, and trains through `dwcp-inference train`: a
subprocess that the following checks poll, so watching and judging go on while it runs (one at a time).

Each check (every `--interval` seconds, or once with `--once`):

    idle ──trigger──▶ train a challenger (the champion's recipe, the newest data; MLflow run) ──gate──▶ publish,
      ▲               stage staging (label candidate: the server shadows it)                        │
      │                                                                                             ▼
      ├──reject (the evidence, or the canary)── shadow ──promote (paired test)──▶ canary (split) ──▶ stable
      └──rollback (live accuracy, non-finite outputs, latency, drift)── watch ◀─────────────────────────┘

Every step is an event: a log line (logger dwcp_inference.continuous), a JSON line in <state-dir>/events.jsonl, a
metric when --metrics-port is set; the server's audit trail records each admin call. `--dry-run` says what it
would do and changes nothing. `continuous --pause` (a flag file the controller honours) stops it; a stable version
an operator pinned (`models load`) is never moved away from.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .cli_common import ConfigError, SHORT, model_name, add_tls_flags, open_channel
from .ct_data import DataFeed
from .ct_evidence import EvidenceConfig, judge
from .ct_triggers import FIGURES, Fired, Observation, TriggerConfig, Triggers, accuracy_worse, held_out_figure

log = logging.getLogger("dwcp_inference.continuous")
PAUSED = "paused"
EVIDENCE_EVERY = 5.0  # seconds between two events saying the evidence is not decisive yet


@dataclass
class ControllerConfig:
    interval: float = 30.0
    max_rows: int = 500_000          # the newest files holding at most this many rows are trained on
    canary_weight: float = 10.0      # the challenger's share of default traffic during the canary (percent)
    canary_outcomes: int = 30        # outcomes on the canary before it may become stable
    canary_margin: float = 0.10      # the canary's live figure may be worse than the champion's by this (relative)
    watch_seconds: float = 600.0     # how long a promoted version is watched for a rollback
    watch_margin: float = 0.25       # rollback: live figure worse than its held-out by this (relative)...
    watch_outcomes: int = 30         # ... over at least this many outcomes since the promotion
    watch_latency_p99: float = 0.0   # rollback: p99 latency (seconds) above this since the promotion; 0: off
    watch_drift: float = 0.0         # rollback: drift above this (RMS) for drift_checks checks; 0: off
    size: str = ""                   # the recipe's size (quick, full); "": the champion's
    train_timeout_seconds: float = 3600.0  # a training running longer is ended (its run FAILED); 0: no limit


# ---------------------------------------------------------------------------------------------- the server


def addresses(target: str) -> list[str]:
    """Every IPv4 address a HOST:PORT names (a headless Service: every ready pod), else the target itself."""
    import socket

    host, _, port = target.rpartition(":")
    try:
        found = sorted({a[4][0] for a in socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)})
    except (OSError, ValueError):
        return [target]
    return [f"{ip}:{port}" for ip in found] if len(found) > 1 else [target]


class Server:
    """The servers as the controller sees them: admin API, metrics endpoint, health. With several replicas (a name
    that resolves to several addresses), each replica's figures are read and combined (outcomes, live figures
    weighted by their outcomes, the shadow's sufficient statistics exactly); changes go to one replica, and the
    others read them from the shared state directory."""

    def __init__(self, args: argparse.Namespace):
        from dwcp_inference.api import admin_pb2_grpc as apb_grpc

        self.stubs = [apb_grpc.AdminServiceStub(open_channel(a, args)) for a in addresses(args.admin)]
        self.stub = self.stubs[0]
        self.auth = [("authorization", f"Bearer {args.token}")] if args.token else []
        self.metrics_url = args.metrics_url
        self.target = args.target
        self.args = args

    def status(self, model: str) -> Any:
        from dwcp_inference.api import admin_pb2 as apb

        replies = [s.ListModels(apb.ListModelsRequest(model=model), timeout=10, metadata=self.auth).models[0]
                   for s in self.stubs]
        return replies[0] if len(replies) == 1 else combine(replies)

    def call(self, rpc: str, **kw: Any) -> Any:
        from dwcp_inference.api import admin_pb2 as apb

        request = {"Promote": apb.PromoteRequest, "SetSplit": apb.SetSplitRequest, "Rollback": apb.RollbackRequest,
                   "SetStage": apb.SetStageRequest, "RemoveLabel": apb.RemoveLabelRequest}[rpc](**kw)
        return getattr(self.stub, rpc)(request, timeout=120, metadata=self.auth)

    def healthy(self) -> bool:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        if not self.target:
            return True
        with open_channel(self.target, self.args) as ch:
            try:
                r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            except grpc.RpcError:
                return False
        return r.status == health_pb2.HealthCheckResponse.SERVING

    def scrape(self, model: str) -> dict[str, Any]:
        """From /metrics: per version, drift per feature, non-finite outputs, latency histogram buckets."""
        from prometheus_client.parser import text_string_to_metric_families

        out: dict[str, Any] = {"drift": {}, "nonfinite": {}, "buckets": {}}
        if not self.metrics_url:
            return out
        scheme, _, rest = self.metrics_url.partition("://")
        hostport, _, path = rest.partition("/")
        for address in addresses(hostport if ":" in hostport else hostport + ":80"):
            with urllib.request.urlopen(f"{scheme}://{address}/{path}", timeout=10) as r:  # noqa: S310
                text = r.read().decode()
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    if s.labels.get("model") != model:
                        continue
                    v = s.labels.get("version", "")
                    if s.name == "dwcp_inference_input_drift_rms":  # the worst replica's
                        d = out["drift"].setdefault(v, {})
                        d[s.labels["feature"]] = max(d.get(s.labels["feature"], 0.0), s.value)
                    elif s.name == "dwcp_inference_nonfinite_outputs_total":
                        out["nonfinite"][v] = out["nonfinite"].get(v, 0.0) + s.value
                    elif s.name == "dwcp_inference_request_duration_seconds_bucket":
                        b = out["buckets"].setdefault(v, {})
                        le = float(s.labels["le"])
                        b[le] = b.get(le, 0.0) + s.value  # summed over RPCs and replicas
        return out


def combine(replies: list[Any]) -> Any:
    """One ModelStatus from several replicas': the first one's labels and versions, outcomes summed, live figures
    weighted by outcomes, the shadow's pairings merged exactly (Chan et al.'s parallel variance)."""
    out = type(replies[0])()
    out.CopyFrom(replies[0])
    for v in out.versions:
        rows = [r for reply in replies for r in reply.versions if r.version == v.version]
        total = sum(r.outcomes for r in rows)
        v.outcomes = total
        for key in list(v.live_accuracy):
            weighted = [(r.live_accuracy[key], r.outcomes) for r in rows if key in r.live_accuracy and r.outcomes]
            if weighted:
                v.live_accuracy[key] = sum(x * n for x, n in weighted) / sum(n for _, n in weighted)
    merged: dict[tuple[str, str], Any] = {}
    for reply in replies:
        for c in reply.shadow:
            key = (c.candidate, c.champion)
            if key not in merged:
                merged[key] = type(c)()
                merged[key].CopyFrom(c)
                continue
            m = merged[key]
            n = m.outcomes + c.outcomes
            if n:
                delta = c.mean_difference - m.mean_difference
                m2 = (m.variance_difference * max(m.outcomes - 1, 0) + c.variance_difference * max(c.outcomes - 1, 0)
                      + delta * delta * m.outcomes * c.outcomes / n)
                m.mean_difference += delta * c.outcomes / n
                m.variance_difference = m2 / (n - 1) if n > 1 else 0.0
            m.outcomes = n
            for name in ("both_right", "only_champion_right", "only_candidate_right", "both_wrong", "shadowed",
                         "skipped", "failed", "unmatched"):
                setattr(m, name, getattr(m, name) + getattr(c, name))
    del out.shadow[:]
    out.shadow.extend(merged.values())
    return out


def p99(now: dict[float, float], before: dict[float, float]) -> float | None:
    """The 99th percentile's bucket bound of the calls between two cumulative histograms (None: no calls)."""
    delta = sorted((le, now.get(le, 0) - before.get(le, 0)) for le in now)
    total = delta[-1][1] if delta else 0
    if total <= 0:
        return None
    return next(le for le, c in delta if c >= 0.99 * total)


# ---------------------------------------------------------------------------------------------- the controller


@dataclass
class Training:
    """A `train` subprocess in flight and what its challenger is made of."""

    proc: subprocess.Popen
    run_dir: Path
    files: list[Any]
    fingerprint: str
    trigger: str
    champion: str
    run_id: str
    recipe: dict[str, Any]
    started: float = field(default_factory=time.monotonic)
    busy_said: bool = False
    done_said: bool = False

    def seconds(self) -> float:
        return time.monotonic() - self.started

    def stop(self) -> None:
        """End it and its workers (their own process group)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


class Controller:
    def __init__(self, args: argparse.Namespace, triggers: TriggerConfig, evidence: EvidenceConfig,
                 config: ControllerConfig, server: Any = None):
        self.args = args
        self.model = args.model
        self.config = config
        self.evidence = evidence
        self.dry = args.dry_run
        self.state_dir = Path(args.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file = self.state_dir / f"controller-{self.model}.json"
        self.state: dict[str, Any] = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        self.state.setdefault("phase", "idle")
        self.feed = DataFeed(args.data, self.model, self.state.get("files"))
        self.triggers = Triggers(self.model, triggers, self.state.get("triggers"))
        self.server = server or Server(args)
        self.repository = Path(args.repository)
        self.tracker = None
        self.metrics = _ControllerMetrics(args.metrics_port) if args.metrics_port >= 0 else None
        self._paused_said = False
        self.training: Training | None = None  # the training in flight (a `train` subprocess), if any

    # ------------------------------------------------------------------ events and state

    def event(self, kind: str, message: str, **evidence: Any) -> None:
        line = {"time": round(time.time(), 3), "model": self.model, "event": kind, "message": message,
                "phase": self.state["phase"], **({"dry_run": True} if self.dry else {}), **evidence}
        log.info("%s%s %s: %s", "[dry-run] " if self.dry else "", self.model, kind, message,
                 extra={"audit": True, "continuous": line})
        with open(self.state_dir / "events.jsonl", "a") as f:
            f.write(json.dumps(line, default=str) + "\n")
        if self.metrics:
            self.metrics.event(self.model, kind)
        if self.dry:
            print(f"[dry-run] {kind}: {message}", flush=True)
        elif kind in ("canary", "promote", "reject", "rollback") and (evidence.get("run_id") or
                                                                      self.state.get("run_id")):
            tracker = self._tracker()  # the challenger's run says what became of it
            if tracker:
                tracker.client.set_tag(evidence.get("run_id") or self.state["run_id"], "live_decision",
                                       f"{kind}: {message}"[:5000])

    def save(self) -> None:
        if self.dry:
            return
        self.state["files"] = self.feed.state()
        self.state["triggers"] = self.triggers.state()
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.state_file)

    def phase(self, name: str, **extra: Any) -> None:
        self.state["phase"] = name
        self.state.update(extra)
        if self.metrics:
            self.metrics.phase(self.model, name)

    def act(self, rpc: str, **kw: Any) -> Any:
        """A mutating admin call (dry-run: only said)."""
        if self.dry:
            print(f"[dry-run] would call {rpc}({', '.join(f'{k}={v!r}' for k, v in kw.items())})", flush=True)
            return None
        return self.server.call(rpc, model=self.model, **kw)

    # ------------------------------------------------------------------ one check

    def check(self) -> str:
        """One pass: returns the phase it leaves the model in."""
        if (self.state_dir / PAUSED).exists():
            if not self._paused_said:
                self.event("paused", f"{self.state_dir / PAUSED} exists: doing nothing until `continuous --resume`")
                self._paused_said = True
            self._end_overdue_training()  # a paused controller publishes nothing, but a hung training still ends
            return self.state["phase"]
        self._paused_said = False
        if not self.server.healthy():
            self.event("unreachable", f"{self.args.target} is not SERVING: nothing decided this check")
            return self.state["phase"]
        status = self.server.status(self.model)
        scraped = self.server.scrape(self.model)
        new = self.feed.scan()
        for f in new:
            if f.refused:
                self.event("data_refused", f"{f.name}: {f.refused}", file=f.name)
            else:
                self.state["new_rows"] = self.state.get("new_rows", 0) + f.rows
                self.event("data", f"{f.name}: {f.rows} rows", file=f.name, rows=f.rows, sha256=f.sha256)
        champion = self._champion(status)
        if champion is None:
            self.event("no_champion", "no version serves this model: nothing to compare with")
        else:
            phase = self.state["phase"]
            getattr(self, f"_{phase}")(status, champion, scraped)
            if self.training:
                self._collect_training(champion)
        self.save()
        return self.state["phase"]

    def _champion(self, status: Any) -> str | None:
        stable = status.labels.get("stable")
        if stable:
            return stable
        serving = next((v.version for v in status.versions if v.state == "serving"), None)
        if serving is not None:  # adopt it: a challenger published later must not answer by itself
            self.event("adopt", f"version {serving} serves without a stable label: labelling it stable",
                       version=serving)
            self.act("Promote", label="stable", version=serving)
            self.act("SetStage", version=serving, stage="production")
        return serving

    def _version(self, status: Any, version: str) -> Any:
        return next((v for v in status.versions if v.version == version), None)

    def _held_out(self, version: str) -> float | None:
        try:
            meta = json.loads((self.repository / self.model / version / "metadata.json").read_text())
        except (OSError, ValueError):
            return None
        return held_out_figure(self.model, meta.get("metrics", {}))

    def _pinned(self, status: Any, champion: str) -> bool:
        if champion in status.pinned:
            self.event("held", f"stable version {champion} is pinned by an operator: labels are left alone",
                       version=champion)
            return True
        return False

    # ------------------------------------------------------------------ idle: triggers

    def _idle(self, status: Any, champion: str, scraped: dict[str, Any]) -> None:
        self._maybe_train(status, champion, scraped)

    def _maybe_train(self, status: Any, champion: str, scraped: dict[str, Any]) -> None:
        """The triggers, on the champion (idle) or on the promoted version (watch): one may start a training."""
        v = self._version(status, champion)
        obs = Observation(now=time.time(), drift=scraped["drift"].get(champion, {}),
                          live=dict(v.live_accuracy) if v else {}, outcomes=v.outcomes if v else 0,
                          held_out=self._held_out(champion), new_rows=self.state.get("new_rows", 0),
                          last_trained=self.state.get("last_trained"))
        fired = self.triggers.check(obs)
        if fired and self.training:  # one training at a time: said once per training
            if not self.training.busy_said:
                self.training.busy_said = True
                self.event("busy", f"{', '.join(f.trigger for f in fired)} fired while training run "
                                   f"{self.training.run_dir.name} runs: no second training",
                           triggers=[f.trigger for f in fired], pid=self.training.proc.pid)
            return
        for f in fired:
            self.event("trigger", f"{f.trigger}: {f.message}", trigger=f.trigger, evidence=f.evidence,
                       champion=champion)
        if fired:
            self._train(status, champion, fired)

    def _train(self, status: Any, champion: str, fired: list[Fired]) -> None:
        """Start a `train` subprocess on the newest data; the following checks poll it (_collect_training)."""
        files = self.feed.newest(self.config.max_rows)
        if not files:
            self.event("no_data", f"no accepted data in {self.args.data}: cannot train")
            return
        recipe = self._recipe(champion)
        fingerprint = DataFeed.fingerprint(files)
        if fingerprint == self.state.get("last_fingerprint") and {f.trigger for f in fired} != {"schedule"}:
            if self.state.get("said_same_data") != fingerprint:
                self.state["said_same_data"] = fingerprint
                self.event("no_new_data", "the newest data is what the last challenger was trained on: waiting "
                                          "for new files", data_fingerprint=fingerprint)
            return
        if self.dry:
            self.event("would_train", f"would train a challenger on {len(files)} files "
                                      f"({sum(f.rows for f in files)} rows) with {recipe}", recipe=recipe)
            return
        run_dir = self.state_dir / "runs" / time.strftime("%Y%m%dT%H%M%S")
        run_dir.mkdir(parents=True, exist_ok=True)
        data = run_dir / "data.csv"
        rows = self.feed.merge(files, data)
        trigger = "+".join(f.trigger for f in fired)
        tracker = self._tracker()
        run_id = tracker.start(self.model, {**recipe, "rows": rows, "files": len(files),
                                            "data_fingerprint": fingerprint, "champion": champion,
                                            "trigger": trigger},
                               {"trigger": trigger, "champion": champion}) if tracker else ""
        self.state["last_trained"] = time.time()
        self.state["new_rows"] = 0
        cmd = [_train_command(), "train", SHORT[self.model], "--data", str(data), "--format", "csv",
               "--out", str(run_dir / "repo"), "--seed", str(recipe["seed"]), "--report", str(run_dir / "report")]
        if recipe["size"] == "quick":
            cmd.append("--quick")
        with open(run_dir / "train.log", "w") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.training = Training(proc, run_dir, files, fingerprint, trigger, champion, run_id, recipe)
        self.event("train", f"training a challenger on {len(files)} files ({rows} rows), recipe {recipe}",
                   run=run_dir.name, run_id=run_id, data_fingerprint=fingerprint, recipe=recipe, pid=proc.pid,
                   timeout_seconds=self.config.train_timeout_seconds)

    def _end_overdue_training(self) -> bool:
        """End a training running past train_timeout_seconds (event, run FAILED); True if it did."""
        t, limit = self.training, self.config.train_timeout_seconds
        if t is None or not limit or t.proc.poll() is not None or t.seconds() <= limit:
            return False
        t.stop()
        self.training = None
        self._training_failed(t, "train_timeout", f"training ran past {self.config.train_timeout_seconds:g} s: "
                                                  "ended")
        return True

    def _collect_training(self, champion: str) -> None:
        """Once the training in flight has ended: publish its challenger (when idle, so a watch is never cut
        short) or report why there is none."""
        t = self.training
        if self._end_overdue_training() or t.proc.poll() is None:
            return
        code = t.proc.returncode
        built = sorted((t.run_dir / "repo" / self.model).glob("[0-9]*"), key=lambda p: int(p.name)) \
            if code == 0 else []
        if not built:
            self.training = None
            if code in (2, 3):  # the data or the gate refused it: training again on the same data is pointless
                self.state["last_fingerprint"] = t.fingerprint
                why = {3: "the offline gate held it back (missed targets or lost to a baseline)",
                       2: "train refused the data"}[code]
                return self._training_failed(t, "offline_gate", why, "gate_failed")
            return self._training_failed(t, "train_failed", f"train exited {code}")
        if self.state["phase"] != "idle":
            if not t.done_said:
                t.done_said = True
                self.event("trained", f"training run {t.run_dir.name} finished; its challenger is published when "
                                      f"the {self.state['phase']} phase ends", run_id=t.run_id)
            return
        self.training = None
        self.state["last_fingerprint"] = t.fingerprint
        self._publish(t, built[-1], champion)

    def _training_failed(self, t: Training, reason: str, why: str, result: str = "failed") -> None:
        tail = (t.run_dir / "train.log").read_text(errors="replace")[-400:].strip().splitlines()[-1:] or [""]
        tracker = self._tracker()
        if tracker:
            tracker.finish(t.run_id, {"seconds": t.seconds()}, [t.run_dir / "train.log", t.run_dir / "report"],
                           "FAILED", {"result": result})
        self.event("reject", f"challenger not published: {why}: {tail[0]}", reason=reason, run_id=t.run_id,
                   seconds=round(t.seconds(), 1), exit_code=t.proc.returncode, log_tail=tail[0])

    def _publish(self, t: Training, built: Path, champion: str) -> None:
        seconds = round(t.seconds(), 1)
        tracker = self._tracker()
        meta_path = built / "metadata.json"
        meta = json.loads(meta_path.read_text())
        meta["training"]["provenance"] = {"mlflow_run_id": t.run_id, "tracking_uri": tracker.uri if tracker else "",
                                          "trigger": t.trigger, "champion": t.champion,
                                          "data_fingerprint": t.fingerprint, "files": [f.name for f in t.files],
                                          "recipe": t.recipe}
        meta_path.write_text(json.dumps(meta, indent=1))
        version = publish_version(built, self.repository / self.model)
        held = held_out_figure(self.model, meta.get("metrics", {}))
        if tracker:
            from .ct_tracking import held_out_metrics

            tracker.finish(t.run_id, {**held_out_metrics(meta.get("metrics", {})), "seconds": seconds},
                           [t.run_dir / "train.log", t.run_dir / "report",
                            self.repository / self.model / version / "metadata.json"], "FINISHED",
                           {"version": version, "result": "published"})
        self.event("published", f"challenger version {version} published (held-out {FIGURES[self.model][1]} "
                                f"{held if held is None else round(held, 3)}) in {seconds} s",
                   version=version, run_id=t.run_id, held_out=held, seconds=seconds)
        self.act("SetStage", version=version, stage="staging")
        self.phase("shadow", challenger=version, champion=champion, since=time.time(), run_id=t.run_id)
        self.event("shadow", f"version {version} is the candidate: the server shadows it beside {champion}",
                   version=version, champion=champion)

    def stop_training(self) -> None:
        """End the training in flight (the controller is stopping)."""
        if self.training:
            self.training.stop()
            self.training = None

    def _recipe(self, champion: str) -> dict[str, Any]:
        """The champion's recipe: what the controller recorded when it trained it, else its metadata's seed and
        the size its data source names."""
        try:
            training = json.loads((self.repository / self.model / champion / "metadata.json").read_text())["training"]
        except (OSError, ValueError, KeyError):
            training = {}
        recipe = dict((training.get("provenance") or {}).get("recipe") or {})
        recipe.setdefault("seed", int(training.get("seed", 0)))
        recipe.setdefault("size", "quick" if str(training.get("data_source", "")).endswith(":quick") else "full")
        if self.config.size:
            recipe["size"] = self.config.size
        return recipe

    def _tracker(self) -> Any:
        if self.tracker is None and self.args.tracking_uri != "off":
            from .ct_tracking import Tracker, default_uri

            self.tracker = Tracker(self.args.tracking_uri or default_uri(self.state_dir), self.state_dir / "mlruns")
        return self.tracker

    # ------------------------------------------------------------------ shadow: the evidence

    def _shadow(self, status: Any, champion: str, scraped: dict[str, Any]) -> None:
        challenger = self.state["challenger"]
        if self._version(status, challenger) is None:
            self.event("reject", f"challenger {challenger} is not loaded (refused or removed)", reason="not_loaded")
            return self.phase("idle")
        if champion != self.state["champion"]:  # an operator moved stable: the evidence starts again against it
            self.event("champion_changed", f"stable is now {champion} (was {self.state['champion']}): comparing "
                                           f"{challenger} with it", champion=champion)
            self.state["champion"] = champion
        stats = next((asdict_msg(c) for c in status.shadow if c.candidate == challenger and c.champion == champion),
                     {"outcomes": 0})
        verdict = judge(self.model, stats, self.evidence)
        if verdict.decision == "wait":
            if time.time() - self.state.get("evidence_said", 0) >= EVIDENCE_EVERY:  # not every check
                self.state["evidence_said"] = time.time()
                self.event("evidence", verdict.reason, figures=verdict.figures)
            return
        if verdict.decision == "reject":
            self.event("reject", f"challenger {challenger} rejected: {verdict.reason}", reason="evidence",
                       figures=verdict.figures, challenger=challenger, champion=champion)
            self.act("SetStage", version=challenger, stage="archived")
            return self.phase("idle")
        if self._pinned(status, champion):
            return
        self.event("canary", f"challenger {challenger} beats {champion}: {verdict.reason}; canary at "
                             f"{self.config.canary_weight:g}% of default traffic", figures=verdict.figures,
                   challenger=challenger, champion=champion)
        self.act("Promote", label="canary", version=challenger)
        self.act("SetSplit", weights={"stable": 100 - self.config.canary_weight,
                                      "canary": self.config.canary_weight})
        # the canary's own outcomes are counted from the next check, once the split answers (shadowed calls' late
        # outcomes count for the challenger too until then)
        self.phase("canary", since=time.time(), canary_start_outcomes=None, canary_start_nonfinite=None)

    # ------------------------------------------------------------------ canary

    def _canary(self, status: Any, champion: str, scraped: dict[str, Any]) -> None:
        challenger = self.state["challenger"]
        live_key, _, lower_better = FIGURES[self.model]
        cv, pv = self._version(status, challenger), self._version(status, champion)
        if cv is None:
            self.event("reject", f"canary {challenger} is no longer loaded", reason="not_loaded")
            self.act("SetSplit", weights={})
            return self.phase("idle")
        if self.state["canary_start_outcomes"] is None:
            self.state.update(canary_start_outcomes=cv.outcomes,
                              canary_start_nonfinite=scraped["nonfinite"].get(challenger, 0.0))
            return
        nonfinite = scraped["nonfinite"].get(challenger, 0.0) - self.state["canary_start_nonfinite"]
        seen = cv.outcomes - self.state["canary_start_outcomes"]
        ours, theirs = cv.live_accuracy.get(live_key), pv.live_accuracy.get(live_key) if pv else None
        figures = {"outcomes": seen, "canary": ours, "champion": theirs, "nonfinite": nonfinite}
        worse = ours is not None and theirs is not None and (
            ours > theirs * (1 + self.config.canary_margin) if lower_better
            else ours < theirs * (1 - self.config.canary_margin))
        if nonfinite > 0 or (seen >= self.config.canary_outcomes and worse):
            self.event("reject", f"canary {challenger} failed: " + (f"{nonfinite:g} non-finite outputs" if nonfinite
                       else f"live {live_key} {ours:.3g} vs the champion's {theirs:.3g}"), reason="canary",
                       figures=figures)
            self.act("SetSplit", weights={})
            self.act("SetStage", version=challenger, stage="archived")
            return self.phase("idle")
        if seen < self.config.canary_outcomes or self._pinned(status, champion):
            return
        self.event("promote", f"canary {challenger} holds up over {seen} outcomes (live {live_key} "
                              f"{_g(ours)} vs the champion's {_g(theirs)}): stable", figures=figures,
                   challenger=challenger, champion=champion)
        self.act("Promote", label="stable", version=challenger)
        self.act("SetSplit", weights={})
        self.act("RemoveLabel", label="canary")  # stable names it now; a stale canary would route pinned callers
        self.act("SetStage", version=challenger, stage="production")
        self.act("SetStage", version=champion, stage="archived")
        self.phase("watch", since=time.time(), promoted=challenger, archived=champion, watch_start_outcomes=None,
                   watch_drift_streak=0)  # counted from the next check, once stable answers

    # ------------------------------------------------------------------ watch: rollback

    def _watch(self, status: Any, champion: str, scraped: dict[str, Any]) -> None:
        promoted, archived = self.state["promoted"], self.state["archived"]
        if champion != promoted:  # someone moved the label meanwhile
            self.event("watch_end", f"stable is {champion}, not {promoted}: watch ended")
            return self.phase("idle")
        v = self._version(status, promoted)
        if self.state["watch_start_outcomes"] is None:
            self.state.update(watch_start_outcomes=v.outcomes if v else 0,
                              watch_start_nonfinite=scraped["nonfinite"].get(promoted, 0.0),
                              watch_start_buckets=scraped["buckets"].get(promoted, {}))
            return
        reasons = []
        nonfinite = scraped["nonfinite"].get(promoted, 0.0) - self.state["watch_start_nonfinite"]
        if nonfinite > 0:
            reasons.append(f"{nonfinite:g} non-finite outputs")
        seen = (v.outcomes if v else 0) - self.state["watch_start_outcomes"]
        worse = accuracy_worse(self.model, dict(v.live_accuracy) if v else {}, seen, self._held_out(promoted),
                               self.config.watch_margin, self.config.watch_outcomes)
        if worse:
            (name, value), = worse["live"].items()
            reasons.append(f"live {name} {value:g} worse than its held-out {worse['held_out']:g} by more than "
                           f"{self.config.watch_margin:.0%} over {seen} outcomes since the promotion")
        if self.config.watch_latency_p99 > 0:
            q = p99(scraped["buckets"].get(promoted, {}),
                    {float(k): x for k, x in self.state["watch_start_buckets"].items()})
            if q is not None and q > self.config.watch_latency_p99:
                reasons.append(f"p99 latency {q:g} s > {self.config.watch_latency_p99:g} s")
        if self.config.watch_drift > 0:
            drift = max(scraped["drift"].get(promoted, {}).values(), default=0.0)
            self.state["watch_drift_streak"] = self.state["watch_drift_streak"] + 1 \
                if drift > self.config.watch_drift else 0
            if self.state["watch_drift_streak"] >= self.triggers.config.drift_checks:
                reasons.append(f"input drift {drift:.2f} > {self.config.watch_drift:g}")
        if reasons:
            if self._pinned(status, champion):
                return
            self.event("rollback", f"version {promoted} rolled back to {archived}: {'; '.join(reasons)}",
                       promoted=promoted, archived=archived, evidence=worse or {}, nonfinite=nonfinite,
                       training=self.training.run_dir.name if self.training else None)
            self.act("Rollback", label="stable")
            self.act("SetStage", version=archived, stage="production")
            self.act("SetStage", version=promoted, stage="archived")
            return self.phase("idle")
        if time.time() - self.state["since"] >= self.config.watch_seconds:
            self.event("watch_end", f"version {promoted} held up for {self.config.watch_seconds:g} s")
            return self.phase("idle")
        self._maybe_train(status, champion, scraped)


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def asdict_msg(message: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    d = MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return {k: (int(v) if isinstance(v, str) and v.lstrip("-").isdigit() else v) for k, v in d.items()}


def publish_version(built: Path, model_dir: Path) -> str:
    """Copy a version directory into the repository under the next version number, as export/publish.py does
    (a staging directory the server ignores, then one rename); returns the version."""
    import tempfile

    from dwcp_inference.export.publish import next_version

    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    try:
        for f in built.iterdir():
            shutil.copyfile(f, staging / f.name)
        while True:
            version = str(next_version(model_dir))
            meta = json.loads((staging / "metadata.json").read_text())
            meta["version"] = version
            (staging / "metadata.json").write_text(json.dumps(meta, indent=1))
            for f in staging.iterdir():
                os.chmod(f, 0o644)
            os.chmod(staging, 0o755)
            try:
                os.rename(staging, model_dir / version)
                return version
            except OSError:
                if not (model_dir / version).exists():
                    raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _train_command() -> str:
    beside = Path(sys.executable).parent / "dwcp-inference"
    return str(beside) if beside.exists() else (shutil.which("dwcp-inference") or "dwcp-inference")


class _ControllerMetrics:
    def __init__(self, port: int):
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        self.registry = CollectorRegistry()
        self.events = Counter("dwcp_inference_continuous_events_total",
                              "Continuous-training events: trigger, train, published, reject, canary, promote, "
                              "rollback, ...", ["model", "event"], registry=self.registry)
        self.phases = Gauge("dwcp_inference_continuous_phase", "1 for the phase the controller is in.",
                            ["model", "phase"], registry=self.registry)
        start_http_server(port, registry=self.registry)

    def event(self, model: str, kind: str) -> None:
        self.events.labels(model, kind).inc()

    def phase(self, model: str, name: str) -> None:
        for p in ("idle", "shadow", "canary", "watch"):
            self.phases.labels(model, p).set(1 if p == name else 0)


# ---------------------------------------------------------------------------------------------- the command

SECTIONS = (TriggerConfig, EvidenceConfig, ControllerConfig)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("continuous", help="continuous training: triggers retrain a challenger, the server "
                                          "shadows it, evidence promotes or rolls back (docs/continuous-training.md)",
                       description=__doc__.split("\n\n")[0] + " Every tuning flag may also come from --config "
                                   "(TOML or JSON, keys as the flags with underscores); a flag wins.")
    p.add_argument("--model", type=model_name, default="bandwidth_predictor", help="default %(default)s")
    p.add_argument("--repository", type=Path, help="the server's model repository, where challengers are published (default: none; required to run)")
    p.add_argument("--admin", default="127.0.0.1:50052", metavar="HOST:PORT", help="admin API (default %(default)s)")
    p.add_argument("--target", default="127.0.0.1:50051", metavar="HOST:PORT",
                   help="inference address, for its health (default %(default)s; '' skips the check)")
    p.add_argument("--metrics-url", default="http://127.0.0.1:9464/metrics",
                   help="the server's /metrics (drift, non-finite outputs, latency; default %(default)s)")
    p.add_argument("--token", default=os.environ.get("DWCP_INFERENCE_ADMIN_TOKEN", ""),
                   help="admin bearer token (default: $DWCP_INFERENCE_ADMIN_TOKEN)")
    p.add_argument("--data", type=Path, help="directory of CSV files that grows, our schema or DWCP's export (default: none; required to run)")
    p.add_argument("--state-dir", type=Path, default=Path("continuous-state"),
                   help="the controller's state, events.jsonl, runs and MLflow store (default %(default)s)")
    p.add_argument("--tracking-uri", default="", help="MLflow tracking URI (default: sqlite in --state-dir; "
                                                      "'off': no tracking)")
    p.add_argument("--config", type=Path, help="TOML or JSON file of tuning settings (default: none)")
    p.add_argument("--metrics-port", type=int, default=-1, help="serve the controller's own metrics (default off)")
    p.add_argument("--once", action="store_true", help="one check, then exit (a CronJob)")
    p.add_argument("--dry-run", action="store_true", help="say what it would do; change nothing")
    p.add_argument("--pause", action="store_true", help="stop the controller of --state-dir (it keeps running, "
                                                        "doing nothing) and exit")
    p.add_argument("--resume", action="store_true", help="let it act again and exit")
    add_tls_flags(p)
    for section in SECTIONS:
        g = p.add_argument_group(section.__name__)
        for f in fields(section):
            default = f.default
            g.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=type(default), default=None,
                           metavar=f.name.upper(), help=f"default {default!r}")


def _configs(args: argparse.Namespace) -> tuple[TriggerConfig, EvidenceConfig, ControllerConfig]:
    file: dict[str, Any] = {}
    if args.config:
        try:
            text = args.config.read_text()
            file = json.loads(text) if args.config.suffix == ".json" else tomllib.loads(text)
        except (OSError, ValueError) as e:
            raise ConfigError(f"--config {args.config}: {e}") from None
    known = {f.name for s in SECTIONS for f in fields(s)}
    unknown = sorted(set(file) - known)
    if unknown:
        raise ConfigError(f"--config {args.config}: unknown settings {unknown}, expected some of {sorted(known)}")
    out = []
    for section in SECTIONS:
        values = {}
        for f in fields(section):
            value = getattr(args, f.name)
            value = file.get(f.name, f.default) if value is None else value
            if not isinstance(value, type(f.default)) and not (isinstance(f.default, float)
                                                               and isinstance(value, int)):
                raise ConfigError(f"{f.name}: expected a {type(f.default).__name__}, got {value!r}")
            if isinstance(value, (int, float)) and value < 0:
                raise ConfigError(f"{f.name}: expected a number >= 0, got {value!r}")
            values[f.name] = type(f.default)(value)
        out.append(section(**values))
    return out[0], out[1], out[2]


def run(args: argparse.Namespace) -> int:
    if args.pause or args.resume:
        args.state_dir.mkdir(parents=True, exist_ok=True)
        flag = args.state_dir / PAUSED
        if args.pause:
            flag.write_text(f"paused at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
        else:
            flag.unlink(missing_ok=True)
        print(f"continuous training of {args.state_dir}: {'paused' if args.pause else 'resumed'}")
        return 0
    for name in ("repository", "data"):
        if getattr(args, name) is None:
            raise ConfigError(f"--{name}: required")
        if not getattr(args, name).is_dir():
            raise ConfigError(f"--{name} {getattr(args, name)}: not a directory")
    triggers, evidence, config = _configs(args)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    controller = Controller(args, triggers, evidence, config)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` ends a training in flight
    try:
        while True:
            try:
                controller.check()
            except Exception as e:  # noqa: BLE001 - a failed check is reported; the next one tries again
                import grpc

                if args.once or not isinstance(e, (grpc.RpcError, OSError, subprocess.SubprocessError)):
                    raise
                controller.event("error", f"check failed: {e}")
            if args.once and not controller.training:
                return 0
            time.sleep(1.0 if args.once else config.interval)  # --once: checks until its training is collected
    finally:
        controller.stop_training()
