"""Live accuracy: predictions remembered for a while, matched to the outcomes callers report."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidInput, PredictionNotFound
from .metrics import Metrics

WINDOW = 1000  # outcomes per model version in the rolling figures


@dataclass
class _Tally:
    errors: deque = field(default_factory=lambda: deque(maxlen=WINDOW))  # per-outcome: abs pct error or hit
    regrets: deque = field(default_factory=lambda: deque(maxlen=WINDOW))  # selector: throughput lost, percent
    tp: int = 0
    fp: int = 0
    fn: int = 0
    count: int = 0
    figures: dict = field(default_factory=dict)


class OutcomeTracker:
    def __init__(self, metrics: Metrics, capacity: int = 100_000):
        self.metrics = metrics
        self.capacity = capacity
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, tuple[str, str, Any]] = OrderedDict()
        self._tallies: dict[tuple[str, str], _Tally] = {}

    def remember(self, model: str, version: str, prediction: Any) -> str:
        pid = uuid.uuid4().hex
        with self._lock:
            self._pending[pid] = (model, version, prediction)
            while len(self._pending) > self.capacity:
                self._pending.popitem(last=False)
        return pid

    def report(self, prediction_id: str, kind: str, actual: Any) -> tuple[str, str]:
        """Match an outcome to its prediction and update that version's live accuracy."""
        with self._lock:
            entry = self._pending.pop(prediction_id, None)
        if entry is None:
            raise PredictionNotFound(f"prediction_id: no remembered prediction {prediction_id!r} "
                                     f"(unknown, already reported, or older than the last {self.capacity})")
        model, version, predicted = entry
        expected = {"bandwidth_predictor": "actual_network", "compression_selector": "best_choice",
                    "reliability_detector": "was_anomaly", "consensus_latency": "was_anomaly"}[model]
        if kind != expected:
            with self._lock:
                self._pending[prediction_id] = entry
            raise InvalidInput(f"outcome: a {model} prediction is judged by {expected}, got {kind or 'nothing'}")
        with self._lock:
            t = self._tallies.setdefault((model, version), _Tally())
            if model == "bandwidth_predictor":
                if actual > 0:
                    t.errors.append(abs(predicted - actual) / actual * 100)
                figures = {"mape": sum(t.errors) / max(len(t.errors), 1)}
            elif model == "compression_selector":
                best, times = actual
                t.errors.append(1.0 if predicted == best else 0.0)
                figures = {"accuracy": sum(t.errors) / len(t.errors)}
                if predicted in times:  # the share of effective throughput lost against the best choice
                    t.regrets.append((1 - times[best] / times[predicted]) * 100)
                if t.regrets:
                    figures["regret_pct"] = sum(t.regrets) / len(t.regrets)
            else:
                t.tp += predicted and actual
                t.fp += predicted and not actual
                t.fn += (not predicted) and actual
                figures = {"precision": t.tp / max(t.tp + t.fp, 1), "recall": t.tp / max(t.tp + t.fn, 1)}
            t.figures = figures
            t.count += 1
        for metric, value in figures.items():
            self.metrics.live.labels(model, version, metric).set(value)
        self.metrics.outcomes.labels(model, version).inc()
        return model, version

    def live(self, model: str, version: str) -> tuple[dict[str, float], int]:
        """The version's live accuracy figures and how many outcomes they rest on."""
        with self._lock:
            t = self._tallies.get((model, version))
            return (dict(t.figures), t.count) if t else ({}, 0)
