"""`dwcp-inference bench`: our server beside the floors (and the peer), one server at a time, alternating, each
measured `--rounds` times; the table gives the median of the rounds and the ratios the performance targets are
stated in.

Servers: `dwcp` (ours, the bundled models), `floor-python` (a bare grpcio servicer returning canned responses of
our size), `floor-go` (grpc-go, empty replies, GOMAXPROCS=1), `inprocess` (the model's onnxruntime session called
directly: no RPC at all), and with `--peers` Seldon MLServer serving the same ONNX model (bench/peer.py).
ghz drives the load from its own core: with two or more cores, the server is pinned to core 0 and ghz to core 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
import numpy as np

from dwcp_inference.api import inference_pb2_grpc as pb_grpc

from . import ghz
from .requests import BATCH_FORMS, RPCS, request

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
def serving(server: str, workers: int = 1) -> Iterator[str]:
    """Start one server, wait until it answers, yield its address; stop it afterwards."""
    port = free_port()
    env = dict(os.environ)
    pin = pinned(0) if workers == 1 else ()
    if server == "dwcp":
        # Admit every call ghz keeps in flight (the default bound, 32, would shed some at 64 in flight).
        cmd = [sys.executable, "-m", "dwcp_inference.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--metrics-port", "-1", "--admin-port", "-1", "--poll-seconds", "0", "--max-concurrent-rpcs", "256",
               "--workers", str(workers)]
    elif server == "floor-python":
        cmd = [sys.executable, "-m", "dwcp_inference.bench.floor_python", "--port", str(port)]
    elif server == "floor-go":
        cmd, env["GOMAXPROCS"] = [str(floor_go_binary()), "-addr", f"127.0.0.1:{port}"], "1"
    else:
        raise ValueError(server)
    proc = subprocess.Popen([*pin, *cmd], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    target = f"127.0.0.1:{port}"
    try:
        wait_ready(target, proc)
        yield target
    finally:
        stop(proc)


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


def runner(target: str, rpc: str) -> Runner:
    """ghz against our API: `rpc`, or its batch form for more than one item; ghz on core 1."""
    def run(batch: int, concurrency: int, seconds: float) -> dict[str, Any]:
        method = rpc if batch == 1 else BATCH_FORMS[rpc]
        return ghz.run(target, method, request(rpc, batch), concurrency=concurrency, seconds=seconds,
                       extra=("--cpus", "1"), prefix=pinned(1))
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
    """The model alone: its onnxruntime session called on ready features, sequentially."""
    from .floor_python import _our_answers, model_input

    servicer = _our_answers()
    rows = []
    for b in (1, *batches):
        rt, x = model_input(servicer, rpc, b)
        run = rt.run
        times = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - t)
        p50 = float(np.percentile(times, 50)) * 1e6
        rows.append({"rpc": rpc, "batch": b, "p50_us": p50, "p99_us": float(np.percentile(times, 99)) * 1e6,
                     "qps_c16": None, "qps_c64": None, "decisions_per_s": b / (p50 / 1e6), "errors": {}})
    return rows


def run_suite(servers: list[str], rpcs: list[str], *, seconds: float, rounds: int,
              batches: tuple[int, ...] = BATCHES, progress: bool = True) -> list[dict[str, Any]]:
    """Every server measured `rounds` times, alternating; rows with the median of the rounds."""
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
                with serving(server) as target:
                    rows = [row for rpc in rpcs for row in measure_rpc(runner(target, rpc), rpc, seconds, batches)]
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
    """The issue's targets for PredictBandwidth, as measured (only those whose rows were measured)."""
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
    if go and batch:
        best = max(go["qps_c16"], go["qps_c64"])
        d = batch["decisions_per_s"] / best
        out.append(f"batch 64: {batch['decisions_per_s']:,.0f} decisions/s, {d:.2f}x the calls/s of the empty "
                   f"grpc-go server ({best:,.0f}) (target >= 1): {'met' if d >= 1 else 'MISSED'}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dwcp-inference bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="dwcp,floor-python,floor-go,inprocess",
                        help="comma-separated, from dwcp, floor-python, floor-go, inprocess (default %(default)s)")
    parser.add_argument("--peers", action="store_true", help="also Seldon MLServer, defaults and "
                        "parallel_workers=0 (installs bench/mlserver-peer/requirements.txt into its own venv)")
    parser.add_argument("--rpcs", default="PredictBandwidth", help=f"comma-separated, or all: {', '.join(RPCS)}")
    parser.add_argument("--seconds", type=float, default=3.0, help="per ghz run (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="measurements of each server (default %(default)s)")
    parser.add_argument("--workers", default="", help="also scan `serve --workers N`, e.g. 1,2")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the rows as JSON ('-': stdout)")
    args = parser.parse_args(argv)
    servers = [s for s in args.servers.split(",") if s]
    rpcs = list(RPCS) if args.rpcs == "all" else args.rpcs.split(",")
    for r in rpcs:
        if r not in RPCS:
            parser.error(f"--rpcs: unknown {r!r}, expected some of {list(RPCS)}")
    if args.peers:
        servers += list(PEERS)
    rows = run_suite(servers, rpcs, seconds=args.seconds, rounds=args.rounds)
    scan = workers_scan([int(n) for n in args.workers.split(",")], args.seconds) if args.workers else []
    result = {"cores": os.cpu_count(), "rows": [{k: v for k, v in r.items() if k != "errors"} for r in rows]}
    if scan:
        result["workers"] = scan
    if args.json:
        text = json.dumps(result, indent=1)
        print(text) if str(args.json) == "-" else args.json.write_text(text + "\n")
    print(f"{os.cpu_count()} cores; median of {args.rounds} rounds; ghz on its own core; {args.seconds:g} s per run")
    print(table(rows))
    errors = {f"{r['server']} {r['rpc']} x{r['batch']}": r["errors"] for r in rows if r["errors"]}
    if errors:
        print(f"calls that failed, by status: {errors}")
    for line in targets(rows):
        print(line)
    for s in scan:
        print(f"serve --workers {s['workers']}: {s['qps_c64']:,.0f} QPS at 64 in flight (p99 {_fmt(s['p99_us'])} µs); "
              f"batch of 64: {s['batch64_decisions_per_s']:,.0f} decisions/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
