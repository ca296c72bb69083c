"""Micro-batching: concurrent calls to one model version gathered into one call of validation, feature pipeline
and onnxruntime (each call brings raw columns: a dict of arrays whose first axis is its items; the work answers a
result that can be cut by rows, e.g. runtime.Computed: the features and the outputs).

A call that finds the version idle runs at once, alone: nothing is held back when nothing else is queued.
Calls that arrive while a batch runs queue; when it ends, the first of them leads the next batch and takes the
queue with it (up to `max_rows` rows), after waiting up to `max_wait_us` for more if the batch is not full.
Each call gets its own rows of the result; a call whose deadline passed while it queued is dropped from its batch
(answered DEADLINE_EXCEEDED, not computed). If a batch fails, its calls run again one by one, so a bad input
fails only its own call.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from . import deadline
from .errors import DeadlineExpired

Columns = dict[str, np.ndarray]


class Rows(Protocol):
    """A batch's result: `rows(start, stop)` is the part for those input rows."""

    def rows(self, start: int, stop: int) -> "Rows": ...


# (model, rows in the onnxruntime call, seconds the call waited in the queue), per call
Observer = Callable[[str, int, float], None]


@dataclass(frozen=True)
class BatchPolicy:
    max_rows: int = 256      # rows (items) per onnxruntime call; 0 or 1 turns batching off
    max_wait_us: int = 0     # extra wait for company once there is a queue; 0: never wait
    observe: Observer | None = None


class _Call:
    __slots__ = ("x", "rows", "shape", "queued", "deadline", "result", "error", "lead", "event")

    def __init__(self, x: Columns):
        self.x = x
        self.rows = len(next(iter(x.values())))
        self.shape = tuple((k, v.shape[1:]) for k, v in x.items())
        self.queued = time.perf_counter()
        self.deadline = deadline.current()  # time.monotonic() by which the caller wants its answer, or None
        self.result: Rows | None = None
        self.error: BaseException | None = None
        self.lead = False
        self.event = threading.Event()


class MicroBatcher:
    def __init__(self, model: str, run: Callable[[Columns], Rows], policy: BatchPolicy):
        self.model = model
        self._run = run
        self.policy = policy
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._queue: deque[_Call] = deque()
        self._busy = False
        self._gathering = False  # a leader waits for company (max_wait_us)

    def __call__(self, x: Columns) -> Rows:
        call = _Call(x)
        with self._lock:
            if self._busy:
                self._queue.append(call)
                if self._gathering:
                    self._arrived.notify()
            else:
                self._busy = call.lead = True
        if not call.lead:
            call.event.wait()
            if not call.lead:  # answered by another call's batch
                if call.error is not None:
                    raise call.error
                assert call.result is not None
                return call.result
        self._lead(call)
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result

    def _lead(self, first: _Call) -> None:
        batch, rows = [first], first.rows
        with self._lock:
            rows = self._take(batch, rows)
            if self.policy.max_wait_us > 0 and len(batch) > 1 and rows < self.policy.max_rows:
                deadline = time.perf_counter() + self.policy.max_wait_us / 1e6
                self._gathering = True
                while rows < self.policy.max_rows and (left := deadline - time.perf_counter()) > 0:
                    self._arrived.wait(left)
                    rows = self._take(batch, rows)
                self._gathering = False
        try:
            self._compute(batch)
        except BaseException as e:  # noqa: BLE001 - e.g. an observer failing: no call may wait forever
            for c in batch:
                if c.result is None and c.error is None:
                    c.error = e
        finally:
            with self._lock:
                if self._queue:
                    nxt = self._queue.popleft()
                    nxt.lead = True
                    nxt.event.set()
                else:
                    self._busy = False
            for call in batch[1:]:
                call.event.set()

    def _take(self, batch: list[_Call], rows: int) -> int:
        """Move queued calls into the batch while they fit (and share its columns and their trailing shapes)."""
        shape = batch[0].shape
        while self._queue and rows + self._queue[0].rows <= self.policy.max_rows and self._queue[0].shape == shape:
            call = self._queue.popleft()
            batch.append(call)
            rows += call.rows
        return rows

    def _compute(self, batch: list[_Call]) -> None:
        expired = [c for c in batch if deadline.passed(c.deadline)]
        for c in expired:  # the caller gave up while it queued: its rows are not computed
            c.error = DeadlineExpired("the deadline passed before the model ran")
        if expired:
            batch = [c for c in batch if c.error is None]
            if not batch:
                return
        started = time.perf_counter()
        rows = sum(c.rows for c in batch)
        if self.policy.observe:
            for c in batch:
                self.policy.observe(self.model, rows, started - c.queued)
        if len(batch) == 1:
            self._alone(batch[0])
            return
        try:
            out = self._run({k: np.concatenate([c.x[k] for c in batch]) for k in batch[0].x})
        except Exception:  # find the call that broke it (a bad value, an onnxruntime error): each runs alone
            for c in batch:
                self._alone(c)
            return
        start = 0
        for c in batch:
            c.result = out.rows(start, start + c.rows)
            start += c.rows

    def _alone(self, call: _Call) -> None:
        try:
            call.result = self._run(call.x)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread, raised there
            call.error = e
