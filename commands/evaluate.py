"""`dwcp-inference evaluate`: a served model version, run through the server's own runtime (onnxruntime and
the metadata-driven features), on held-out data beside the baselines operators would use."""

from __future__ import annotations

import json
import sys
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np

from dwcp_inference.services import decisions
from dwcp_inference.services.repository import Repository
from dwcp_inference.features import FeatureError, decode_targets
from dwcp_inference.training import bandwidth, bandwidth_quantile, bandwidth_scoring, compression, jobs, nab
from dwcp_inference.training.common import take
from dwcp_inference.training.data.csv_schema import DataError
from dwcp_inference.training.evaluation import mape, table

BATCH = 1024


def evaluate(model: str, repository: Path, data: Path, fmt: str = "csv", *, version: str = "",
             interval_ms: int = 1000, all_data: bool = False) -> dict[str, Any]:
    repo = Repository(repository)
    repo.load_all()
    rt = repo.get(jobs.NAMES[model], version)
    if model in ("reliability", "consensus") and fmt not in jobs.SERIES_FORMATS:
        raise DataError(f"evaluate {model} reads --format nab or labelled (figures on generated data are in the "
                        "training report, docs/default-models/report.md)")
    columns, _ = jobs.load(model, data, fmt, interval_ms)
    result: dict[str, Any] = {"model": rt.name, "version": rt.version, "data": str(data), "format": fmt}
    if model in ("reliability", "consensus"):
        result.update(_nab(rt, columns, all_data))
        return result
    missing = [f.name for f in rt.meta.raw_fields if f.name not in columns]
    if missing and model == "bandwidth":
        raise DataError(f"{missing[0]}: missing from the data ({fmt}), and {rt.name} v{rt.version} reads it "
                        f"(it reads {', '.join(f.name for f in rt.meta.raw_fields)})")
    result.update({"bandwidth": _bandwidth, "compression": _compression}[model](rt, columns, all_data))
    return result


def _bandwidth(rt: Any, columns: dict[str, np.ndarray], every_window: bool = False) -> dict[str, Any]:
    """MAPE of the served forecast and of the baselines, with bootstrap intervals: on the split training held out
    (the last 15% of each link for an LSTM version; the links training did not use for a version validated on
    held-out links), or with `every_window` on every window of the data (data the version never saw)."""
    wins, nxt, split = bandwidth.make_windows(columns, rt.meta.window)
    links = nxt["link_id"].astype(str)
    # a trace is seen when training used it or the other direction of its drive (NAME.up, NAME.down: recorded
    # together, so not independent; training validates on whole drives too)
    drives = {bandwidth_quantile.drive_of(link) for link in rt.meta.training.get("links") or []}
    seen_rows = np.isin(links, [link for link in set(links) if bandwidth_quantile.drive_of(link) in drives])
    by_links = rt.meta.decision.get("forecaster") == bandwidth_quantile.KIND
    if every_window:
        seen = sorted(set(links[seen_rows]))
        if seen:
            raise DataError(f"{len(seen)} trace(s) of the data were used in training {rt.name} v{rt.version}, or "
                            f"share a drive with one that was, so they are not held out: {seen[:3]}")
        rows, what = np.arange(len(links)), "every window held out"
    elif by_links:
        rows, what = np.flatnonzero(~seen_rows), "the traces training did not use (nor their drives)"
        if not rows.size:
            raise DataError(f"every trace of the data was used in training {rt.name} v{rt.version}: evaluate it "
                            "with --all on traces it never saw")
    else:
        rows, what = np.flatnonzero(split == 2), "the last 15% of each link, as in training"
    if not rows.size:
        raise DataError(f"no link of the data has more than {rt.meta.window} samples (the version's window)")
    held = take(wins, rows)
    answers = [a for start in range(0, len(rows), BATCH)
               for a in decisions.bandwidth(rt, take(held, slice(start, start + BATCH)))]
    point = np.array([a.bandwidth_mbps for a in answers])
    quantiles = None
    if any(t.name.startswith("bandwidth_mbps_p") for t in rt.meta.targets):  # the outputs the answer leaves out
        parts = [decode_targets(rt.meta.targets, next(iter(rt.infer(take(held, slice(i, i + BATCH)))[1].values())))
                 for i in range(0, len(rows), BATCH)]
        quantiles = {t.name: np.concatenate([p[t.name] for p in parts])
                     for t in rt.meta.targets if t.name.startswith("bandwidth_mbps_p")}
    ours = f"{'mlp' if by_links else 'lstm'} (ours)"
    floor = bandwidth.outage_floor(wins, nxt)[rows]
    result = bandwidth_scoring.score(
        nxt["bandwidth_mbps"][rows], wins["bandwidth_mbps"][rows], links[rows], point, floor, ours=ours,
        quantiles=quantiles,
        title=f"{rt.name} v{rt.version}: {what} ({len(rows)} windows over {len(np.unique(links[rows]))} traces; "
              f"MAPE skips outage intervals below {bandwidth.OUTAGE_FLOOR:.0%} of the trace's median)")
    if answers and answers[0].p10_mbps is not None:  # a served interval: its calibration checked live
        result["interval"] = _interval_check(rt, nxt["bandwidth_mbps"][rows], answers, result.get("ci95", {}))
        result["report"] += "\n\n" + result["interval"]["report"]
    for name, field in (("latency_ms", "latency_ms"), ("jitter_ms", "jitter_ms")):  # versions that forecast them
        if field in nxt and any(t.name == field for t in rt.meta.targets):
            y = nxt[field][rows]
            result["rows"][ours][f"{name}_mape_pct"] = mape(y, np.array([getattr(a, name) for a in answers]))
            result["rows"]["last_value"][f"{name}_mape_pct"] = mape(y, wins[field][rows, -1])
    return result


