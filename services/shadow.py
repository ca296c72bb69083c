"""The shadow: the candidate version (stage staging, label `candidate`: policy.py) of a model runs on a sample of
that model's live calls beside the version that answers, never answering itself, and the outcomes reported for
those calls judge both (docs/continuous-training.md).

Off the caller's path: the servicer offers each decided call (`offer`); a sampled one (`shadow_fraction`) is put
on a bounded queue that one background thread drains, running the candidate on the same raw columns; a full queue
skips the call (counted). The answer's ids are signed in format 2 (prediction_ids.py), naming the candidate's
version beside the answering version's prediction, and the nonces of those ids key the shadow's predictions in a
bounded ledger of this process. An outcome reported for such an id (outcomes.py) judges the answering version from
the id and the candidate from the ledger: both versions' live tallies, and the paired comparison here, kept as
running sufficient statistics per (model, candidate, champion):

- the forecaster: n, mean and variance (Welford) of d = candidate's absolute percentage error - champion's;
- the classifiers: who was right (both, only the champion, only the candidate, neither), McNemar's table.
"""

from __future__ import annotations

import logging
import queue
import random
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from prometheus_client import Counter, Gauge

from .policy import CANDIDATE

log = logging.getLogger(__name__)

QUEUE = 64  # sampled calls waiting for the shadow thread; beyond: skipped
LEDGER = 100_000  # shadow predictions remembered per process, oldest forgotten first (about 10 MB at most)


@dataclass
class Pairing:
    """The running comparison of a candidate with one answering version."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean (Welford)
    both_right: int = 0
    only_champion_right: int = 0
    only_candidate_right: int = 0
    both_wrong: int = 0
    unmatched: int = 0

    def add_difference(self, d: float) -> None:
        self.n += 1
        delta = d - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (d - self.mean)

    def add_verdicts(self, champion_right: bool, candidate_right: bool) -> None:
        self.n += 1
        if champion_right and candidate_right:
            self.both_right += 1
        elif champion_right:
            self.only_champion_right += 1
        elif candidate_right:
            self.only_candidate_right += 1
        else:
            self.both_wrong += 1

    @property
    def variance(self) -> float:
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0


class _Ticket(threading.local):
    """The current call's shadow (set by `offer`, taken when its ids are signed): a call runs in one thread."""

    value: tuple[str, str, bytes] | None = None


def _predicted(model: str, answers: Any) -> list:
    """Each item's prediction as an id carries it (prediction_ids.Prediction.predicted)."""
    if model == "bandwidth_predictor":
        return [float(v) for v in np.asarray(answers.bandwidth_mbps, dtype=np.float32)]
    if model == "compression_selector":
        from .encode import CompressionReply
        from .prediction_ids import CODECS

        choices = CompressionReply(None, True, answers=answers).predicted()
        return [(CODECS[int(c)], int(lv)) for c, lv in zip(choices.codec, choices.level)]
    verdicts = answers.is_anomaly if model == "reliability_detector" else answers.is_high_latency
    return [bool(v) for v in np.asarray(verdicts)]


