"""Loaders for the real data sets in ../shared/data (see its README): mahimahi cellular traces, labelled NAB
server metrics, and a payload corpus; and metric series labelled per row (an operator's own, or public sets such as
the AIOps Challenge KPIs), made into NAB series. Each returns columns in the documented schema of the model it
feeds."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .csv_schema import DataError, load_csv

PACKET_BITS = 1500 * 8
TRACE_START = np.datetime64("2026-01-05T00:00:00")  # traces have no wall-clock time; this anchors them


def _files(path: Path, pattern: str) -> list[Path]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    files = sorted(p for p in path.glob(pattern) if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: no {pattern} files")
    return files


def mahimahi_throughput(path: Path, interval_ms: int = 1000) -> np.ndarray:
    """A mahimahi trace (one line per 1500-byte delivery opportunity, in ms since start) as throughput in Mbit/s
    per interval."""
    try:
        t = np.loadtxt(path, dtype=np.int64, ndmin=1)
    except ValueError as e:
        raise DataError(f"{path}: not a mahimahi trace (one integer millisecond per line): {e}") from None
    if t.size == 0:
        raise DataError(f"{path}: empty trace")
    if np.any(t < 0) or np.any(np.diff(t) < 0):
        raise DataError(f"{path}: times must be non-negative and non-decreasing")
    counts = np.bincount(t // interval_ms, minlength=int(t[-1] // interval_ms) + 1)
    return counts * PACKET_BITS / (interval_ms / 1000.0) / 1e6


def mahimahi_columns(path: Path, interval_ms: int = 1000) -> dict[str, np.ndarray]:
    """Every trace under `path` (or the one file) as bandwidth samples, one link per trace."""
    cols: dict[str, list[np.ndarray]] = {"link_id": [], "timestamp": [], "bandwidth_mbps": []}
    for f in _files(path, "*"):
        bw = mahimahi_throughput(f, interval_ms)
        cols["link_id"].append(np.full(bw.size, f.name))
        cols["timestamp"].append(TRACE_START + (np.arange(bw.size) * interval_ms).astype("timedelta64[ms]"))
        cols["bandwidth_mbps"].append(bw)
    return {k: np.concatenate(v) for k, v in cols.items()}


@dataclass
class NabSeries:
    name: str
    timestamp: np.ndarray   # datetime64[s]
    value: np.ndarray
    in_window: np.ndarray   # bool per row: inside a labelled anomaly window
    windows: list[tuple[np.datetime64, np.datetime64]]


NAB_SPACING = np.timedelta64(300, "s")  # the detectors are built for 5-minute intervals (a day is 288 values)
NAB_REGULAR_SHARE = 0.9  # at least this share of a file's gaps must be NAB_SPACING


def nab_series(path: Path) -> list[NabSeries]:
    """The NAB CSVs under `path` with their anomaly windows from combined_windows.json (searched in `path`
    and its parents). Refused, naming the file: a CSV with no entry in the labels ([] for a series without
    anomalies), and one whose rows are not 5 minutes apart."""
    path = Path(path)
    labels_file = next((d / "combined_windows.json" for d in (path, *path.parents)
                        if (d / "combined_windows.json").is_file()), None)
    if labels_file is None:
        raise DataError(f"{path}: no combined_windows.json beside or above it")
    labels = json.loads(labels_file.read_text())
    files = _files(path, "**/*.csv")
    keys = [f.relative_to(labels_file.parent).as_posix() for f in files]
    unlisted = [f for f, key in zip(files, keys) if key not in labels]
    if unlisted:
        raise DataError(f"{unlisted[0]}: no entry in {labels_file} ({len(unlisted)} of {len(files)} CSV files "
                        "have none; list each file's anomaly windows there, [] for a series without anomalies)")
    return [_nab_file(f, key, labels[key]) for f, key in zip(files, keys)]


def _nab_file(f: Path, key: str, spans: list) -> NabSeries:
    raw = np.genfromtxt(f, delimiter=",", names=True, dtype=None, encoding="utf-8", ndmin=1)
    missing = [c for c in ("timestamp", "value") if c not in (raw.dtype.names or ())]
    if missing:
        raise DataError(f"{f}: no column {missing[0]} (a NAB file has the header timestamp,value)")
    try:
        ts = np.array(raw["timestamp"], dtype="datetime64[s]")
        value = np.asarray(raw["value"], dtype=np.float64)
    except ValueError as e:
        raise DataError(f"{f}: not a NAB series (timestamp as YYYY-MM-DD HH:MM:SS, value a number): {e}") from None
    bad = ~np.isfinite(value)
    if bad.any():
        raise DataError(f"{f}: row {int(np.flatnonzero(bad)[0]) + 2}, column value: not a finite number")
    _check_spacing(f, ts)
    windows = [(np.datetime64(a[:19], "s"), np.datetime64(b[:19], "s")) for a, b in spans]
    in_window = np.zeros(len(ts), dtype=bool)
    for a, b in windows:
        in_window |= (ts >= a) & (ts <= b)
    return NabSeries(key, ts, value, in_window, windows)


def _check_spacing(f: Path, ts: np.ndarray) -> None:
    """Refuse a series not at the 5-minute cadence: the detectors count a day as 288 rows."""
    gaps = np.diff(ts)
    regular = np.mean(gaps == NAB_SPACING) if gaps.size else 1.0
    if regular < NAB_REGULAR_SHARE:
        median = np.median(gaps.astype(np.int64)) / 60
        raise DataError(f"{f}: rows {median:g} minutes apart (median), {regular:.0%} of them "
                        "5 minutes apart; the NAB detectors are built for 5-minute intervals (resample the series)")


STEP_SECONDS = 300  # labelled series are resampled to the detectors' 5-minute intervals
FILL_GAP = 3  # at most this many missing intervals in a row are filled by linear interpolation (not anomalous)
MIN_STRETCH = 7 * 288  # a stretch between longer gaps is kept when it has at least a week of intervals
WINDOW_SHARE = 0.10  # NAB's labelling: a file's windows take 10% of its rows, shared evenly by its anomalies


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def labelled_series(path: Path, note: Callable[[str], None] = _to_stderr) -> list[NabSeries]:
    """Metric series labelled per row (CSVs `timestamp,value,is_anomaly` under `path`, or one file) as NAB series,
    by one fixed rule: resampled to 5 minutes (the mean of an interval's rows; an interval is anomalous when any
    of its rows is), gaps of at most FILL_GAP intervals filled by linear interpolation, a longer gap cutting the
    series into stretches (`NAME part K`; a stretch shorter than MIN_STRETCH is dropped, with a line to `note`),
    and each run of anomalous intervals given NAB's window (labelled_windows). Refused, naming the file: rows
    further apart than 5 minutes (slower data is not made up into intervals), a file with no usable stretch."""
    path = Path(path)
    root = path if path.is_dir() else path.parent
    out = []
    for f in _files(path, "**/*.csv"):
        key = f.relative_to(root).as_posix()
        out.extend(_stretches(key, load_csv(f, "labelled_series"), note))
    return out


def _stretches(key: str, columns: dict[str, np.ndarray], note: Callable[[str], None]) -> list[NabSeries]:
    t = columns["timestamp"].astype("datetime64[s]").astype(np.int64)
    times = np.unique(t)
    spacing = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    if spacing > STEP_SECONDS:
        raise DataError(f"{key}: rows {spacing / 60:g} minutes apart (median); the detectors judge 5-minute "
                        "intervals, made from rows at most that far apart (times are ISO 8601 or epoch seconds)")
    buckets, inverse = np.unique(t // STEP_SECONDS, return_inverse=True)
    rows = np.bincount(inverse)
    mean = np.bincount(inverse, columns["value"]) / rows
    anomalous = np.bincount(inverse, columns["is_anomaly"]) > 0
    parts = np.split(np.arange(len(buckets)), np.flatnonzero(np.diff(buckets) > FILL_GAP + 1) + 1)
    kept = [p for p in parts if buckets[p[-1]] - buckets[p[0]] + 1 >= MIN_STRETCH]
    if not kept:
        longest = max(buckets[p[-1]] - buckets[p[0]] + 1 for p in parts)
        raise DataError(f"{key}: no stretch of {MIN_STRETCH} five-minute intervals (a week) without a gap of more "
                        f"than {FILL_GAP} intervals (the longest has {longest})")
    if len(kept) < len(parts):
        short = [p for p in parts if buckets[p[-1]] - buckets[p[0]] + 1 < MIN_STRETCH]
        note(f"{key}: {len(short)} stretch(es) between gaps of more than {FILL_GAP} intervals are shorter than a "
             f"week and not used ({sum(int(rows[p].sum()) for p in short)} rows)")
    out = []
    for k, p in enumerate(kept, 1):
        b = buckets[p]
        grid = np.arange(b[0], b[-1] + 1)
        flags = np.zeros(len(grid), dtype=bool)
        flags[b - b[0]] = anomalous[p]
        ts = (grid * STEP_SECONDS).astype("datetime64[s]")
        spans = labelled_windows(flags)
        in_window = np.zeros(len(grid), dtype=bool)
        for a, z in spans:
            in_window[a:z + 1] = True
        out.append(NabSeries(key if len(kept) == 1 else f"{key} part {k}", ts, np.interp(grid, b, mean[p]),
                             in_window, [(ts[a], ts[z]) for a, z in spans]))
    return out


def labelled_windows(flags: np.ndarray) -> list[tuple[int, int]]:
    """NAB's windows around labelled rows (numenta/NAB's labeler): each run of flagged rows is an anomaly; a
    window of floor(WINDOW_SHARE * rows / anomalies) rows is centred on its middle row, widened to hold the whole
    run, clipped to the file; windows that overlap or touch merge. First and last row of each."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    runs = list(zip(edges[0::2], edges[1::2] - 1))
    if not runs:
        return []
    half = int(WINDOW_SHARE * len(flags) / len(runs)) // 2
    merged: list[list[int]] = []
    for s, e in runs:
        m = (s + e) // 2
        a, z = max(min(m - half, s), 0), min(max(m + half, e), len(flags) - 1)
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], z)
        else:
            merged.append([a, z])
    return [(int(a), int(z)) for a, z in merged]


def payload_files(path: Path) -> list[tuple[str, bytes]]:
    """The payload corpus: every file except licences."""
    return [(f.name, f.read_bytes()) for f in _files(path, "*") if not f.name.upper().startswith("LICENSE")]
