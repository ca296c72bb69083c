"""Held-out metrics and the simple baselines each model must beat, and a table a person can read."""

from __future__ import annotations

from typing import Mapping

import numpy as np


def mape(y: np.ndarray, pred: np.ndarray, floor: np.ndarray | float = 1e-9) -> float:
    """Mean absolute percentage error, in percent, over rows where y is above `floor` (per row or one value)."""
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    ok = y > np.maximum(floor, 1e-9)
    return float(np.mean(np.abs(pred[ok] - y[ok]) / y[ok]) * 100)


def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, float) - np.asarray(y, float)) ** 2)))


def bandwidth_baselines(windows: np.ndarray) -> dict[str, np.ndarray]:
    """Next-interval bandwidth from a window of past values [N, W], as operators would guess it."""
    last5 = windows[:, -5:]
    return {
        "last_value": windows[:, -1],
        "moving_average": windows.mean(axis=1),
        "harmonic_mean_5": last5.shape[1] / np.sum(1.0 / np.maximum(last5, 1e-9), axis=1),
    }


def detection(y: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    """Recall, precision, false-positive rate, accuracy and F1 of binary decisions."""
    y, flagged = np.asarray(y).astype(bool), np.asarray(flagged).astype(bool)
    tp = float(np.sum(y & flagged))
    fp = float(np.sum(~y & flagged))
    fn = float(np.sum(y & ~flagged))
    tn = float(np.sum(~y & ~flagged))
    recall = tp / max(tp + fn, 1)
    precision = tp / max(tp + fp, 1)
    return {"recall": recall, "precision": precision, "fpr": fp / max(fp + tn, 1),
            "accuracy": (tp + tn) / max(len(y), 1), "f1": 2 * precision * recall / max(precision + recall, 1e-12)}


def threshold_for_recall(scores: np.ndarray, y: np.ndarray, recall: float) -> float:
    """The highest threshold (score >= t flags) whose recall on (scores, y) is at least `recall`."""
    pos = np.sort(np.asarray(scores)[np.asarray(y).astype(bool)])
    if pos.size == 0:
        return float(np.max(scores))
    k = int(np.floor((1 - recall) * pos.size))
    return float(pos[min(k, pos.size - 1)])


def threshold_for_fpr(scores: np.ndarray, y: np.ndarray, fpr: float) -> float:
    """The lowest threshold (score >= t flags) that flags at most a share `fpr` of the negatives."""
    neg = np.sort(np.asarray(scores)[~np.asarray(y).astype(bool)])
    if neg.size == 0:
        return float(np.min(scores))
    k = int(np.ceil((1 - fpr) * neg.size))
    if k == 0:
        return float(neg[0])
    # Halfway to the next higher score: a tree model gives many rows the same score, and onnxruntime computes
    # in float32, so a threshold a hair above a tied score would flip decisions.
    above = np.asarray(scores)[np.asarray(scores) > neg[k - 1]]
    return float((neg[k - 1] + above.min()) / 2) if above.size else float(neg[k - 1] + 1e-6 * max(1, abs(neg[k - 1])))


def best_accuracy_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    """The threshold (score >= t flags) with the best accuracy on (scores, y): midpoints between sorted scores."""
    s = np.sort(np.unique(scores))
    candidates = np.concatenate([[s[0] - 1e-9], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-9]])
    y = np.asarray(y).astype(bool)
    acc = [np.mean((scores >= t) == y) for t in candidates]
    return float(candidates[int(np.argmax(acc))])


def table(title: str, rows: Mapping[str, Mapping[str, float]], columns: list[str]) -> str:
    """A Markdown table: one row per model or baseline."""
    out = [f"### {title}", "", "| | " + " | ".join(map(cell, columns)) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, vals in rows.items():
        out.append(f"| {cell(name)} | " + " | ".join(cell(_fmt(vals.get(c))) for c in columns) + " |")
    return "\n".join(out)


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell: a bare | would end the cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _fmt(v: float | str | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}"


# ------------------------------------------------------------------ bootstrap confidence intervals

def resampling_units(groups: np.ndarray, min_groups: int = 5, block: int = 60) -> tuple[np.ndarray, str]:
    """The bootstrap unit of each row (rows in time order within each group, e.g. a trace): the whole group when
    there are at least `min_groups`, else a block of `block` consecutive rows within its group (a block
    bootstrap keeps a series' autocorrelation inside each draw). Returns (unit index per row, what a unit is)."""
    names, idx = np.unique(np.asarray(groups), return_inverse=True)
    if len(names) >= min_groups:
        return idx, f"the {len(names)} traces drawn whole"
    pos = np.zeros(len(idx), dtype=np.int64)
    for g in range(len(names)):
        rows = np.flatnonzero(idx == g)
        pos[rows] = np.arange(len(rows)) // block
    _, units = np.unique(np.stack([idx, pos], axis=1), axis=0, return_inverse=True)
    return units.ravel(), (f"blocks of {block} consecutive windows within each of the {len(names)} traces "
                           f"(fewer than {min_groups} traces to draw whole)")


def bootstrap_ratios(units: np.ndarray, figures: Mapping[str, tuple[np.ndarray, np.ndarray]], *,
                     resamples: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """Each figure, sum(numerator) / sum(denominator) over its rows (a MAPE: errors over counted rows; a share:
    hits over rows), recomputed on `resamples` draws of the units with replacement, the same draws for every
    figure (so differences between figures are paired). Returns the draws per figure."""
    k = int(units.max()) + 1
    draws = np.random.default_rng(seed).multinomial(k, np.full(k, 1.0 / k), size=resamples).astype(np.float64)
    out = {}
    for name, (num, den) in figures.items():
        out[name] = (draws @ np.bincount(units, np.asarray(num, float), k)) / np.maximum(
            draws @ np.bincount(units, np.asarray(den, float), k), 1e-12)
    return out


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    lo, hi = np.percentile(draws, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)
