"""From model outputs to domain answers, by each model's decision rule in its metadata, for a whole batch at once:
each rule answers one object of numpy columns (no Python object per item). An output the answer uses that is NaN
or infinite fails the call (errors.NonFiniteOutput, INTERNAL): it is never answered.

Indexing an answer object (`answers[i]`, iteration) gives one item in the per-item form (`BandwidthAnswer`, ...):
for evaluation and tests, off the serving path."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np


from dwcp_inference.contracts import BANDWIDTH
from dwcp_inference.features import decode_targets, stack_columns

from .runtime import ModelRuntime

SEVERITY_CODES = {"info": 1, "warning": 2, "critical": 3}  # the proto's Severity values
SEVERITY_NAMES = {v: k for k, v in SEVERITY_CODES.items()}


@dataclass
class BandwidthAnswer:
    bandwidth_mbps: float
    latency_ms: float
    packet_loss: float
    jitter_ms: float
    confidence: float
    horizon_seconds: float
    p10_mbps: float | None = None  # a version with quantile outputs: the interval [p10, p90]
    p90_mbps: float | None = None


@dataclass
class CompressionAnswer:
    ranked: list[tuple[str, int, float]]  # (codec, level, probability), best first


@dataclass
class AnomalyAnswer:
    is_anomaly: bool
    score: float
    threshold: float
    severity: str  # info, warning, critical
    contributions: list[tuple[str, float, float, float]]  # (feature, value, expected, deviation), largest first


@dataclass
class LatencyAnswer:
    is_high_latency: bool
    error: float
    threshold: float
    feature_errors: list[tuple[str, float]]  # largest first


class _Items:
    """A batch of answers as columns; `item(i)` is one answer in the per-item form."""

    def __len__(self) -> int:
        raise NotImplementedError

    def item(self, i: int):
        raise NotImplementedError

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.item(i % len(self))

    def __iter__(self) -> Iterator:
        return (self.item(i) for i in range(len(self)))


@dataclass
class BandwidthAnswers(_Items):
    """[B] float64 columns, in domain units; `p10_mbps` and `p90_mbps` only from a version with quantile
    outputs (None otherwise: the answer leaves them out)."""

    bandwidth_mbps: np.ndarray
    latency_ms: np.ndarray
    packet_loss: np.ndarray
    jitter_ms: np.ndarray
    confidence: np.ndarray
    horizon_seconds: float
    p10_mbps: np.ndarray | None = None
    p90_mbps: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.bandwidth_mbps)

    def item(self, i: int) -> BandwidthAnswer:
        interval = (None, None) if self.p10_mbps is None else (float(self.p10_mbps[i]), float(self.p90_mbps[i]))
        return BandwidthAnswer(float(self.bandwidth_mbps[i]), float(self.latency_ms[i]), float(self.packet_loss[i]),
                               float(self.jitter_ms[i]), float(self.confidence[i]), self.horizon_seconds, *interval)


@dataclass
class CompressionAnswers(_Items):
    """Every choice ranked per item: `ranked` [B, K] indexes the version's choices (`codecs`, `levels`), best
    first; `probability` [B, K] float64 in the same order."""

    ranked: np.ndarray
    probability: np.ndarray
    codecs: list[str]
    levels: list[int]

    def __len__(self) -> int:
        return len(self.ranked)

    def item(self, i: int) -> CompressionAnswer:
        return CompressionAnswer([(self.codecs[k], self.levels[k], p)
                                  for k, p in zip(self.ranked[i].tolist(), self.probability[i].tolist())])

    @property
    def best(self) -> np.ndarray:
        return self.ranked[:, 0]


@dataclass
class AnomalyAnswers(_Items):
    """`severity` [B] holds SEVERITY_CODES values; contributions are [B, top]: `feature` indexes `names`, with each
    contribution's value, expected (normal mean) and deviation, largest deviation first."""

    is_anomaly: np.ndarray
    score: np.ndarray
    threshold: float
    severity: np.ndarray
    names: list[str]
    feature: np.ndarray
    value: np.ndarray
    expected: np.ndarray
    deviation: np.ndarray

    def __len__(self) -> int:
        return len(self.score)

    def item(self, i: int) -> AnomalyAnswer:
        return AnomalyAnswer(bool(self.is_anomaly[i]), float(self.score[i]), self.threshold,
                             SEVERITY_NAMES[int(self.severity[i])],
                             [(self.names[k], v, m, d) for k, v, m, d in zip(
                                 self.feature[i].tolist(), self.value[i].tolist(), self.expected[i].tolist(),
                                 self.deviation[i].tolist())])


