"""Live accuracy: predictions remembered for a while, matched to the outcomes callers report."""

from __future__ import annotations

import secrets
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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


class _PredictionStore:
    """The last `capacity` predictions in fixed arrays, one slot each, reused round-robin.

    No Python object lives per prediction: a dict of a hundred thousand churning entries kept the heap growing
    for as long as a soak ran. An id is a random 64-bit nonce and the slot number, so a stale or guessed id
    finds its slot taken by a newer prediction and is refused.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._nonce = np.zeros(capacity, np.uint64)  # 0: empty or already reported
        self._key = np.zeros(capacity, np.int32)  # index into _keys: (model, version, interned)
        self._value = np.zeros(capacity, np.float64)  # a number, or the code of an interned prediction
        self._keys: list[tuple[str, str, bool]] = []
        self._key_index: dict[tuple[str, str, bool], int] = {}
        self._interned: list[Any] = []  # predictions that are not numbers: (codec, level) choices
        self._intern_index: dict[Any, int] = {}
        self._next = 0

    def _key_value(self, model: str, version: str, prediction: Any) -> tuple[int, Any]:
        interned = isinstance(prediction, (bool, tuple))  # verdicts and (codec, level) choices; else a number
        if interned:
            value = self._intern_index.get(prediction)
            if value is None:
                value = self._intern_index[prediction] = len(self._interned)
                self._interned.append(prediction)
        else:
            value = prediction
        key = self._key_index.get((model, version, interned))
        if key is None:
            key = self._key_index[(model, version, interned)] = len(self._keys)
            self._keys.append((model, version, interned))
        return key, value

    def put(self, model: str, version: str, predictions: list, nonces: list[int]) -> list[str]:
        ids = []
        for prediction, nonce in zip(predictions, nonces):
            key, value = self._key_value(model, version, prediction)
            slot = self._next
            self._next = (slot + 1) % self.capacity
            self._nonce[slot], self._key[slot], self._value[slot] = nonce, key, value
            ids.append(f"{nonce:016x}{slot:x}")
        return ids

    def take(self, prediction_id: str) -> tuple[str, str, Any, int, int] | None:
        """The remembered prediction, removed; None if the id is malformed, unknown or already taken."""
        if not 16 < len(prediction_id) <= 32:
            return None
        try:
            nonce, slot = int(prediction_id[:16], 16), int(prediction_id[16:], 16)
        except ValueError:
            return None
        if not 0 <= slot < self.capacity or nonce == 0 or self._nonce[slot] != nonce:
            return None
        self._nonce[slot] = 0
        model, version, interned = self._keys[self._key[slot]]
        value = float(self._value[slot])
        predicted = self._interned[int(value)] if interned else value
        return model, version, predicted, slot, nonce

    def give_back(self, slot: int, nonce: int) -> None:
        self._nonce[slot] = nonce


class OutcomeTracker:
    def __init__(self, metrics: Metrics, capacity: int = 100_000):
        self.metrics = metrics
        self.capacity = capacity
        self._lock = threading.Lock()
        self._store = _PredictionStore(capacity)
        self._tallies: dict[tuple[str, str], _Tally] = {}

    def remember(self, model: str, version: str, prediction: Any) -> str:
        return self.remember_many(model, version, [prediction])[0]

    def remember_many(self, model: str, version: str, predictions: list) -> list[str]:
        # Random bits come from a system call: made before the lock is taken, not while others wait for it.
        nonces = (np.frombuffer(secrets.token_bytes(8 * len(predictions)), np.uint64) | np.uint64(1)).tolist()
        with self._lock:
            return self._store.put(model, version, predictions, nonces)

    def report(self, prediction_id: str, kind: str, actual: Any) -> tuple[str, str]:
        """Match an outcome to its prediction and update that version's live accuracy."""
        with self._lock:
            entry = self._store.take(prediction_id)
        if entry is None:
            raise PredictionNotFound(f"prediction_id: no remembered prediction {prediction_id!r} "
                                     f"(unknown, already reported, or older than the last {self.capacity})")
        model, version, predicted, slot, nonce = entry
        expected = {"bandwidth_predictor": "actual_network", "compression_selector": "best_choice",
                    "reliability_detector": "was_anomaly", "consensus_latency": "was_anomaly"}[model]
        if kind != expected:
            with self._lock:
                self._store.give_back(slot, nonce)
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

    def forget(self, model: str, version: str) -> None:
        """A version was unloaded: drop its live figures and their metric series (a server that swaps versions
        for months must not keep every version's)."""
        with self._lock:
            t = self._tallies.pop((model, version), None)
        for metric in (t.figures if t else {}):
            _remove(self.metrics.live, model, version, metric)
        _remove(self.metrics.outcomes, model, version)

    def live(self, model: str, version: str) -> tuple[dict[str, float], int]:
        """The version's live accuracy figures and how many outcomes they rest on."""
        with self._lock:
            t = self._tallies.get((model, version))
            return (dict(t.figures), t.count) if t else ({}, 0)


def _remove(metric, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:  # never reported
        pass
