"""Loaders for the real data sets in ../shared/data (see its README): mahimahi cellular traces, labelled NAB
server metrics, and a payload corpus. Each returns columns in the documented schema of the model it feeds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .csv_schema import DataError

PACKET_BITS = 1500 * 8
TRACE_START = np.datetime64("2026-01-05T00:00:00")  # traces have no wall-clock time; this anchors them


def _files(path: Path, pattern: str) -> list[Path]:
    path = Path(path)
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


def payload_files(path: Path) -> list[tuple[str, bytes]]:
    """The payload corpus: every file except licences."""
    return [(f.name, f.read_bytes()) for f in _files(path, "*") if not f.name.upper().startswith("LICENSE")]