@dataclass
class LatencyAnswers(_Items):
    """`feature` [B, F] indexes `names`, largest error first, with `feature_error` [B, F] in the same order."""

    is_high_latency: np.ndarray
    error: np.ndarray
    threshold: float
    names: list[str]
    feature: np.ndarray
    feature_error: np.ndarray

    def __len__(self) -> int:
        return len(self.error)

    def item(self, i: int) -> LatencyAnswer:
        return LatencyAnswer(bool(self.is_high_latency[i]), float(self.error[i]), self.threshold,
                             [(self.names[k], e) for k, e in zip(self.feature[i].tolist(),
                                                                  self.feature_error[i].tolist())])


def _f64(values) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float64)


def _along(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """values[i, order[i, j]] as [B, K] float64 (np.take_along_axis, without its Python-level overhead)."""
    return _f64(np.asarray(values)[np.arange(len(order))[:, None], order])


class TargetDecoder:
    """features.decode_targets for one version's targets as a few operations on the [N, T] outputs (not four per
    target): the same elementwise arithmetic, so the same bits (tested); features.decode_targets stays the reference
    and names the outputs when a decoded value is not finite."""

    def __init__(self, targets: Sequence):
        self.targets = list(targets)
        self.names = [t.name for t in targets]
        self.std = np.array([t.std for t in targets], dtype=np.float64)
        self.mean = np.array([t.mean for t in targets], dtype=np.float64)
        self.lo = np.array([-np.inf if t.min is None else t.min for t in targets], dtype=np.float64)
        self.hi = np.array([np.inf if t.max is None else t.max for t in targets], dtype=np.float64)
        self.expm1 = np.array([i for i, t in enumerate(targets) if t.transform == "log1p"], dtype=np.intp)
        self.exp = np.array([i for i, t in enumerate(targets) if t.transform == "log"], dtype=np.intp)

    def __call__(self, outputs: np.ndarray) -> np.ndarray:
        """[T, N] float64: each target's values in domain units, clipped to its range, one contiguous row each."""
        y = np.asarray(outputs)[:, :len(self.names)].astype(np.float64)
        y *= self.std
        y += self.mean
        if len(self.expm1):
            y[:, self.expm1] = np.expm1(y[:, self.expm1])
        if len(self.exp):
            y[:, self.exp] = np.exp(y[:, self.exp])
        return np.ascontiguousarray(np.clip(y, self.lo, self.hi).T)  # not np.minimum/maximum: +-0 ties differ


def ranked_descending(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's columns by descending value, ties in column order ([B, K] indices, np.argsort(-values,
    kind="stable")), and the values in that order as float64. One row (a single call) is sorted in Python: the
    same order for values without NaN (the rules check that first), at a fraction of numpy's calls (tested)."""
    if values.ndim == 2 and len(values) == 1:
        row = values[0].tolist()
        order = sorted(range(len(row)), key=lambda k: -row[k])
        return np.array([order], dtype=np.intp), np.array([[row[k] for k in order]], dtype=np.float64)
    order = np.argsort(-values, axis=1, kind="stable")
    return order, _along(values, order)


