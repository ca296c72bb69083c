"""Loaders for users' own data in the documented CSV schema (docs/data.md), one schema per model.

Every loader checks what it reads and refuses broken data with the row and column: a missing column, a value
that is not a number, NaN or infinity, a value outside its range, a column that never changes.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np

from .generators import RELIABILITY_FEATURES


class DataError(ValueError):
    """The data cannot be trained on; the message names the file, row and column."""


# column -> (kind, min, max); kind is "number", "label" (string), "time" (ISO 8601 or epoch seconds) or "flag".
SCHEMAS: dict[str, dict[str, tuple[str, float | None, float | None]]] = {
    "bandwidth_predictor": {
        "link_id": ("label", None, None), "timestamp": ("time", None, None),
        "bandwidth_mbps": ("number", 0, None), "latency_ms": ("number", 0, None),
        "packet_loss": ("number", 0, 1), "jitter_ms": ("number", 0, None),
    },
    "reliability_detector": {
        **{f: ("number", 0, None) for f in RELIABILITY_FEATURES}, "is_anomaly": ("flag", 0, 1),
    },
    "compression_selector": {
        "throughput_mbps": ("number", 0, None), "rtt_ms": ("number", 0, None), "packet_loss": ("number", 0, 1),
        "link_type": ("label", None, None), "size_bytes": ("number", 1, None),
        "payload_entropy": ("number", 0, 8), "payload_ratio": ("number", 0, 2),
        "best_choice": ("label", None, None),
    },
    "consensus_latency": {
        "cluster_id": ("label", None, None), "timestamp": ("time", None, None),
        **{f: ("number", 0, None) for f in ("queue_depth", "proposals_pending", "proposals_committed",
                                            "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "leader_changes",
                                            "quorum_size", "active_nodes")},
        "network_tier": ("label", None, None), "dwcp_mode": ("label", None, None),
        "consensus_type": ("label", None, None), "is_anomaly": ("flag", 0, 1),
    },
    # one metric series labelled per row (`--format labelled`, training/data/real.py labelled_series)
    "labelled_series": {"timestamp": ("time", None, None), "value": ("number", None, None),
                        "is_anomaly": ("flag", 0, 1)},
}
# Columns a file may leave out, with the value they take.
OPTIONAL = {"link_id": "link-0", "cluster_id": "cluster-0"}


def load_csv(path: Path, model: str) -> dict[str, np.ndarray]:
    """Columns of a CSV in `model`'s schema, validated. Extra columns are kept as strings."""
    schema = SCHEMAS[model]
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark; skipinitialspace: "a, b" names a and b
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        try:
            header = reader.fieldnames or []
            missing = [c for c in schema if c not in header and c not in OPTIONAL]
            if missing:
                raise DataError(f"{path}: missing columns {missing}; the {model} schema needs {list(schema)} "
                                f"(the header has {header})")
            rows = list(reader)
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not rows:
        raise DataError(f"{path}: no data rows")
    out: dict[str, np.ndarray] = {}
    for col in header:
        kind, lo, hi = schema.get(col, ("label", None, None))
        out[col] = _column(path, col, [r[col] for r in rows], kind, lo, hi)
    for col, default in OPTIONAL.items():
        if col in schema and col not in out:
            out[col] = np.full(len(rows), default)
    for col, (kind, _, _) in schema.items():
        if kind == "number" and np.ptp(out[col]) == 0 and len(rows) > 1:
            raise DataError(f"{path}: column {col} is constant ({out[col][0]:g}): it cannot inform a model")
    if "time_of_day" not in out and "timestamp" in out:
        t = out["timestamp"].astype("datetime64[s]")
        out["time_of_day"] = ((t - t.astype("datetime64[D]")).astype(int) // 3600).astype(float)
        out["day_of_week"] = ((t.astype("datetime64[D]").astype(int) + 4) % 7).astype(float)  # 1970-01-01: Thu
    return out


def _column(path: Path, col: str, values: list[str], kind: str, lo: float | None, hi: float | None) -> np.ndarray:
    if kind == "label":
        return np.array(values, dtype=str)
    if kind == "time":
        try:
            with warnings.catch_warnings():  # numpy converts a zone (Z, +02:00) to UTC, with a warning per call
                warnings.simplefilter("ignore", UserWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                times = np.array([np.datetime64(int(float(v)), "s") if _is_number(v) else np.datetime64(v, "s")
                                  for v in values])
        except ValueError:
            times = None
        bad = next((i for i, v in enumerate(values) if not _is_time(v)), None) if times is None else \
            next((int(i) for i in np.flatnonzero(np.isnat(times))), None)  # "" and "NaT" parse to NaT
        if bad is not None:
            raise DataError(f"{path}: row {bad + 2}, column {col}: {values[bad]!r} is not a time "
                            "(ISO 8601 or epoch seconds)")
        return times
    arr = np.empty(len(values))
    for i, v in enumerate(values):
        try:
            arr[i] = float(v)
        except ValueError:
            raise DataError(f"{path}: row {i + 2}, column {col}: {v!r} is not a number") from None
        if not np.isfinite(arr[i]):
            raise DataError(f"{path}: row {i + 2}, column {col}: {v} is not finite")
        if (lo is not None and arr[i] < lo) or (hi is not None and arr[i] > hi):
            raise DataError(f"{path}: row {i + 2}, column {col}: {v} is outside [{lo}, {hi}]")
        if kind == "flag" and arr[i] not in (0, 1):
            raise DataError(f"{path}: row {i + 2}, column {col}: {v} is not 0 or 1")
    return arr.astype(int) if kind == "flag" else arr


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _is_time(v: str) -> bool:
    try:
        np.datetime64(v, "s") if not _is_number(v) else None
        return True
    except ValueError:
        return False
