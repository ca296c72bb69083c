"""Live accuracy: outcomes callers report, judged against the prediction their signed id carries.

No process remembers predictions: an id carries the model, version, predicted value and time, signed with the
outcome key (prediction_ids.py), so any replica or worker holding the key accounts for any id. Each process
remembers the nonces of the last REPLAY_MEMORY outcomes it accepted, to refuse an id reported twice to it; a
replay to another replica is not detected.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import InvalidInput, PredictionNotFound
from .metrics import Metrics
from .prediction_ids import Signer, new_key, read_key
from .settings import Settings

log = logging.getLogger(__name__)

WINDOW = 1000  # outcomes per model version in the rolling figures
APE_CAP_PCT = 1000.0  # one outcome's absolute percentage error counts at most this much in the MAPE
REPLAY_MEMORY = 100_000  # accepted nonces remembered per process (about 10 MB at most)
MAX_AGE_SECONDS = 24 * 3600.0
CLOCK_SKEW_SECONDS = 300.0  # an id made this far "in the future" (another replica's clock) is still accepted
EXPECTED = {"bandwidth_predictor": "actual_network", "compression_selector": "best_choice",
            "reliability_detector": "was_anomaly", "consensus_latency": "was_anomaly"}


@dataclass
class _Tally:
    errors: deque = field(default_factory=lambda: deque(maxlen=WINDOW))  # per-outcome: abs pct error or hit
    regrets: deque = field(default_factory=lambda: deque(maxlen=WINDOW))  # selector: throughput lost, percent
    tp: int = 0
    fp: int = 0
    fn: int = 0
    count: int = 0
    figures: dict = field(default_factory=dict)


class _Nonces:
    """The nonces of the last `capacity` accepted outcomes."""

    def __init__(self, capacity: int):
        self._seen: set[bytes] = set()
        self._order: deque[bytes] = deque()
        self.capacity = capacity

    def add(self, nonce: bytes) -> bool:
        """False if the nonce was already seen."""
        if nonce in self._seen:
            return False
        self._seen.add(nonce)
        self._order.append(nonce)
        if len(self._order) > self.capacity:
            self._seen.discard(self._order.popleft())
        return True


class OutcomeTracker:
    def __init__(self, metrics: Metrics, key: bytes | None = None, max_age_seconds: float = MAX_AGE_SECONDS,
                 replay_memory: int = REPLAY_MEMORY, clock: Callable[[], float] = time.time):
        self.metrics = metrics
        self.signer = Signer(key if key is not None else new_key())
        self.max_age_seconds = max_age_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._nonces = _Nonces(replay_memory)
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self.shadow = None  # services/shadow.Shadow when the server runs one: its calls' ids name the candidate

    def remember(self, model: str, version: str, prediction: Any) -> str:
        return self.remember_many(model, version, [prediction])[0]

    def remember_many(self, model: str, version: str, predictions: Any, native: Any = None) -> list[str]:
        """Signed ids for a batch of predictions (nothing is stored); `native`: the extension, to sign in Rust. A
        call the shadow took (its ticket, set by the servicer in this thread) gets format-2 ids naming the
        candidate, with the nonces its prediction is kept under."""
        ticket = self.shadow.take() if self.shadow is not None else None
        if ticket is not None and ticket[0] == model and len(ticket[2]) == 8 * len(predictions):
            return self.signer.sign_many(model, version, predictions, int(self.clock()), nonces=ticket[2],
                                         native=native, shadow_version=ticket[1])
        return self.signer.sign_many(model, version, predictions, int(self.clock()), native=native)

    def report(self, prediction_id: str, kind: str, actual: Any) -> tuple[str, str]:
        """Judge an outcome against the prediction its id carries and update that version's live accuracy."""
        p = self.signer.open(prediction_id)
        if p is None:
            shown = prediction_id if len(prediction_id) <= 80 else prediction_id[:80] + "..."
            raise PredictionNotFound(f"prediction_id: no prediction {shown!r} made by this service (malformed, "
                                     "altered, or signed with another outcome key)")
        age = self.clock() - p.made_at
        if age > self.max_age_seconds or age < -CLOCK_SKEW_SECONDS:
            raise PredictionNotFound(f"prediction_id: expired: made {age / 3600:.1f} h ago, outcomes are accepted "
                                     f"for {self.max_age_seconds / 3600:g} h")
        model, version, predicted = p.model, p.version, p.predicted
        expected = EXPECTED[model]
        if kind != expected:
            raise InvalidInput(f"outcome: a {model} prediction is judged by {expected}, got {kind or 'nothing'}")
        with self._lock:
            if not self._nonces.add(p.nonce):
                raise PredictionNotFound(f"prediction_id: already reported ({model} v{version})")
            figures, error, right = self._judge(model, version, predicted, actual)
            shadowed = None  # the candidate's prediction for this call, judged the same way
            if p.shadow_version and self.shadow is not None:
                theirs = self.shadow.prediction(p.nonce, p.shadow_version)
                if theirs is not None:
                    shadowed = self._judge(model, p.shadow_version, theirs, actual)
        self._publish(model, version, figures)
        if p.shadow_version and self.shadow is not None:
            if shadowed is not None:
                self._publish(model, p.shadow_version, shadowed[0])
                self.shadow.judged(model, p.shadow_version, version, error, shadowed[1], right, shadowed[2])
            else:
                self.shadow.judged(model, p.shadow_version, version, error, None)
        return model, version

    def _judge(self, model: str, version: str, predicted: Any, actual: Any) -> tuple[dict, float | None, bool]:
        """Account one outcome to a version's tally (the lock held): its figures now, this outcome's absolute
        percentage error (the forecaster) and whether the prediction was right (the classifiers)."""
        t = self._tallies.setdefault((model, version), _Tally())
        error = None
        if model == "bandwidth_predictor":  # actual > 0, checked by the servicer
            error = min(abs(predicted - actual) / actual * 100, APE_CAP_PCT)
            t.errors.append(error)
            figures = {"mape": sum(t.errors) / len(t.errors)}
            right = False
        elif model == "compression_selector":
            best, times = actual
            right = predicted == best
            t.errors.append(1.0 if right else 0.0)
            figures = {"accuracy": sum(t.errors) / len(t.errors)}
            if predicted in times:  # the share of effective throughput lost against the best choice
                t.regrets.append((1 - times[best] / times[predicted]) * 100)
            if t.regrets:
                figures["regret_pct"] = sum(t.regrets) / len(t.regrets)
        else:
            right = bool(predicted) == bool(actual)
            t.tp += predicted and actual
            t.fp += predicted and not actual
            t.fn += (not predicted) and actual
            figures = {}  # with no positive predicted (or none real) the figure is undefined: absent, not 0
            if t.tp + t.fp:
                figures["precision"] = t.tp / (t.tp + t.fp)
            if t.tp + t.fn:
                figures["recall"] = t.tp / (t.tp + t.fn)
        t.figures = figures
        t.count += 1
        return figures, error, right

    def _publish(self, model: str, version: str, figures: dict[str, float]) -> None:
        for metric, value in figures.items():
            self.metrics.live.labels(model, version, metric).set(value)
        self.metrics.outcomes.labels(model, version).inc()

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


