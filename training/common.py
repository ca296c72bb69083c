"""Pieces every training job shares: seeding, time-ordered splits, data fingerprints, provenance."""

from __future__ import annotations

import hashlib
import platform
import sys
from datetime import datetime, timezone
from typing import Any, Mapping

import numpy as np


def seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def time_split(n: int, val: float = 0.15, test: float = 0.15) -> tuple[slice, slice, slice]:
    """Train, validation, test slices over rows in time order: the model never sees the future."""
    a, b = int(n * (1 - val - test)), int(n * (1 - test))
    return slice(0, a), slice(a, b), slice(b, n)


def fingerprint(columns: Mapping[str, np.ndarray]) -> str:
    """sha256 over the training data's columns, names and values, in order."""
    h = hashlib.sha256()
    for name in sorted(columns):
        h.update(name.encode())
        col = np.asarray(columns[name])
        h.update(col.astype(str).tobytes() if col.dtype.kind in "OUS" else np.ascontiguousarray(col).tobytes())
    return h.hexdigest()


def provenance(columns: Mapping[str, np.ndarray], source: str, seed: int, rows: int) -> dict[str, Any]:
    import torch

    return {
        "data_source": source,
        "data_fingerprint": fingerprint(columns),
        "rows": rows,
        "seed": seed,
        "command": " ".join(["dwcp-inference", *sys.argv[1:]]) if sys.argv[0].endswith("dwcp-inference")
        else " ".join(sys.argv),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def take(columns: Mapping[str, np.ndarray], idx: Any) -> dict[str, np.ndarray]:
    """The same rows (a slice, mask or index array) of every column."""
    return {k: np.asarray(v)[idx] for k, v in columns.items()}


class GateError(RuntimeError):
    """A trained model missed its targets or lost to a baseline; it is not published unless forced. `result`
    holds what the job measured (held-out table, curves), so the report can still show the model."""

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = {**(result or {}), "held_back": message} if result is not None else None


def gate(name: str, failures: list[str], force: bool, result: dict[str, Any] | None = None) -> dict[str, Any]:
    """The promotion gate: raise GateError listing `failures` (and carrying the job's `result`) unless there are
    none or the operator forces it. Returns the record kept in the metadata."""
    if failures and not force:
        raise GateError(f"{name} not published: " + "; ".join(failures) + " (--force publishes it anyway)", result)
    return {"passed": not failures, "forced": bool(failures) and force, "failures": failures}
