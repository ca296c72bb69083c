"""`serve --workers N`: N server processes on one port (the kernel spreads connections over them with
SO_REUSEPORT), supervised: a worker that dies after it was serving is replaced at once; one that fails at start is
started again after a back-off (0.5 s doubling to 30 s), and when one fails at start 5 times within 60 s the
supervisor stops them all and exits 1 with one line saying why, so systemd or Kubernetes see the failure.
SIGTERM drains them all.

Worker i serves metrics on metrics_port + i; only worker 0 serves the admin API (the others follow its policy
changes through the repository, within poll_seconds). Each worker's onnxruntime sessions use session_threads."""

from __future__ import annotations

import collections
import logging
import multiprocessing
import signal
import sys
import time
from dataclasses import replace
from typing import Any

from . import logs
from .settings import Settings

log = logging.getLogger(__name__)


BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
GIVE_UP_FAILURES = 5        # failed starts of one worker within GIVE_UP_WINDOW_SECONDS: the supervisor exits 1
GIVE_UP_WINDOW_SECONDS = 60.0


def _worker(settings: Settings, index: int, ready: Any = None) -> None:
    from .server import serve

    logs.setup(settings.log_level, settings.log_format, worker=index)
    serve(settings, ready=ready.set if ready is not None else None)


class StartFailures:
    """One worker's starts that ended before it was serving: how long to wait before the next start, and whether
    to give up. Serving once clears the record."""

    def __init__(self) -> None:
        self.in_a_row = 0
        self.recent: collections.deque[float] = collections.deque()  # start times of failed starts

    def serving(self) -> None:
        self.in_a_row = 0
        self.recent.clear()

    def failed(self, started_at: float, now: float) -> float | None:
        """Record a failed start; the delay before the next one, or None to give up."""
        self.in_a_row += 1
        self.recent.append(started_at)
        while self.recent and now - self.recent[0] > GIVE_UP_WINDOW_SECONDS:
            self.recent.popleft()
        if len(self.recent) >= GIVE_UP_FAILURES:
            return None
        return min(BACKOFF_FIRST_SECONDS * 2 ** (self.in_a_row - 1), BACKOFF_MAX_SECONDS)


def _settings_for(settings: Settings, index: int) -> Settings:
    metrics = settings.metrics_port + index if settings.metrics_port > 0 else settings.metrics_port
    return replace(settings, workers=1, metrics_port=metrics, admin_port=settings.admin_port if index == 0 else -1)


def supervise(settings: Settings) -> None:
    if settings.port == 0:
        raise ValueError("--workers needs a fixed --port: every worker must listen on the same one")
    from .outcomes import with_shared_key

    settings = with_shared_key(settings)  # every worker signs and checks prediction ids with one key
    ctx = multiprocessing.get_context("spawn")
    procs: dict[int, Any] = {}
    ready: dict[int, Any] = {}          # set by the worker once it serves
    started: dict[int, float] = {}
    due: dict[int, float] = {}          # workers waiting out a back-off: when to start them
    failures = {i: StartFailures() for i in range(settings.workers)}
    stopping = False

    def start(i: int) -> None:
        ready[i] = ctx.Event()
        p = ctx.Process(target=_worker, args=(_settings_for(settings, i), i, ready[i]), name=f"dwcp-worker-{i}",
                        daemon=False)
        p.start()
        procs[i], started[i] = p, time.monotonic()
        print(f"worker {i} pid {p.pid}", flush=True)

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for p in procs.values():
            if p.is_alive():
                p.terminate()  # SIGTERM: each worker drains its in-flight calls

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for i in range(settings.workers):
        start(i)
    print(f"dwcp-inference supervising {settings.workers} workers on {settings.host}:{settings.port}", flush=True)
    restarts = 0
    gave_up = ""
    while not stopping and not gave_up:
        time.sleep(0.2)
        now = time.monotonic()
        for i, when in list(due.items()):
            if not stopping and now >= when:
                del due[i]
                start(i)
        for i, p in list(procs.items()):
            if stopping or gave_up or i in due or p.is_alive():
                continue
            restarts += 1
            if ready[i].is_set():  # it was serving: replace it at once
                failures[i].serving()
                log.error("worker %d (pid %s) exited with %s; starting a new one (restart %d)", i, p.pid,
                          p.exitcode, restarts)
                start(i)
                continue
            delay = failures[i].failed(started[i], now)
            if delay is None:
                gave_up = (f"dwcp-inference: worker {i} failed at start {GIVE_UP_FAILURES} times within "
                           f"{GIVE_UP_WINDOW_SECONDS:.0f} s (last exit code {p.exitcode}), never serving; giving up "
                           "(see the worker's error above)")
                break
            log.error("worker %d (pid %s) exited with %s before serving; starting it again in %.1f s (restart %d)",
                      i, p.pid, p.exitcode, delay, restarts)
            due[i] = now + delay
    if gave_up:
        for p in procs.values():
            if p.is_alive():
                p.terminate()
    for p in procs.values():
        p.join(settings.grace_seconds + 5)
    if gave_up:
        print(gave_up, file=sys.stderr, flush=True)
        raise SystemExit(1)
    print("dwcp-inference stopped", flush=True)