def bandwidth(rt: ModelRuntime, columns: Mapping[str, np.ndarray]) -> BandwidthAnswers:
    x, out = rt.infer(columns)
    rt.check_finite(out)
    outputs = next(iter(out.values()))
    decoder = rt.constants("targets", lambda: TargetDecoder(rt.meta.targets))
    decoded = decoder(outputs)
    if not np.isfinite(decoded).all():  # in domain units too (a huge scaled output overflows exp): which ones
        rt.check_finite(decode_targets(rt.meta.targets, outputs))
    pred = dict(zip(decoder.names, decoded))
    for name in ("bandwidth_mbps", "latency_ms", "packet_loss", "jitter_ms"):  # a model may predict fewer:
        if name not in pred:                                                   # those keep their last value
            last = columns.get(name)
            pred[name] = np.zeros(len(x)) if last is None else np.asarray(last, dtype=np.float64)[:, -1]
    base, horizon = rt.constants("bandwidth", lambda: _bandwidth_constants(rt.meta.decision))
    point = [_f64(pred[n]) for n in ("bandwidth_mbps", "latency_ms", "packet_loss", "jitter_ms")]
    coverage, = rt.constants("bandwidth interval", lambda: (interval_coverage(rt.meta),))  # cached, None too
    if coverage is not None:  # calibrated: the version's held-out share of actuals inside [p10, p90]
        return BandwidthAnswers(*point, np.full(len(x), coverage), horizon,
                                _f64(pred[QUANTILE_TARGETS[0]]), _f64(pred[QUANTILE_TARGETS[1]]))
    bw = np.asarray(columns["bandwidth_mbps"], dtype=np.float64)
    confidence = confidence_one(base, bw) if len(bw) == 1 else confidence_columns(base, bw)
    return BandwidthAnswers(*point, confidence, horizon)


def confidence_columns(base: float, bw: np.ndarray) -> np.ndarray:
    """`base` (1 - validation MAPE) over 1 + the coefficient of variation of each window's bandwidth (rows of `bw`
    [B, W]), clipped to [0, 1]: [B] float64."""
    mean = np.add.reduce(bw, axis=1) / bw.shape[1]
    cv = np.sqrt(np.maximum(np.add.reduce(bw * bw, axis=1) / bw.shape[1] - mean * mean, 0.0)) / np.maximum(mean, 1e-9)
    return _f64(np.clip(base / (1.0 + cv), 0.0, 1.0))


def confidence_one(base: float, bw: np.ndarray) -> np.ndarray:
    """confidence_columns for one window in Python floats after numpy's two sums (its pairwise order): the same
    IEEE operations, np.maximum's and np.clip's NaN and signed-zero rules, so the same bits (tested)."""
    n = bw.shape[1]
    mean = float(np.add.reduce(bw, axis=1)[0]) / n
    var = float(np.add.reduce(bw * bw, axis=1)[0]) / n - mean * mean
    cv = math.sqrt(var if var > 0.0 or var != var else 0.0) / _maximum(mean, 1e-9)  # np.maximum(var, 0.0)
    x = base / (1.0 + cv)
    clipped = 0.0 if x < 0.0 else 1.0 if x > 1.0 else x  # np.clip's rule: a NaN and a tie (+-0) keep the value
    return np.array([clipped], dtype=np.float64)


def _maximum(a: float, b: float) -> float:
    """np.maximum(a, b) where b is not zero: a NaN wins."""
    return a if a >= b or a != a else b


QUANTILE_TARGETS = BANDWIDTH.interval  # p10 and p90: the targets of the interval a version may answer


def interval_coverage(meta) -> float | None:
    """A version's calibrated confidence: the share of held-out actuals inside its [p10, p90] (metadata
    decision.interval_coverage, measured on links training held out), where it has both quantile outputs and that
    figure; None otherwise (the version answers no interval, and the confidence is 1 - validation MAPE over
    1 + the window's coefficient of variation, as before)."""
    names = {t.name for t in meta.targets}
    coverage = meta.decision.get("interval_coverage")
    if not set(QUANTILE_TARGETS) <= names or coverage is None:
        return None
    return min(max(float(coverage), 0.0), 1.0)


def _bandwidth_constants(d: Mapping) -> tuple[float, float]:
    """The confidence's base (1 - validation MAPE) and the answer's horizon in seconds."""
    return 1.0 - min(float(d.get("validation_mape_pct", 0.0)) / 100.0, 1.0), float(d.get("interval_seconds", 300.0))


def compression(rt: ModelRuntime, columns: Mapping[str, np.ndarray]) -> CompressionAnswers:
    _, out = rt.infer(columns)
    name, probs = next(iter(out.items()))
    rt.check_finite({name: probs})
    choices = rt.meta.decision["choices"]
    codecs, levels = rt.constants("compression", lambda: ([c["codec"] for c in choices],
                                                         [int(c["level"]) for c in choices]))
    return CompressionAnswers(*ranked_descending(np.asarray(probs)), codecs, levels)


