"""`serve --workers N`: N server processes on one port (the kernel spreads connections over them with
SO_REUSEPORT), supervised: a worker that dies is replaced; SIGTERM drains them all.

Worker i serves metrics on metrics_port + i; only worker 0 serves the admin API (the others follow its policy
changes through the repository, within poll_seconds). Each worker's onnxruntime sessions use session_threads."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from dataclasses import replace
from typing import Any

from .settings import Settings

log = logging.getLogger(__name__)


def _worker(settings: Settings, index: int) -> None:
    from .server import serve

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker{index} %(levelname)s %(name)s: %(message)s")
    serve(settings)


def _settings_for(settings: Settings, index: int) -> Settings:
    metrics = settings.metrics_port + index if settings.metrics_port > 0 else settings.metrics_port
    return replace(settings, workers=1, metrics_port=metrics, admin_port=settings.admin_port if index == 0 else -1)


def supervise(settings: Settings) -> None:
    if settings.port == 0:
        raise ValueError("--workers needs a fixed --port: every worker must listen on the same one")
    ctx = multiprocessing.get_context("spawn")
    procs: dict[int, Any] = {}
    stopping = False

    def start(i: int) -> None:
        p = ctx.Process(target=_worker, args=(_settings_for(settings, i), i), name=f"dwcp-worker-{i}", daemon=False)
        p.start()
        procs[i] = p
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
    while not stopping:
        time.sleep(0.2)
        for i, p in list(procs.items()):
            if not stopping and not p.is_alive():
                restarts += 1
                log.error("worker %d (pid %s) exited with %s; starting a new one (restart %d)", i, p.pid,
                          p.exitcode, restarts)
                start(i)
    for p in procs.values():
        p.join(settings.grace_seconds + 5)
    print("dwcp-inference stopped", flush=True)
