"""Feature engineering from raw domain samples, driven by a model version's metadata.

This is the one place that turns raw fields (bandwidth_mbps, link_type, a payload sample...) into model inputs.
The training jobs call it to build their matrices and the server calls it on every request, so the two can never
disagree. Raw inputs are columns: a dict from field name to an array of shape [N] (one row per item) or [N, W]
(a window per item). Numeric columns are float64, categorical ones arrays of str.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

Columns = Mapping[str, np.ndarray]

# Against the series' own recent values (a raw column [..., H + 1]: H earlier values, then the current one):
HISTORY_TRANSFORMS = ("history_z", "history_robust_z", "history_short_z", "history_diff_z", "history_onset_z")
# Over the last `span` values of a window [..., W] (one value per window): its level, and against the window's own
# level (its mean), which makes a forecaster independent of a link's units and speed (bandwidth_quantile.py):
TAIL_TRANSFORMS = ("tail_log_mean", "tail_rel_log_mean", "tail_rel_log_std")
TRANSFORMS = ("identity", "log", "log1p", "sin", "cos", "one_hot", *HISTORY_TRANSFORMS, "context_z", *TAIL_TRANSFORMS)
LOG_FLOOR = 1e-9  # "log" is ln(max(x, LOG_FLOOR)): for fractions spanning decades, such as packet loss
Z_LIMIT = 50.0  # relative features are clipped to +-Z_LIMIT: a flat history makes any change "infinite"
SHORT = 3  # history_short_z: the mean of the last SHORT values (the current one included)
REL_FLOOR = 0.05  # tail_rel_*: ln(REL_FLOOR + x / level), so an outage (0) is finite: 5% of the level below it
LEVEL_FLOOR = 1e-6  # tail_rel_*: the window's level is at least this (an all-zero window)
ONSET = 24  # history_onset_z: the current deviation against the largest of the ONSET values before it


class FeatureError(ValueError):
    """A raw input that the model cannot take. `field` names the raw field; `index` locates the first bad value
    in its column ((item,) or (item, step)) so callers can name it as they sent it."""

    def __init__(self, field_name: str, message: str, index: tuple[int, ...] = ()):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.problem = message
        self.index = index


@dataclass(frozen=True)
class RawField:
    """A raw domain field that callers send, with the range the model accepts."""

    name: str
    min: float | None = None
    max: float | None = None
    vocabulary: tuple[str, ...] = ()  # non-empty for a categorical field

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.vocabulary:
            d["vocabulary"] = list(self.vocabulary)
        else:
            d["min"], d["max"] = self.min, self.max
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RawField":
        return cls(d["name"], d.get("min"), d.get("max"), tuple(d.get("vocabulary", ())))


@dataclass(frozen=True)
class Feature:
    """One model input column (or, for one_hot, one per vocabulary entry), computed from one raw field.

    transform: identity, log (ln of x floored at LOG_FLOOR), log1p (x -> ln(1 + x)), sin/cos (cyclic, with
    `period`), one_hot (with `vocabulary`); relative to the series' own recent values, which makes a model
    independent of a metric's units and level (NAB series of CPU percent and of bytes alike):
    history_z (the current value's z-score against the earlier values), history_robust_z (against their median
    and MAD), history_short_z (the mean of the last 3 values), history_diff_z (the last change against earlier
    changes), history_onset_z (how far the current value's deviation from the reference mean goes beyond the
    largest deviation of the ONSET values before it, in reference standard deviations, 0 when it does not: a new
    excursion scores, a level that has already shifted does not; the reference is the last `context` earlier
    values, or all of them when `context` is 0), and context_z (every value after the first `context` steps of a
    window, against those steps).
    Over the last `span` values of a window: tail_log_mean (ln of their mean, floored at LOG_FLOOR),
    tail_rel_log_mean (ln(REL_FLOOR + their mean / the window's mean)) and tail_rel_log_std (the standard deviation
    of ln(REL_FLOOR + value / the window's mean) over them): several time scales of a series, in units of its own
    level.
    Numeric features are then standardised with `mean` and `std` (fitted on training data).
    """

    name: str
    source: str
    transform: str = "identity"
    period: float | None = None
    vocabulary: tuple[str, ...] = ()
    mean: float = 0.0
    std: float = 1.0
    context: int = 0  # context_z: leading steps of the window that are the reference
    span: int = 0  # tail transforms: the last `span` values of the window

    @property
    def width(self) -> int:
        return len(self.vocabulary) if self.transform == "one_hot" else 1

    @property
    def column_names(self) -> list[str]:
        if self.transform == "one_hot":
            return [f"{self.name}={v}" for v in self.vocabulary]
        return [self.name]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "source": self.source, "transform": self.transform}
        if self.period is not None:
            d["period"] = self.period
        if self.transform == "context_z" or (self.transform == "history_onset_z" and self.context):
            d["context"] = self.context
        if self.transform in TAIL_TRANSFORMS:
            d["span"] = self.span
        if self.transform == "one_hot":
            d["vocabulary"] = list(self.vocabulary)
        else:
            d["mean"], d["std"] = self.mean, self.std
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Feature":
        f = cls(d["name"], d["source"], d.get("transform", "identity"), d.get("period"),
                tuple(d.get("vocabulary", ())), float(d.get("mean", 0.0)), float(d.get("std", 1.0)),
                int(d.get("context", 0)), int(d.get("span", 0)))
        if f.transform not in TRANSFORMS:
            raise ValueError(f"feature {f.name}: unknown transform {f.transform!r}, expected one of {TRANSFORMS}")
        if f.transform in ("sin", "cos") and not f.period:
            raise ValueError(f"feature {f.name}: transform {f.transform} needs a period")
        if f.transform == "one_hot" and not f.vocabulary:
            raise ValueError(f"feature {f.name}: one_hot needs a vocabulary")
        if f.transform == "context_z" and not f.context >= 2:
            raise ValueError(f"feature {f.name}: context_z needs a context of at least 2 steps")
        if f.transform == "history_onset_z" and (f.context == 1 or f.context < 0):
            raise ValueError(f"feature {f.name}: history_onset_z's context is 0 (all earlier values) or at least 2")
        if f.transform in TAIL_TRANSFORMS and not f.span >= 1:
            raise ValueError(f"feature {f.name}: {f.transform} needs a span of at least 1 value")
        if f.transform != "one_hot" and not f.std > 0:
            raise ValueError(f"feature {f.name}: std must be > 0, got {f.std}")
        return f


@dataclass(frozen=True)
class Target:
    """One model output in domain units: y = inverse_transform(output * std + mean), clipped to [min, max]."""

    name: str
    transform: str = "identity"  # identity, log or log1p
    mean: float = 0.0
    std: float = 1.0
    min: float | None = None
    max: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "transform": self.transform, "mean": self.mean, "std": self.std,
                "min": self.min, "max": self.max}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Target":
        return cls(d["name"], d.get("transform", "identity"), float(d.get("mean", 0.0)), float(d.get("std", 1.0)),
                   d.get("min"), d.get("max"))


def validate_raw(fields: list[RawField], columns: Columns) -> None:
    """Raise FeatureError naming the first raw field that is missing, non-finite, out of range or unknown."""
    for f in fields:
        if f.name not in columns:
            raise FeatureError(f.name, "missing")
        col = columns[f.name]
        if f.vocabulary:
            col = np.asarray(col)
            bad = ~np.isin(col, f.vocabulary)
            if bad.any():
                i = _first(bad)
                raise FeatureError(f.name, f"unknown value {str(col[i])!r}, expected one of {list(f.vocabulary)}", i)
            continue
        col = np.asarray(col, dtype=np.float64)
        lo = -np.inf if f.min is None else f.min
        hi = np.inf if f.max is None else f.max
        with np.errstate(invalid="ignore"):
            bad = ~(np.isfinite(col) & (col >= lo) & (col <= hi))
        if bad.any():
            i = _first(bad)
            v = col[i]
            expected = "a finite number" if not np.isfinite(v) else f">= {lo:g}" if v < lo else f"<= {hi:g}"
            raise FeatureError(f.name, f"expected {expected}, got {v:g}", i)


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in np.argwhere(mask)[0])


def transform(features: list[Feature], columns: Columns) -> np.ndarray:
    """Model input matrix of shape [*column_shape, sum(widths)], float32."""
    parts = [_one(f, columns[f.source]) for f in features]
    return np.concatenate(parts, axis=-1).astype(np.float32)


def _one(f: Feature, col: np.ndarray) -> np.ndarray:
    if f.transform == "one_hot":
        col = np.asarray(col)
        return np.stack([(col == v) for v in f.vocabulary], axis=-1).astype(np.float64)
    x = _unscaled(f, np.asarray(col, dtype=np.float64))
    return ((x - f.mean) / f.std)[..., None]


def _unscaled(f: Feature, x: np.ndarray) -> np.ndarray:
    if f.transform == "log1p":
        return np.log1p(np.maximum(x, 0.0))
    if f.transform == "log":
        return np.log(np.maximum(x, LOG_FLOOR))
    if f.transform == "sin":
        return np.sin(2 * math.pi * x / f.period)
    if f.transform == "cos":
        return np.cos(2 * math.pi * x / f.period)
    if f.transform in HISTORY_TRANSFORMS:
        return _against_history(f.transform, x, f.context)
    if f.transform in TAIL_TRANSFORMS:
        return _tail(f.transform, x, f.span)
    if f.transform == "context_z":
        ref = x[..., :f.context]
        mean = ref.mean(axis=-1, keepdims=True)
        return np.clip((x[..., f.context:] - mean) / _spread(ref.std(axis=-1, keepdims=True), mean), -Z_LIMIT, Z_LIMIT)
    return x


def _spread(std: np.ndarray, level: np.ndarray) -> np.ndarray:
    """A scale to divide by: the spread, at least 1% of the level (and never zero)."""
    return np.maximum(np.maximum(std, 0.01 * np.abs(level)), 1e-6)


def _tail(kind: str, x: np.ndarray, span: int) -> np.ndarray:
    last = x[..., -span:]
    if kind == "tail_log_mean":
        return np.log(np.maximum(last.mean(axis=-1), LOG_FLOOR))
    level = np.maximum(x.mean(axis=-1, keepdims=True), LEVEL_FLOOR)
    if kind == "tail_rel_log_mean":
        return np.log(last.mean(axis=-1, keepdims=True) / level + REL_FLOOR)[..., 0]
    return np.log(last / level + REL_FLOOR).std(axis=-1)


def _against_history(kind: str, x: np.ndarray, context: int = 0) -> np.ndarray:
    hist, current = x[..., :-1], x[..., -1]
    if kind == "history_onset_z":
        ref = hist[..., -context:] if context else hist
        mean = ref.mean(axis=-1)
        recent = np.abs(hist[..., -ONSET:] - mean[..., None]).max(axis=-1)
        z = np.maximum(np.abs(current - mean) - recent, 0.0) / _spread(ref.std(axis=-1), mean)
    elif kind == "history_robust_z":
        median = np.median(hist, axis=-1)
        mad = 1.4826 * np.median(np.abs(hist - median[..., None]), axis=-1)
        z = (current - median) / _spread(mad, median)
    elif kind == "history_diff_z":
        steps = np.diff(hist, axis=-1)
        z = (current - hist[..., -1]) / _spread(steps.std(axis=-1), hist.mean(axis=-1))
    else:
        ref = hist[..., :-(SHORT - 1)] if kind == "history_short_z" else hist
        value = x[..., -SHORT:].mean(axis=-1) if kind == "history_short_z" else current
        mean = ref.mean(axis=-1)
        z = (value - mean) / _spread(ref.std(axis=-1), mean)
    return np.clip(z, -Z_LIMIT, Z_LIMIT)


def fit_scaling(features: list[Feature], columns: Columns) -> list[Feature]:
    """The same features with mean and std fitted on `columns` (training data only)."""
    fitted = []
    for f in features:
        if f.transform == "one_hot":
            fitted.append(f)
            continue
        x = _unscaled(f, np.asarray(columns[f.source], dtype=np.float64))
        std = float(x.std())
        fitted.append(Feature(f.name, f.source, f.transform, f.period, f.vocabulary, float(x.mean()),
                              std if std > 1e-9 else 1.0, f.context, f.span))
    return fitted


def encode_targets(targets: list[Target], columns: Columns) -> np.ndarray:
    """Scaled training targets, shape [N, len(targets)]."""
    out = []
    for t in targets:
        y = np.asarray(columns[t.name], dtype=np.float64)
        y = _unscaled(Feature(t.name, t.name, t.transform), y)
        out.append((y - t.mean) / t.std)
    return np.stack(out, axis=-1).astype(np.float32)


def decode_targets(targets: list[Target], outputs: np.ndarray) -> dict[str, np.ndarray]:
    """Model outputs [N, len(targets)] back to domain units, clipped to each target's range."""
    result = {}
    for i, t in enumerate(targets):
        y = outputs[:, i].astype(np.float64) * t.std + t.mean
        if t.transform == "log1p":
            y = np.expm1(y)
        elif t.transform == "log":
            y = np.exp(y)
        result[t.name] = np.clip(y, t.min if t.min is not None else -np.inf, t.max if t.max is not None else np.inf)
    return result


def stack_columns(columns: list) -> np.ndarray:
    """Columns of one shape as float64 [..., len(columns)]: np.stack's result at a fraction of its overhead on
    small arrays. ValueError when the shapes differ."""
    first = np.asarray(columns[0])
    out = np.empty(first.shape + (len(columns),))
    for i, c in enumerate(columns):
        if np.shape(c) != first.shape:
            raise ValueError(f"column {i} has shape {np.shape(c)}, the first {first.shape}")
        out[..., i] = c
    return out


class Pipeline:
    """validate_raw and transform for one model version, prepared once: the per-request work is a few array
    operations over all fields at once instead of several per field. Same results as the functions (tested);
    input with a bad value falls back to validate_raw for its message."""

    _ELEMENTWISE = ("identity", "log", "log1p", "sin", "cos")

    def __init__(self, raw_fields: list[RawField], features: list[Feature]):
        self.raw_fields, self.features = raw_fields, features
        self._numeric = [f for f in raw_fields if not f.vocabulary]
        self._labels = [f for f in raw_fields if f.vocabulary]
        self._known = [(f.name, frozenset(f.vocabulary)) for f in self._labels]
        self._lo = np.array([-np.inf if f.min is None else f.min for f in self._numeric])
        self._hi = np.array([np.inf if f.max is None else f.max for f in self._numeric])
        self._simple = all(f.transform in (*self._ELEMENTWISE, "one_hot") for f in features)
        self._numbers = [f for f in features if f.transform != "one_hot"]
        kinds = np.array([f.transform for f in self._numbers])
        self._groups = {k: np.flatnonzero(kinds == k) for k in self._ELEMENTWISE[1:] if np.any(kinds == k)}
        self._period = np.array([f.period or 1.0 for f in self._numbers])
        self._mean = np.array([f.mean for f in self._numbers])
        self._std = np.array([f.std for f in self._numbers])
        self._one_hot = any(f.transform == "one_hot" for f in features)

    def validate(self, columns: Columns) -> None:
        try:  # [fields, *column shape]: one array made in C (stack_columns' loop costs more on a call's columns)
            raw = np.array([columns[f.name] for f in self._numeric], dtype=np.float64) if self._numeric else None
        except (KeyError, ValueError, TypeError):  # missing, or columns of other shapes: the careful way
            validate_raw(self.raw_fields, columns)
            return
        if raw is not None:
            bounds = (-1,) + (1,) * (raw.ndim - 1)
            with np.errstate(invalid="ignore"):
                ok = np.isfinite(raw) & (raw >= self._lo.reshape(bounds)) & (raw <= self._hi.reshape(bounds))
            if not ok.all():
                validate_raw(self.raw_fields, columns)
        if self._labels and not self._all_known(columns):  # validate_raw finds the first unknown value
            validate_raw(self._labels, columns)

    def _all_known(self, columns: Columns) -> bool:
        """Every categorical column holds only values of its vocabulary (a set test: np.isin costs tens of µs on
        a window of strings)."""
        try:
            return all(set(np.asarray(columns[name]).ravel().tolist()) <= known for name, known in self._known)
        except (KeyError, TypeError):  # missing, or unhashable values: the careful way
            return False

    def transform(self, columns: Columns) -> np.ndarray:
        if not self._simple or not self._numbers:
            return transform(self.features, columns)
        x = stack_columns([columns[f.source] for f in self._numbers])
        for kind, idx in self._groups.items():
            v = x[..., idx]
            if kind == "log1p":
                x[..., idx] = np.log1p(np.maximum(v, 0.0))
            elif kind == "log":
                x[..., idx] = np.log(np.maximum(v, LOG_FLOOR))
            elif kind == "sin":
                x[..., idx] = np.sin(2 * math.pi * v / self._period[idx])
            else:
                x[..., idx] = np.cos(2 * math.pi * v / self._period[idx])
        x = (x - self._mean) / self._std
        if not self._one_hot:
            return x.astype(np.float32)
        parts, k = [], 0
        for f in self.features:
            if f.transform == "one_hot":
                parts.append(_one(f, columns[f.source]))
            else:
                parts.append(x[..., k:k + 1])
                k += 1
        return np.concatenate(parts, axis=-1).astype(np.float32)



# ------------------------------------------------------------------ payload traits (compression selector)

SAMPLE_LIMIT = 64 * 1024  # bytes of a payload sample that are read


def byte_entropy(sample: bytes) -> float:
    """Shannon entropy of the byte distribution, 0..8 bits per byte."""
    data = np.frombuffer(sample[:SAMPLE_LIMIT], dtype=np.uint8)
    if data.size == 0:
        return 0.0
    p = np.bincount(data, minlength=256) / data.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def sample_ratio(sample: bytes) -> float:
    """Compressed/original size of the sample under zlib level 1: a cheap compressibility probe."""
    data = sample[:SAMPLE_LIMIT]
    if not data:
        return 1.0
    return len(zlib.compress(data, 1)) / len(data)


@dataclass
class PayloadTraits:
    size_bytes: float
    entropy: float
    ratio: float

    @classmethod
    def from_sample(cls, size_bytes: float, sample: bytes) -> "PayloadTraits":
        return cls(size_bytes, byte_entropy(sample), sample_ratio(sample))