def from_settings(metrics: Metrics, settings: Settings) -> OutcomeTracker:
    """The tracker a server runs with: the key from --outcome-key-file, else a random one for this process."""
    if settings.outcome_key_file:
        key = read_key(settings.outcome_key_file)
    else:
        key = None
        log.warning(
            "no --outcome-key-file: prediction ids are signed with a random key of this process; outcomes "
            "reported to another replica or worker, or after a restart, will be refused (NOT_FOUND)")
    if settings.outcome_capacity != Settings.outcome_capacity:  # the default
        log.warning("--outcome-capacity is deprecated and ignored: prediction ids are "
                                            "signed, no prediction is remembered")
    return OutcomeTracker(metrics, key, max_age_seconds=settings.outcome_max_age_seconds)


def with_shared_key(settings: Settings) -> Settings:
    """For `serve --workers N` without --outcome-key-file: one random key for all workers, written to a private
    temporary file (removed when the supervisor exits) that every worker is pointed at."""
    if settings.outcome_key_file:
        return settings
    log.warning(
        "no --outcome-key-file: the workers share a random key of this supervisor; outcomes reported to another "
        "replica, or after a restart, will be refused (NOT_FOUND)")
    folder = Path(tempfile.mkdtemp(prefix="dwcp-outcome-key-"))  # mode 0700
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(new_key().hex().encode())
    return dataclasses.replace(settings, outcome_key_file=path)
