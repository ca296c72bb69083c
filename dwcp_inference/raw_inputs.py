"""The raw columns a model version takes, as both export/ and the server use them: how a validated column feeds a
graph that holds the features (export/feature_graph.py), and inputs at the edges of each field's valid range (the
probe a version must pass at export and at load)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from .features import RawField
from .metadata import ModelMetadata


def graph_feed_plan(meta: ModelMetadata) -> list[tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """Per input of a graph that holds the features: its name and how a validated raw column becomes its tensor
    (numbers as float64; a categorical field's strings as int64 indices into its vocabulary)."""
    vocabularies = {f.name: f.vocabulary for f in meta.raw_fields}
    plan: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = []
    for t in meta.inputs:
        vocabulary = vocabularies.get(t.name, ())
        if vocabulary:
            plan.append((t.name, lambda col, v=vocabulary: category_indices(col, v)))
        else:
            plan.append((t.name, lambda col: np.asarray(col, dtype=np.float64)))
    return plan


def category_indices(column: np.ndarray, vocabulary: tuple[str, ...]) -> np.ndarray:
    """Strings to their positions in the vocabulary (-1 for a value outside it: validation refuses those first)."""
    column = np.asarray(column)
    out = np.full(column.shape, -1, dtype=np.int64)
    for i, value in enumerate(vocabulary):
        out[column == value] = i
    return out


def edge_columns(raw_fields: list[RawField], window: int) -> dict[str, np.ndarray] | None:
    """Raw columns at the edges of each numeric field's declared range: every field at its minimum, every field
    at its maximum, then each field alone at one end with the others at the other end; for a windowed model also
    windows that ramp from one end to the other. Categorical fields cycle through their vocabularies."""
    numeric = [f for f in raw_fields if not f.vocabulary and f.min is not None and f.max is not None]
    if not numeric:
        return None
    lo = np.array([f.min for f in numeric], dtype=np.float64)
    hi = np.array([f.max for f in numeric], dtype=np.float64)
    rows = [lo, hi]
    for k in range(len(numeric)):
        one_high, one_low = lo.copy(), hi.copy()
        one_high[k], one_low[k] = hi[k], lo[k]
        rows += [one_high, one_low]
    values = np.array(rows)  # [R, F]
    steps = max(window, 1)
    cols = np.repeat(values[:, None, :], steps, axis=1)  # constant windows [R, W, F]
    if window > 1:
        ramp = np.linspace(0.0, 1.0, steps)[:, None]
        cols = np.concatenate([cols, (lo + (hi - lo) * ramp)[None], (hi + (lo - hi) * ramp)[None]])
    n = len(cols)
    columns: dict[str, np.ndarray] = {}
    for k, f in enumerate(numeric):
        columns[f.name] = cols[:, :, k] if window > 1 else cols[:, 0, k]
    for f in raw_fields:
        if f.vocabulary:
            v = np.array([f.vocabulary[i % len(f.vocabulary)] for i in range(n)])
            columns[f.name] = np.repeat(v[:, None], steps, axis=1) if window > 1 else v
        elif f.name not in columns:  # a field without a declared range: its minimum, or 0
            fill = float(f.min if f.min is not None else f.max if f.max is not None else 0.0)
            columns[f.name] = np.full((n, steps) if window > 1 else n, fill)
    return columns
