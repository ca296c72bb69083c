"""`dwcp-inference evaluate`: a served model version, run through the server's own runtime (onnxruntime and
the metadata-driven features), on held-out data beside the baselines operators would use."""

from __future__ import annotations

import json
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np

from dwcp_inference.services import decisions
from dwcp_inference.services.repository import Repository
from dwcp_inference.training import bandwidth, compression, jobs, nab
from dwcp_inference.training.common import take
from dwcp_inference.training.data.csv_schema import DataError
from dwcp_inference.training.evaluation import table

BATCH = 1024


def evaluate(model: str, repository: Path, data: Path, fmt: str = "csv", *, version: str = "",
             interval_ms: int = 1000) -> dict[str, Any]:
    repo = Repository(repository)
    repo.load_all()
    rt = repo.get(jobs.NAMES[model], version)
    if model in ("reliability", "consensus") and fmt != "nab":
        raise DataError(f"evaluate {model} reads --format nab (figures on generated data are in the training "
                        "report, docs/default-models/report.md)")
    columns, _ = jobs.load(model, data, fmt, interval_ms)
    result: dict[str, Any] = {"model": rt.name, "version": rt.version, "data": str(data), "format": fmt}
    result.update({"bandwidth": _bandwidth, "compression": _compression, "reliability": _nab,
                   "consensus": _nab}[model](rt, columns))
    return result


def _bandwidth(rt: Any, columns: dict[str, np.ndarray]) -> dict[str, Any]:
    wins, nxt, split = bandwidth.make_windows(columns, rt.meta.window)
    rows = np.flatnonzero(split == 2)  # the last 15% of each link, as in training
    answers = [a for start in range(0, len(rows), BATCH)
               for a in decisions.bandwidth(rt, take(wins, rows[start:start + BATCH]))]
    pred = {"bandwidth_mbps": np.zeros(len(split)), "latency_ms": np.zeros(len(split)),
            "jitter_ms": np.zeros(len(split))}
    pred["bandwidth_mbps"][rows] = [a.bandwidth_mbps for a in answers]
    pred["latency_ms"][rows] = [a.latency_ms for a in answers]
    pred["jitter_ms"][rows] = [a.jitter_ms for a in answers]
    floor = bandwidth.outage_floor(wins, nxt)
    pred = {k: v[rows] for k, v in pred.items() if k == "bandwidth_mbps" or k in nxt}
    overall = bandwidth.bandwidth_table(nxt, wins, pred, rows, floor)
    per_link = {}
    for link in np.unique(nxt["link_id"][rows]):
        sel = nxt["link_id"][rows] == link
        t = bandwidth.bandwidth_table(nxt, wins, {k: v[sel] for k, v in pred.items()}, rows[sel], floor)
        per_link[str(link)] = {name: r["mape_pct"] for name, r in t.items()}
    ours, hm = overall["lstm (ours)"]["mape_pct"], overall["harmonic_mean_5"]["mape_pct"]
    target = {"goal": "MAPE at least 20% below the harmonic mean's", "reduction_pct": (1 - ours / hm) * 100,
              "met": ours <= 0.8 * hm}
    report = "\n\n".join([
        table(f"{rt.name} v{rt.version}: held-out (last 15% of each link, {len(rows)} windows; MAPE skips "
              f"outage intervals below {bandwidth.OUTAGE_FLOOR:.0%} of the link's median)", overall,
              [c for c in ("mape_pct", "rmse_mbps", "latency_ms_mape_pct", "jitter_ms_mape_pct")
               if any(c in r for r in overall.values())]),
        table("MAPE % per trace", {k: v for k, v in per_link.items()}, list(next(iter(per_link.values())))),
        f"target: {target['goal']}: {target['reduction_pct']:.1f}% below -> {'met' if target['met'] else 'MISSED'}"])
    return {"rows": overall, "per_link": per_link, "target": target, "report": report}


def _compression(rt: Any, columns: dict[str, np.ndarray]) -> dict[str, Any]:
    columns = compression.with_costs(columns)
    split = columns["split"] if "split" in columns else compression.split_by_payload(columns["chunk"], 0)
    rows = np.flatnonzero(split == 2)
    answers = [a for start in range(0, len(rows), BATCH)
               for a in decisions.compression(rt, take(columns, rows[start:start + BATCH]))]
    index = {(c["codec"], int(c["level"])): i for i, c in enumerate(compression.CHOICES)}
    picked = np.array([index[a.ranked[0][:2]] for a in answers])
    overall = compression.regret_table(columns, rows, picked)
    ours, z3 = overall["mlp (ours)"]["throughput_regret_pct"], overall["always zstd-3"]["throughput_regret_pct"]
    target = {"goal": "within 5% of the oracle's effective throughput and ahead of always-zstd-3",
              "regret_pct": ours, "met": ours <= 5.0 and ours < z3}
    report = "\n\n".join([
        table(f"{rt.name} v{rt.version}: held-out ({len(rows)} rows; regret = effective throughput lost against "
              "the oracle)", overall, ["accuracy", "throughput_regret_pct", "p95_regret_pct"]),
        f"target: {target['goal']}: regret {ours:.2f}% -> {'met' if target['met'] else 'MISSED'}"])
    return {"rows": overall, "target": target, "report": report}


def _nab(rt: Any, series: list) -> dict[str, Any]:
    """Window recall and false alarms on the version's held-out NAB files, beside the baselines."""
    if not rt.meta.raw_fields or rt.meta.raw_fields[0].name != nab.FIELD:
        raise DataError(f"{rt.name} v{rt.version} was not trained on NAB series (it reads "
                        f"{[f.name for f in rt.meta.raw_fields][:3]}..., not {nab.FIELD})")
    held = set(rt.meta.metrics.get("held_out_files") or [s.name for s in nab.split_files(series)[1]])
    test = [s for s in series if s.name in held]
    if not test:
        raise DataError(f"none of the version's held-out files is in the data: {sorted(held)}")
    if rt.name == "reliability_detector":
        decide, flagged = decisions.anomaly, attrgetter("is_anomaly")
    else:
        decide, flagged = decisions.high_latency, attrgetter("is_high_latency")
    flags = []
    for s in test:
        w = nab.windows_of(s, rt.meta.window)
        answers = [a for i in range(0, len(w), BATCH) for a in decide(rt, {nab.FIELD: w[i:i + BATCH]})]
        flags.append(np.array([flagged(a) for a in answers]))
    ours = f"{rt.name} v{rt.version} (ours)"
    rows, report = nab.comparison(rt.name, test, ours, flags, "held-out files, through the served runtime")
    failures = nab.beats_rolling(rows, ours)
    target = {"goal": "window recall above the rolling z-score's at equal or fewer false alarms",
              "met": not failures, "failures": failures}
    report += f"\n\ntarget: {target['goal']}: " + ("met" if not failures else "MISSED: " + "; ".join(failures))
    return {"rows": rows, "target": target, "report": report}


def main(args: Any) -> int:
    result = evaluate(args.model, args.repository, args.data, args.format, version=args.version,
                      interval_ms=args.interval_ms)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "report"}, indent=1, default=float))
    else:
        print(result["report"])
    return 0
