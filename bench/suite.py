"""`dwcp-inference bench`: our server beside the floors (and the peer), one server at a time, alternating, each
measured `--rounds` times; the table gives the median of the rounds and the ratios the performance targets are
stated in.

Servers: `dwcp` (ours, the bundled models), `dwcp-v2` (ours over the Open Inference Protocol: ModelInfer carrying
the same items, docs/v2.md), `floor-python` (a bare grpcio servicer returning canned responses of
our size), `floor-go` (grpc-go, empty replies, GOMAXPROCS=1), `inprocess` (the model's onnxruntime session called
directly: no RPC at all), and with `--peers` Seldon MLServer serving the same ONNX model (bench/peer.py).
ghz drives the load from its own core: with two or more cores, the server is pinned to core 0 and ghz to core 1.
Cases are RPCs with the form of their request (bench/requests.py: SelectCompression with a 4 KiB payload sample,
as the Go drop-in sends it, and with precomputed traits). From the same run: the fractions of the ideal
(`fractions`), the idle server's memory, and with --stages and --profile the stage table and the profile, all in
the JSON (`--json`), from which docs/performance.md is generated (bench/report.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
import numpy as np

from dwcp_inference.api import inference_pb2_grpc as pb_grpc

from . import ghz
from . import stages as stage_table
from .requests import BATCH_FORMS, CASES, cases, method, request, v2_request

HERE = Path(__file__).resolve().parent
BATCHES = (16, 64)
PEERS = {"mlserver-default": None, "mlserver-pw0": 0}  # MLServer's parallel_workers: its default, and 0
FIELDS = ("p50_us", "p99_us", "qps_c16", "qps_c64", "decisions_per_s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(core: int) -> tuple[str, ...]:
    return ("taskset", "-c", str(core)) if (os.cpu_count() or 1) >= 2 and shutil.which("taskset") else ()


def floor_go_binary() -> Path:
    """bench/floor-go built once (into the user cache: the Go module proxy is needed the first time)."""
    out = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dwcp-inference" / "floor-go"
    sources = sorted((HERE / "floor-go").glob("*"))
    if not out.exists() or out.stat().st_mtime < max(p.stat().st_mtime for p in sources):
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["go", "build", "-o", str(out), "."], cwd=HERE / "floor-go", check=True)
    return out


@contextmanager
def serving(server: str, workers: int = 1, serve_args: tuple[str, ...] = (),
            env_extra: dict[str, str] | None = None, cwd: str | None = None) -> Iterator[str]:
    """Start one server, wait until it answers, yield its address; stop it afterwards."""
    with serving_process(server, workers, serve_args, env_extra, cwd) as (target, _):
        yield target


@contextmanager
def serving_process(server: str, workers: int = 1, serve_args: tuple[str, ...] = (),
                    env_extra: dict[str, str] | None = None,
                    cwd: str | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """`serving`, yielding the server's process too (`serve_args` are added to ours, `env_extra` to its
    environment; `cwd`: its directory, first on its sys.path)."""
    port = free_port()
    env = {**os.environ, **(env_extra or {})}
    pin = pinned(0) if workers == 1 else ()
    if server in ("dwcp", "dwcp-v2"):
        # Admit every call ghz keeps in flight (the default bound, 32, would shed some at 64 in flight).
        cmd = [sys.executable, "-m", "dwcp_inference.commands.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--metrics-port", "-1", "--admin-port", "-1", "--poll-seconds", "0", "--max-concurrent-rpcs", "256",
               "--workers", str(workers), *serve_args]
    elif server == "floor-python":
        cmd = [sys.executable, "-m", "dwcp_inference.bench.floor_python", "--port", str(port)]
    elif server == "floor-go":
        cmd, env["GOMAXPROCS"] = [str(floor_go_binary()), "-addr", f"127.0.0.1:{port}"], "1"
    else:
        raise ValueError(server)
    proc = subprocess.Popen([*pin, *cmd], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    target = f"127.0.0.1:{port}"
    try:
        wait_ready(target, proc)
        yield target, proc
    finally:
        stop(proc)


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (MiB)."""
    total, pids = 0, [pid]
    while pids:
        p = pids.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            for task in Path(f"/proc/{p}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total / 1024


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (our servers drain), SIGKILL after 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_ready(target: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.InferenceServiceStub(ch)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
            try:
                stub.PredictBandwidth(request("PredictBandwidth"), timeout=2)
                return
            except grpc.RpcError:
                time.sleep(0.3)
    raise RuntimeError(f"{target} did not answer within {timeout:.0f} s")


# One ghz run against a started server: (items per call, calls in flight, seconds) -> ghz.run's result.
Runner = Callable[[int, int, float], dict[str, Any]]


def runner(target: str, case: str) -> Runner:
    """ghz against our API: `case`'s RPC, or its batch form for more than one item; ghz on core 1."""
    rpc = method(case)
    reqs: dict[int, Any] = {}

    def run(batch: int, concurrency: int, seconds: float) -> dict[str, Any]:
        if batch not in reqs:
            reqs[batch] = request(case, batch)
        return ghz.run(target, rpc if batch == 1 else BATCH_FORMS[rpc], reqs[batch], concurrency=concurrency,
                       seconds=seconds, extra=("--cpus", "1"), prefix=pinned(1))
    return run


@functools.cache
def v2_protoset() -> Path:
    """The vendored Open Inference Protocol (protos/inference/v2) as a descriptor set for ghz."""
    from grpc_tools import protoc  # dev extra

    out = Path(tempfile.gettempdir()) / "dwcp-inference-v2.protoset"
    if protoc.main(["protoc", f"-I{HERE.parent / 'protos'}", f"--descriptor_set_out={out}",
                    str(HERE.parent / "protos/inference/v2/grpc_predict_v2.proto")]):
        sys.exit("protoc failed")
    return out


def v2_runner(target: str, case: str) -> Runner:
    """ghz against our ModelInfer (V2), carrying the same items as `runner`'s typed requests."""
    reqs: dict[int, Any] = {}

    def run(batch: int, concurrency: int, seconds: float) -> dict[str, Any]:
        if batch not in reqs:
            reqs[batch] = v2_request(case, batch)
        return ghz.run(target, "", reqs[batch], concurrency=concurrency, seconds=seconds, extra=("--cpus", "1"),
                       prefix=pinned(1), call="inference.GRPCInferenceService/ModelInfer",
                       protoset_path=v2_protoset())
    return run


def measure_rpc(run: Runner, rpc: str, seconds: float, batches: tuple[int, ...]) -> list[dict[str, Any]]:
    """Rows for one RPC of one running server: batch 1 (sequential, 16 and 64 in flight), then its batch form."""
    run(1, 4, min(seconds, 1.0))  # warm-up
    seq, c16, c64 = run(1, 1, seconds), run(1, 16, seconds), run(1, 64, seconds)
    rows = [{"rpc": rpc, "batch": 1, "p50_us": seq["p50_us"], "p99_us": seq["p99_us"], "qps_c16": c16["ok_qps"],
             "qps_c64": c64["ok_qps"], "decisions_per_s": max(c16["ok_qps"], c64["ok_qps"]),
             "errors": _errors(seq, c16, c64)}]
    for b in batches:
        r = run(b, 16, seconds)
        rows.append({"rpc": rpc, "batch": b, "p50_us": r["p50_us"], "p99_us": r["p99_us"], "qps_c16": r["ok_qps"],
                     "qps_c64": None, "decisions_per_s": r["ok_qps"] * b, "errors": _errors(r)})
    return rows


def _errors(*runs: dict[str, Any]) -> dict[str, int]:
    """Failed calls by status (not counting those ghz cut off when its clock stopped)."""
    out: dict[str, int] = {}
    for r in runs:
        for status, n in r["statuses"].items():
            if status not in ("OK", ghz.CLOSING):
                out[status] = out.get(status, 0) + n
    return out


def measure_inprocess(rpc: str, seconds: float, batches: tuple[int, ...]) -> list[dict[str, Any]]:
    """The model alone: its onnxruntime session called on its ready inputs (features, or raw columns for a version
    holding its features in its graph), sequentially."""
    from .floor_python import _our_answers, model_input

    servicer = _our_answers()
    rows = []
    for b in (1, *batches):
        session, names, feed = model_input(servicer, rpc, b)
        run = session.run
        times = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            run(names, feed)
            times.append(time.perf_counter() - t)
        p50 = float(np.percentile(times, 50)) * 1e6
        rows.append({"rpc": rpc, "batch": b, "p50_us": p50, "p99_us": float(np.percentile(times, 99)) * 1e6,
                     "qps_c16": None, "qps_c64": None, "decisions_per_s": b / (p50 / 1e6), "errors": {}})
    return rows


def run_suite(servers: list[str], rpcs: list[str], *, seconds: float, rounds: int,
              batches: tuple[int, ...] = BATCHES, progress: bool = True,
              idle_rss: list[float] | None = None) -> list[dict[str, Any]]:
    """Every server measured `rounds` times, alternating; rows with the median of the rounds. `rpcs` are cases
    (bench/requests.py); each row's "rpc" is its case. Our server's resident memory once it has answered its first
    call, before the load, is appended to `idle_rss` (MiB) each round."""
    samples: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in range(rounds):
        for server in servers:
            started = time.monotonic()
            if server == "inprocess":
                rows = [row for rpc in rpcs for row in measure_inprocess(rpc, seconds, batches)]
            elif server in PEERS:
                from . import peer

                with peer.serving(rpcs, PEERS[server]) as target:
                    rows = [row for rpc in rpcs for row in measure_rpc(peer.runner(target, rpc), rpc, seconds,
                                                                       batches)]
            else:
                with serving_process(server) as (target, proc):
                    if server == "dwcp" and idle_rss is not None:
                        time.sleep(1)
                        idle_rss.append(rss_mib(proc.pid))
                    make = v2_runner if server == "dwcp-v2" else runner
                    rows = [row for rpc in rpcs for row in measure_rpc(make(target, rpc), rpc, seconds, batches)]
            for row in rows:
                samples.setdefault((server, row["rpc"], row["batch"]), []).append(row)
            if progress:
                print(f"[bench] round {r + 1}/{rounds}: {server} measured in {time.monotonic() - started:.0f} s",
                      file=sys.stderr, flush=True)
    out = []
    for (server, rpc, batch), runs in samples.items():
        row: dict[str, Any] = {"server": server, "rpc": rpc, "batch": batch}
        for f in FIELDS:
            values = [r[f] for r in runs if r[f] is not None]
            row[f] = statistics.median(values) if values else None
        row["errors"] = _merge(r["errors"] for r in runs)
        out.append(row)
    return out


def _merge(counts: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, n in c.items():
            out[k] = out.get(k, 0) + n
    return out


def workers_scan(counts: list[int], seconds: float) -> list[dict[str, Any]]:
    """`serve --workers N`, unpinned (the workers and ghz share the cores): PredictBandwidth QPS at 64 in flight,
    and decisions per second of its batch form at 64 items, 16 in flight."""
    rows = []
    for n in counts:
        with serving("dwcp", workers=n) as target:
            ghz.run(target, "PredictBandwidth", request("PredictBandwidth"), concurrency=8, seconds=1)
            r = ghz.run(target, "PredictBandwidth", request("PredictBandwidth"), concurrency=64, seconds=seconds,
                        extra=("--cpus", "1"))
            b = ghz.run(target, "PredictBandwidthBatch", request("PredictBandwidth", 64), concurrency=16,
                        seconds=seconds, extra=("--cpus", "1"))
        rows.append({"workers": n, "qps_c64": r["ok_qps"], "p99_us": r["p99_us"],
                     "batch64_decisions_per_s": b["ok_qps"] * 64})
    return rows


def _fmt(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    """The rows with ratios: p50 and QPS against the Python floor's for the same RPC and batch, and decisions
    per second against the calls per second the Go floor answers (its best of 16 and 64 in flight)."""
    index = {(r["server"], r["rpc"], r["batch"]): r for r in rows}
    go_best = {rpc: max(r["qps_c16"] or 0, r["qps_c64"] or 0) for (s, rpc, b), r in index.items()
               if s == "floor-go" and b == 1}
    lines = ["| server | rpc | batch | p50 µs | p99 µs | QPS 16 | QPS 64 | decisions/s | p50 / py floor | "
             "QPS 64 / py floor | decisions/s / go floor calls/s |", "|---" * 11 + "|"]
    for r in rows:
        floor = index.get(("floor-python", r["rpc"], r["batch"]))
        p50_ratio = r["p50_us"] / floor["p50_us"] if floor and floor["p50_us"] and r["p50_us"] else None
        qps_ratio = r["qps_c64"] / floor["qps_c64"] if floor and floor["qps_c64"] and r["qps_c64"] else None
        go = go_best.get(r["rpc"])
        lines.append(f"| {r['server']} | {r['rpc']} | {r['batch']} | {_fmt(r['p50_us'])} | {_fmt(r['p99_us'])} | "
                     f"{_fmt(r['qps_c16'])} | {_fmt(r['qps_c64'])} | {_fmt(r['decisions_per_s'])} | "
                     f"{_fmt(p50_ratio, 2)} | {_fmt(qps_ratio, 2)} | "
                     f"{_fmt(r['decisions_per_s'] / go if go else None, 2)} |")
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """The earlier targets for PredictBandwidth against the floors, as measured (only those whose rows were measured)."""
    index = {(r["server"], r["rpc"], r["batch"]): r for r in rows}
    ours, floor = index.get(("dwcp", "PredictBandwidth", 1)), index.get(("floor-python", "PredictBandwidth", 1))
    go, batch = index.get(("floor-go", "PredictBandwidth", 1)), index.get(("dwcp", "PredictBandwidth", 64))
    out = []
    if ours and floor:
        p = ours["p50_us"] / floor["p50_us"]
        q = ours["qps_c64"] / floor["qps_c64"]
        out.append(f"p50 sequential: {p:.2f}x the Python floor's (target <= 1.15): {'met' if p <= 1.15 else 'MISSED'}")
        out.append(f"QPS at 64 in flight: {q:.2f}x the Python floor's (target >= 0.9): "
                   f"{'met' if q >= 0.9 else 'MISSED'}")
    v2 = index.get(("dwcp-v2", "PredictBandwidth", 1))
    if ours and v2 and ours["qps_c64"] and v2["qps_c64"]:
        out.append(f"V2 (ModelInfer) over typed PredictBandwidth: QPS at 64 in flight "
                   f"{v2['qps_c64'] / ours['qps_c64']:.2f}x, p50 sequential {v2['p50_us'] / ours['p50_us']:.2f}x")
    if go and batch:
        best = max(go["qps_c16"], go["qps_c64"])
        d = batch["decisions_per_s"] / best
        out.append(f"batch 64: {batch['decisions_per_s']:,.0f} decisions/s, {d:.2f}x the calls/s of the empty "
                   f"grpc-go server ({best:,.0f}) (target >= 1): {'met' if d >= 1 else 'MISSED'}")
    return out


# Issue 17's targets: every fraction of the ideal at least this, every p50 at or under its ideal, PredictBandwidth
# QPS at 64 in flight this many times MLServer's best, the idle server's memory at most this.
FRACTION_TARGET, MLSERVER_TARGET, RSS_TARGET_MIB = 0.8, 2.5, 150.0
IDEAL_P50_SLACK_US = 50.0


def fractions(rows: list[dict[str, Any]], idle_rss_mib: float | None = None) -> dict[str, Any]:
    """Issue 17's fractions, from one run's rows. The ideal is what the bare grpcio floor and the model alone allow
    together: QPS at 64 in flight = 1 / (1/floor QPS@64 + 1/model-in-process decisions/s at batch 16); batch-64
    decisions/s = 1 / (1/floor batch-64 decisions/s + 1/model-in-process decisions/s at batch 64); p50 = floor p50
    + model-in-process p50 + 50 µs. A case whose rows are missing is left out."""
    index = {(r["server"], r["rpc"], r["batch"]): r for r in rows}
    per_case = []
    for case in dict.fromkeys(r["rpc"] for r in rows):
        ours1, ours64 = index.get(("dwcp", case, 1)), index.get(("dwcp", case, 64))
        floor1, floor64 = index.get(("floor-python", case, 1)), index.get(("floor-python", case, 64))
        model1, model16, model64 = (index.get(("inprocess", case, b)) for b in (1, 16, 64))
        if not all(r and r[k] for r, k in ((ours1, "qps_c64"), (ours1, "p50_us"), (floor1, "qps_c64"),
                                            (floor1, "p50_us"), (model1, "p50_us"), (model16, "decisions_per_s"))):
            continue  # not measured (or no call answered)
        ideal_qps = 1 / (1 / floor1["qps_c64"] + 1 / model16["decisions_per_s"])
        ideal_p50 = floor1["p50_us"] + model1["p50_us"] + IDEAL_P50_SLACK_US
        entry = {"case": case, "ideal_qps_c64": ideal_qps, "qps_c64_fraction": ours1["qps_c64"] / ideal_qps,
                 "ideal_p50_us": ideal_p50, "p50_over_ideal_us": ours1["p50_us"] - ideal_p50,
                 "ideal_batch64_decisions_per_s": None, "batch64_fraction": None}
        if ours64 and floor64 and model64 and ours64["decisions_per_s"] and floor64["decisions_per_s"]:
            ideal_b = 1 / (1 / floor64["decisions_per_s"] + 1 / model64["decisions_per_s"])
            entry.update(ideal_batch64_decisions_per_s=ideal_b,
                         batch64_fraction=ours64["decisions_per_s"] / ideal_b)
        per_case.append(entry)
    out: dict[str, Any] = {"cases": per_case, "idle_rss_mib": idle_rss_mib, "mlserver_best_qps_c64": None,
                           "predict_bandwidth_over_mlserver": None, "v2_predict_bandwidth_over_mlserver": None}
    peers = [r["qps_c64"] for (s, c, b), r in index.items()
             if s.startswith("mlserver") and c == "PredictBandwidth" and b == 1 and r["qps_c64"]]
    ours = index.get(("dwcp", "PredictBandwidth", 1))
    if peers and ours:
        out["mlserver_best_qps_c64"] = max(peers)
        out["predict_bandwidth_over_mlserver"] = ours["qps_c64"] / max(peers)
    ours_v2 = index.get(("dwcp-v2", "PredictBandwidth", 1))
    if peers and ours_v2 and ours_v2["qps_c64"]:  # like for like: both over V2's ModelInfer
        out["v2_predict_bandwidth_over_mlserver"] = ours_v2["qps_c64"] / max(peers)
    return out


def _verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def fractions_table(f: dict[str, Any], cores: int | None) -> str:
    """The fractions as Markdown: a row per case, then the MLServer and memory targets."""
    lines = [f"Fractions of the ideal ({cores} cores; targets: each fraction >= {FRACTION_TARGET}, p50 at or under "
             "its ideal)", "",
             "| case | QPS@64, fraction of ideal | batch 64, fraction of ideal | p50 over ideal | ideal QPS@64 | "
             "ideal batch-64 decisions/s | ideal p50 µs |", "|---" * 7 + "|"]
    for c in f["cases"]:
        over = c["p50_over_ideal_us"]
        lines.append(f"| {c['case']} | {c['qps_c64_fraction']:.2f} | {_fmt(c['batch64_fraction'], 2)} | "
                     f"{'+' if over > 0 else ''}{over:,.0f} µs | {c['ideal_qps_c64']:,.0f} | "
                     f"{_fmt(c['ideal_batch64_decisions_per_s'])} | {c['ideal_p50_us']:,.0f} |")
    lines.append("")
    if f["predict_bandwidth_over_mlserver"] is not None:
        r = f["predict_bandwidth_over_mlserver"]
        lines.append(f"PredictBandwidth QPS@64 over MLServer's best ({f['mlserver_best_qps_c64']:,.0f}): {r:.2f}x "
                     f"(target >= {MLSERVER_TARGET}x): {_verdict(r >= MLSERVER_TARGET)}")
    else:
        lines.append("PredictBandwidth QPS@64 over MLServer's best: not measured (run with --peers)")
    if f.get("v2_predict_bandwidth_over_mlserver") is not None:
        lines.append(f"like for like, both over V2's ModelInfer (ours carrying the raw fields, MLServer the model's "
                     f"ready inputs): {f['v2_predict_bandwidth_over_mlserver']:.2f}x MLServer's best")
    if f["idle_rss_mib"] is not None:
        lines.append(f"idle server RSS on the bundled models: {f['idle_rss_mib']:.0f} MiB "
                     f"(target <= {RSS_TARGET_MIB:.0f}): {_verdict(f['idle_rss_mib'] <= RSS_TARGET_MIB)}")
    return "\n".join(lines)


def measured_commit() -> dict[str, Any]:
    """The commit measured, and whether the working tree differed from it (then `dirty` lists the changed files)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True).stdout

    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line]
    subject = git("log", "-1", "--format=%s").strip()
    return {"commit": git("rev-parse", "HEAD").strip() or None,
            "subject": (subject[:100] + " ...") if len(subject) > 100 else subject or None, "dirty": changed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dwcp-inference bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="dwcp,dwcp-v2,floor-python,floor-go,inprocess",
                        help="comma-separated, from dwcp, dwcp-v2, floor-python, floor-go, inprocess "
                             "(default %(default)s)")
    parser.add_argument("--peers", action="store_true", help="also Seldon MLServer, defaults and "
                        "parallel_workers=0 (installs bench/mlserver-peer/requirements.txt into its own venv)")
    parser.add_argument("--rpcs", default="PredictBandwidth",
                        help=f"comma-separated cases or RPCs (an RPC: all its forms), or all: {', '.join(CASES)}")
    parser.add_argument("--seconds", type=float, default=3.0, help="per ghz run (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="measurements of each server (default %(default)s)")
    parser.add_argument("--workers", default="", help="also scan `serve --workers N`, e.g. 1,2")
    parser.add_argument("--stages", action="store_true", help="also the stage table (bench/stages.py) of the cases")
    parser.add_argument("--profile", action="store_true",
                        help="also py-spy profiles of PredictBandwidth, batch 1 and 64 (bench/profile.py)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON ('-': stdout)")
    args = parser.parse_args(argv)
    servers = [s for s in args.servers.split(",") if s]
    try:
        rpcs = cases(args.rpcs)
    except ValueError as e:
        parser.error(f"--rpcs: {e}")
    if args.peers:
        servers += list(PEERS)
    started, commit = time.time(), measured_commit()  # the tree as the run starts
    idle: list[float] = []
    rows = run_suite(servers, rpcs, seconds=args.seconds, rounds=args.rounds, idle_rss=idle)
    scan = workers_scan([int(n) for n in args.workers.split(",")], args.seconds) if args.workers else []
    frac = fractions(rows, statistics.median(idle) if idle else None)
    result: dict[str, Any] = {
        **commit, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "cores": os.cpu_count(), "command": "dwcp-inference bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "rounds": args.rounds, "seconds": args.seconds,
        "rows": [{k: v for k, v in r.items() if k != "errors"} for r in rows],
        "errors": {f"{r['server']} {r['rpc']} x{r['batch']}": r["errors"] for r in rows if r["errors"]},
        "fractions": frac}
    if scan:
        result["workers"] = scan
    if args.stages:
        result["stages"] = stage_table.measure(rpcs)
    if args.profile:
        from . import profile as profiler  # it imports this module

        result["profiles"] = [profiler.record("PredictBandwidth", b, profiler.profile("PredictBandwidth", b, 15, 16),
                                              16) for b in (1, 64)]
    if args.json:
        text = json.dumps(result, indent=1)
        print(text) if str(args.json) == "-" else args.json.write_text(text + "\n")
    print(f"{os.cpu_count()} cores; median of {args.rounds} rounds; ghz on its own core; {args.seconds:g} s per run")
    print(table(rows))
    if result["errors"]:
        print(f"calls that failed, by status: {result['errors']}")
    for line in targets(rows):
        print(line)
    print()
    print(fractions_table(frac, os.cpu_count()))
    for s in scan:
        print(f"serve --workers {s['workers']}: {s['qps_c64']:,.0f} QPS at 64 in flight (p99 {_fmt(s['p99_us'])} µs); "
              f"batch of 64: {s['batch64_decisions_per_s']:,.0f} decisions/s")
    if args.stages:
        print()
        print(stage_table.table(result["stages"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
