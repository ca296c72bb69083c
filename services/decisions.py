"""From model outputs to domain answers, by each model's decision rule in its metadata. An output the answer uses
that is NaN or infinite fails the call (errors.NonFiniteOutput, INTERNAL): it is never answered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np


from dwcp_inference.features import decode_targets, stack_columns

from .runtime import ModelRuntime


@dataclass
class BandwidthAnswer:
    bandwidth_mbps: float
    latency_ms: float
    packet_loss: float
    jitter_ms: float
    confidence: float
    horizon_seconds: float


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


def bandwidth(rt: ModelRuntime, columns: Mapping[str, np.ndarray]) -> list[BandwidthAnswer]:
    x, out = rt.infer(columns)
    rt.check_finite(out)
    pred = decode_targets(rt.meta.targets, next(iter(out.values())))
    rt.check_finite(pred)  # in domain units too: a huge scaled output overflows exp
    for name in ("bandwidth_mbps", "latency_ms", "packet_loss", "jitter_ms"):  # a model may predict fewer:
        if name not in pred:                                                   # those keep their last value
            last = columns.get(name)
            pred[name] = np.zeros(len(x)) if last is None else np.asarray(last, dtype=np.float64)[:, -1]
    d = rt.meta.decision
    bw = np.asarray(columns["bandwidth_mbps"], dtype=np.float64)
    mean = np.add.reduce(bw, axis=1) / bw.shape[1]
    cv = np.sqrt(np.maximum(np.add.reduce(bw * bw, axis=1) / bw.shape[1] - mean * mean, 0.0)) / np.maximum(mean, 1e-9)
    base = 1.0 - min(float(d.get("validation_mape_pct", 0.0)) / 100.0, 1.0)
    confidence = np.clip(base / (1.0 + cv), 0.0, 1.0).tolist()
    horizon = float(d.get("interval_seconds", 300.0))
    columns_out = [np.asarray(pred[n], dtype=np.float64).tolist()
                   for n in ("bandwidth_mbps", "latency_ms", "packet_loss", "jitter_ms")]
    return [BandwidthAnswer(b, lat, loss, jit, c, horizon) for b, lat, loss, jit, c in zip(*columns_out, confidence)]


def compression(rt: ModelRuntime, columns: Mapping[str, np.ndarray]) -> list[CompressionAnswer]:
    _, out = rt.infer(columns)
    name, probs = next(iter(out.items()))
    rt.check_finite({name: probs})
    choices = rt.meta.decision["choices"]
    answers = []
    for row in probs:
        order = np.argsort(-row, kind="stable")
        answers.append(CompressionAnswer([(choices[k]["codec"], int(choices[k]["level"]), float(row[k]))
                                          for k in order]))
    return answers


def anomaly(rt: ModelRuntime, columns: Mapping[str, np.ndarray], top: int = 3) -> list[AnomalyAnswer]:
    x, out = rt.infer(columns)
    d = rt.meta.decision
    scores = np.asarray(out[d["score_output"]], dtype=np.float64)
    rt.check_finite({d["score_output"]: scores})
    scores = d["score_sign"] * (scores[:, d["score_column"]] if scores.ndim == 2 else scores)
    names, mean, std, index = rt.constants("anomaly", lambda: _normal_stats(rt))
    # A raw field's value, or (for a version judging a value against its history) the feature's value.
    raw = stack_columns([columns[n] if n in columns and np.ndim(columns[n]) == 1 else x[:, index[n]]
                         for n in names])
    dev = (raw - mean) / std
    order = np.argsort(-np.abs(dev), axis=1, kind="stable")[:, :top].tolist()
    threshold, critical = float(d["threshold"]), float(d["critical_threshold"])
    answers = []
    for s, row, r, dv in zip(scores.tolist(), order, raw.tolist(), dev.tolist()):
        flagged = s >= threshold
        severity = "critical" if s >= critical else "warning" if flagged else "info"
        answers.append(AnomalyAnswer(flagged, s, threshold, severity,
                                     [(names[k], r[k], float(mean[k]), dv[k]) for k in row]))
    return answers


def _normal_stats(rt: ModelRuntime) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, int]]:
    normal = rt.meta.decision["normal"]
    names = list(normal)
    return (names, np.array([normal[n][0] for n in names]), np.array([normal[n][1] for n in names]),
            {n: k for k, n in enumerate(rt.meta.feature_names)})


def high_latency(rt: ModelRuntime, columns: Mapping[str, np.ndarray]) -> list[LatencyAnswer]:
    x, out = rt.infer(columns)
    d = rt.meta.decision
    if "reconstruction_output" in d:  # an imported autoencoder: the error is computed here
        diff = np.asarray(out[d["reconstruction_output"]], dtype=np.float64) - x
        errors = (diff * diff).mean(axis=1)
        scores = errors.mean(axis=1)
    else:
        scores, errors = out[d["score_output"]], out[d["errors_output"]]
    rt.check_finite({"score": scores, "feature_errors": errors})
    names = rt.meta.feature_names
    answers = []
    for s, errs in zip(scores, errors):
        order = np.argsort(-errs, kind="stable")
        answers.append(LatencyAnswer(bool(s >= d["threshold"]), float(s), float(d["threshold"]),
                                     [(names[k], float(errs[k])) for k in order]))
    return answers