def _interval_check(rt: Any, y: np.ndarray, answers: list, ci: dict[str, Any]) -> dict[str, Any]:
    """The served interval [p10, p90] and confidence against the actuals: the share inside and below p10, live,
    beside what the version states (its confidence: the share inside on links training held out; below p10: its
    validation figure, nominally 10%)."""
    lo, hi = np.array([a.p10_mbps for a in answers]), np.array([a.p90_mbps for a in answers])
    confidence = float(np.mean([a.confidence for a in answers]))
    stated = (rt.meta.metrics.get("validation") or {}).get(bandwidth_quantile.OURS, {})
    rows = {"inside [p10, p90] %": {"stated": confidence * 100, "live": float(np.mean((y >= lo) & (y <= hi)) * 100)},
            "below p10 %": {"stated": stated.get("below_p10_pct", 10.0), "live": float(np.mean(y < lo) * 100)}}
    for name, key in (("inside [p10, p90] %", "actual inside [p10, p90] %"), ("below p10 %", "actual below p10 %")):
        rows[name]["live_ci95"] = (f"{ci[key]['ci95_low']:.1f}-{ci[key]['ci95_high']:.1f}" if key in ci else "-")
        rows[name]["live_minus_stated"] = rows[name]["live"] - rows[name]["stated"]
    report = table(f"{rt.name} v{rt.version}: the served interval, live ({len(y)} windows) beside the version's "
                   f"stated figures (its confidence {confidence:.3f} is the held-out share inside [p10, p90]; below "
                   "p10: its validation share, nominally 10%)", rows,
                   ["stated", "live", "live_ci95", "live_minus_stated"])
    return {"rows": rows, "confidence": confidence, "report": report}


def _compression(rt: Any, columns: dict[str, np.ndarray], every_row: bool = False) -> dict[str, Any]:
    columns = compression.with_costs(columns)
    split = columns["split"] if "split" in columns else compression.split_by_payload(columns["chunk"], 0)
    rows = np.arange(len(split)) if every_row else np.flatnonzero(split == 2)
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


def _nab(rt: Any, series: list, every_file: bool = False) -> dict[str, Any]:
    """Window recall, false alarms and NAB's standard score on the version's held-out NAB files (every file of
    the data with `every_file`: data the version never saw), beside the baselines, with bootstrap intervals."""
    if not rt.meta.raw_fields or rt.meta.raw_fields[0].name != nab.FIELD:
        raise DataError(f"{rt.name} v{rt.version} was not trained on NAB series (it reads "
                        f"{[f.name for f in rt.meta.raw_fields][:3]}..., not {nab.FIELD})")
    held = set(rt.meta.metrics.get("held_out_files") or [s.name for s in nab.split_files(series)[1]])
    test = sorted(series, key=lambda s: s.name) if every_file else [s for s in series if s.name in held]
    if not test:
        raise DataError(f"none of the version's held-out files is in the data: {sorted(held)} (--all judges "
                        "every file of the data)")
    trained = {nab.file_of(name) for name in rt.meta.training.get("files") or []}
    seen = sorted({nab.file_of(s.name) for s in test if nab.file_of(s.name) in trained})
    if seen:
        raise DataError(f"{len(seen)} file(s) of the data (matched by their path under --data) were used in "
                        f"training {rt.name} v{rt.version}, so they are not held out: {seen[:3]}")
    nab.check_lengths(test)
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
    what = "every file held out" if every_file else "held-out files"
    rows, report, target = nab.comparison(rt.name, test, ours, flags, f"{what}, through the served runtime")
    return {"rows": rows, "target": target, "report": report, "files": [s.name for s in test]}


def main(args: Any) -> int:
    try:
        result = evaluate(args.model, args.repository, args.data, args.format, version=args.version,
                          interval_ms=args.interval_ms, all_data=getattr(args, "all", False))
    except (DataError, FeatureError) as e:  # the data, not the program: one line naming the field, exit 2
        print(f"dwcp-inference evaluate: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "report"}, indent=1, default=float))
    else:
        print(result["report"])
    return 0