class Shadow:
    def __init__(self, repo: Any, metrics: Any, fraction: float, queue_size: int = QUEUE,
                 ledger_size: int = LEDGER, rng: Callable[[], float] = random.random):
        self.repo = repo
        self.fraction = fraction
        self.rng = rng
        self.ledger_size = ledger_size
        self._ticket = _Ticket()
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._ledger: OrderedDict[bytes, tuple[str, Any]] = OrderedDict()  # nonce -> (candidate, prediction)
        self._pairs: dict[tuple[str, str, str], Pairing] = {}
        self._calls: dict[tuple[str, str, str], int] = {}  # (model, candidate, result) -> count
        r = metrics.registry
        self.calls = Counter("dwcp_inference_shadow_calls_total",
                             "Sampled live calls for the candidate (shadow) version: shadowed (run), skipped (its "
                             "queue was full) or failed (the caller was answered regardless).",
                             ["model", "candidate", "result"], registry=r)
        self.paired = Counter("dwcp_inference_shadow_outcomes_total",
                              "Outcomes reported for shadowed calls, judging both versions; result: paired, or "
                              "unmatched (this process no longer holds the shadow's prediction).",
                              ["model", "candidate", "champion", "result"], registry=r)
        self.difference = Gauge("dwcp_inference_shadow_difference",
                                "Paired comparison of the candidate with the version that answered: the mean and "
                                "variance of (candidate's - champion's) absolute percentage error per outcome "
                                "(forecaster), or the classifiers' McNemar cells (both_right, only_champion_right, "
                                "only_candidate_right, both_wrong).",
                                ["model", "candidate", "champion", "statistic"], registry=r)
        self._thread = threading.Thread(target=self._drain, name="shadow", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the call's side

    def candidate(self, model: str, answering: str) -> Any:
        """The loaded candidate runtime of `model`, unless there is none, it answered this call, or it answers a
        share of the calls (a canary in the split: its outcomes are its own then)."""
        policy = self.repo.policies().get(model)
        version = policy.labels.get(CANDIDATE) if policy is not None else None
        if version is None or version == answering or \
                any(w > 0 and policy.labels.get(label) == version for label, w in policy.split.items()):
            return None
        return self.repo.loaded().get(model, {}).get(version)

    def offer(self, decide: Callable, rt: Any, columns: Any, items: int) -> None:
        """After `rt` decided a call: maybe queue the candidate on the same columns. Sets the call's ticket."""
        self._ticket.value = None
        if self.fraction <= 0 or self.rng() >= self.fraction:
            return
        cand = self.candidate(rt.name, rt.version)
        if cand is None:
            return
        nonces = secrets.token_bytes(8 * items)
        copied = {k: np.array(v, copy=True) for k, v in columns.items()}  # the call's buffers may be reused
        try:
            self._queue.put_nowait((decide, cand, copied, nonces))
        except queue.Full:
            self._count(rt.name, cand.version, "skipped")
            return
        self._ticket.value = (rt.name, cand.version, nonces)

    def take(self) -> tuple[str, str, bytes] | None:
        """The current call's (model, candidate version, nonces for its ids), once; None when the call is not
        shadowed."""
        ticket, self._ticket.value = self._ticket.value, None
        return ticket

    # ------------------------------------------------------------------ the shadow thread

    def _drain(self) -> None:
        while True:
            job = self._queue.get()
            try:
                self._run(*job)
            finally:
                self._queue.task_done()

    def _run(self, decide: Callable, cand: Any, columns: Any, nonces: bytes) -> None:
        try:
            predicted = _predicted(cand.name, decide(cand, columns))
        except Exception as e:  # noqa: BLE001 - a shadow's failure never reaches a caller
            log.warning("shadow %s v%s failed: %s", cand.name, cand.version, e)
            self._count(cand.name, cand.version, "failed")
            return
        with self._lock:
            for i, value in enumerate(predicted):
                self._ledger[nonces[8 * i:8 * i + 8]] = (cand.version, value)
            while len(self._ledger) > self.ledger_size:
                self._ledger.popitem(last=False)
        self._count(cand.name, cand.version, "shadowed")

    def wait_idle(self, timeout: float = 5.0) -> None:
        """For tests and benchmarks: until the queue is empty (or `timeout`)."""
        import time

        end = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.005)

    def _count(self, model: str, candidate: str, result: str) -> None:
        with self._lock:
            key = (model, candidate, result)
            self._calls[key] = self._calls.get(key, 0) + 1
        self.calls.labels(model, candidate, result).inc()

    # ------------------------------------------------------------------ the outcome's side

    def prediction(self, nonce: bytes, candidate: str) -> Any:
        """The shadow's prediction for the call whose id has this nonce (once), or None."""
        with self._lock:
            found = self._ledger.pop(nonce, None)
        return found[1] if found is not None and found[0] == candidate else None

    def judged(self, model: str, candidate: str, champion: str, champion_error: float | None,
               candidate_error: float | None, champion_right: bool | None = None,
               candidate_right: bool | None = None) -> None:
        """One outcome judged both versions (errors for the forecaster, right or wrong for the classifiers);
        `candidate_error` and `candidate_right` None: the shadow's prediction was not found (unmatched)."""
        key = (model, candidate, champion)
        with self._lock:
            p = self._pairs.setdefault(key, Pairing())
            if candidate_error is None and candidate_right is None:
                p.unmatched += 1
                result = "unmatched"
            elif candidate_error is not None:
                p.add_difference(candidate_error - champion_error)
                result = "paired"
            else:
                p.add_verdicts(bool(champion_right), bool(candidate_right))
                result = "paired"
            stats = {"mean": p.mean, "variance": p.variance} if model == "bandwidth_predictor" else {
                "both_right": p.both_right, "only_champion_right": p.only_champion_right,
                "only_candidate_right": p.only_candidate_right, "both_wrong": p.both_wrong}
        self.paired.labels(model, candidate, champion, result).inc()
        if result == "paired":
            for name, value in stats.items():
                self.difference.labels(model, candidate, champion, name).set(value)

    def forget(self, model: str, version: str) -> None:
        """A version was unloaded: drop the comparisons it was part of, and their series."""
        with self._lock:
            gone = [k for k in self._pairs if k[0] == model and version in k[1:]]
            for k in gone:
                del self._pairs[k]
            calls = [k for k in self._calls if k[0] == model and k[1] == version]
            for k in calls:
                del self._calls[k]
        for metric in (self.paired, self.difference, self.calls):
            for labels in list(_series(metric)):
                if labels[0] == model and version in labels[1:3]:
                    try:
                        metric.remove(*labels)
                    except KeyError:
                        pass

    def comparisons(self, model: str = "") -> list[dict[str, Any]]:
        """Every comparison (of `model`, or all), with the calls counted for its candidate."""
        with self._lock:
            out = []
            for (m, cand, champ), p in sorted(self._pairs.items()):
                if model and m != model:
                    continue
                out.append({"model": m, "candidate": cand, "champion": champ, "outcomes": p.n,
                            "mean_difference": p.mean, "variance_difference": p.variance,
                            "both_right": p.both_right, "only_champion_right": p.only_champion_right,
                            "only_candidate_right": p.only_candidate_right, "both_wrong": p.both_wrong,
                            "unmatched": p.unmatched,
                            **{r: self._calls.get((m, cand, r), 0) for r in ("shadowed", "skipped", "failed")}})
            seen = {(c["model"], c["candidate"]) for c in out}
            for (m, cand, r) in sorted({(k[0], k[1], "") for k in self._calls}):
                if (m, cand) not in seen and (not model or m == model):  # shadowed, no outcome yet
                    out.append({"model": m, "candidate": cand, "champion": "", "outcomes": 0,
                                **{x: self._calls.get((m, cand, x), 0) for x in ("shadowed", "skipped", "failed")}})
            return out


def _series(metric: Any) -> list[tuple[str, ...]]:
    """The label values of a labelled metric's children."""
    with metric._lock:  # prometheus_client keeps them here; no public listing
        return list(metric._metrics)