def anomaly(rt: ModelRuntime, columns: Mapping[str, np.ndarray], top: int = 3) -> AnomalyAnswers:
    x, out = rt.infer(columns)
    d = rt.meta.decision
    scores = np.asarray(out[d["score_output"]], dtype=np.float64)
    rt.check_finite({d["score_output"]: scores})
    scores = _f64(d["score_sign"] * (scores[:, d["score_column"]] if scores.ndim == 2 else scores))
    names, mean, std, index = rt.constants("anomaly", lambda: _normal_stats(rt))
    # A raw field's value, or (for a version judging a value against its history) the feature's value.
    raw = [columns[n] if n in columns and np.ndim(columns[n]) == 1 else x[:, index[n]] for n in names]
    threshold, critical = float(d["threshold"]), float(d["critical_threshold"])
    if len(scores) == 1:
        one = anomaly_one(scores, raw, names, mean, std, threshold, critical, top)
        if one is not None:
            return one
    return anomaly_columns(scores, raw, names, mean, std, threshold, critical, top)


def anomaly_columns(scores: np.ndarray, raw: list, names: list[str], mean: np.ndarray, std: np.ndarray,
                    threshold: float, critical: float, top: int) -> AnomalyAnswers:
    """The detector's rule over a batch: each item's largest deviations from the normal statistics."""
    raw = stack_columns(raw)
    dev = (raw - mean) / std
    order = np.argsort(-np.abs(dev), axis=1, kind="stable")[:, :top]
    flagged = scores >= threshold
    severity = np.where(scores >= critical, 3, np.where(flagged, 2, 1))
    return AnomalyAnswers(flagged, scores, threshold, severity, names, order,
                          _along(raw, order),
                          _f64(np.asarray(mean, dtype=np.float64)[order]),
                          _along(dev, order))


def anomaly_one(scores: np.ndarray, raw: list, names: list[str], mean: np.ndarray, std: np.ndarray,
                threshold: float, critical: float, top: int) -> AnomalyAnswers | None:
    """anomaly_columns for one item in Python floats (numpy's calls cost more than the arithmetic on a dozen
    numbers): the same IEEE operations and the same stable order, so the same bits (tested). None where the
    deviations are not all finite numbers (a zero std): anomaly_columns decides those."""
    values = [float(c[0]) for c in raw]
    means, stds = mean.tolist(), std.tolist()
    if not all(stds):
        return None
    dev = [(v - m) / s for v, m, s in zip(values, means, stds)]
    if not all(math.isfinite(v) for v in dev):
        return None
    order = sorted(range(len(dev)), key=lambda k: -abs(dev[k]))[:top]
    score = float(scores[0])
    flagged = score >= threshold
    severity = 3 if score >= critical else 2 if flagged else 1
    return AnomalyAnswers(np.array([flagged]), scores, threshold, np.array([severity], dtype=np.int64), names,
                          np.array([order], dtype=np.intp),
                          np.array([[values[k] for k in order]], dtype=np.float64),
                          np.array([[float(means[k]) for k in order]], dtype=np.float64),
                          np.array([[dev[k] for k in order]], dtype=np.float64))


def _normal_stats(rt: ModelRuntime) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, int]]:
    normal = rt.meta.decision["normal"]
    names = list(normal)
    return (names, np.array([normal[n][0] for n in names]), np.array([normal[n][1] for n in names]),
            {n: k for k, n in enumerate(rt.meta.feature_names)})


def high_latency(rt: ModelRuntime, columns: Mapping[str, np.ndarray]) -> LatencyAnswers:
    x, out = rt.infer(columns)
    d = rt.meta.decision
    if "reconstruction_output" in d:  # an imported autoencoder: the error is computed here
        diff = np.asarray(out[d["reconstruction_output"]], dtype=np.float64) - x
        errors = (diff * diff).mean(axis=1)
        scores = errors.mean(axis=1)
    else:
        scores, errors = out[d["score_output"]], out[d["errors_output"]]
    rt.check_finite({"score": scores, "feature_errors": errors})
    scores = np.asarray(scores)
    order, ranked = ranked_descending(np.asarray(errors))
    names: list[str] = rt.constants("feature names", lambda: list(rt.meta.feature_names))
    return LatencyAnswers(np.asarray(scores >= d["threshold"], dtype=bool), _f64(scores), float(d["threshold"]),
                          list(names), order, ranked)
