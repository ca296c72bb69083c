"""The inference port's transport: a grpc.aio server on its own event loop, in a dedicated thread.

A call costs no thread until its request has arrived (a client that opens calls and never sends the request holds
only a stream), so half-open calls cannot starve anyone. Each inference call is then admitted or shed by our own
bound (`max_concurrent_rpcs`, counting calls computing or waiting for a worker thread), and runs the sync servicer
method in a pool of `threads` workers, which micro-batching (batching.py) relies on; single calls of one RPC that
wait at the same time are computed together as one batch (`Coalescer`). Health and reflection are answered on the
loop and never count against that bound."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import threading
import time
from typing import Any, Callable, Coroutine

import grpc
from grpc_health.v1 import _async as health_async

from .metrics import Metrics


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop (libuv; grpc.aio runs on any asyncio loop): grpc.aio's Python side is most of a call's
    work, and on uvloop PredictBandwidth's QPS at 64 in flight measured 1.11x-1.16x (bench/performance-notes.md).
    asyncio's own loop where uvloop is not installed (it is a dependency, but has no Windows build)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LoopThread:
    """An asyncio event loop running in its own daemon thread; `run` calls a coroutine on it from any thread."""

    def __init__(self, name: str = "grpc-aio"):
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine, timeout: float | None = None) -> Any:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("LoopThread.run called from its own loop")
        if self.loop.is_closed():
            coro.close()
            raise RuntimeError("the event loop has stopped")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Cancel what is left on the loop (calls cut by a server's stop), let it unwind, stop the loop."""
        try:
            self.run(_cancel_the_rest(), timeout=10)
        except (RuntimeError, concurrent.futures.TimeoutError):
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


async def _cancel_the_rest() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class SharedHealth:
    """grpc.health.v1 for aio servers (the inference and health ports share it), set from any thread."""

    def __init__(self, loop: LoopThread):
        self._loop = loop
        self.servicer: health_async.HealthServicer = loop.run(_make_health())

    def set(self, service: str, status: int) -> None:
        try:
            self._loop.run(self.servicer.set(service, status), timeout=10)
        except RuntimeError:  # the server has stopped: nobody is asking any more
            pass

    def get(self, service: str) -> int | None:
        return self.servicer._server_status.get(service)


async def _make_health() -> health_async.HealthServicer:
    return health_async.HealthServicer()  # made on the loop: its conditions belong there


class Aborted(Exception):
    """Raised by CallContext.abort in a worker thread; the async handler turns it into the call's status."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


class CallContext:
    """What the sync servicer methods use of a grpc.ServicerContext, safe to call from a worker thread."""

    def __init__(self, time_remaining: float | None):
        self._deadline = None if time_remaining is None else time.monotonic() + time_remaining

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


class Admission:
    """Calls admitted at once (computing or queued for a worker). Touched only on the event loop: no lock."""

    def __init__(self, limit: int):
        self.limit = max(limit, 1)
        self.admitted = 0

    def enter(self) -> bool:
        if self.admitted >= self.limit:
            return False
        self.admitted += 1
        return True

    def leave(self) -> None:
        self.admitted -= 1


class Coalescer:
    """The single calls of one RPC that wait at the same time, computed together. A drain in the pool (one per RPC
    at a time) takes every call queued, up to `max_calls`: one runs alone as ever (`method(request, context)`),
    several go to `many(requests, contexts)` (an answer or an `Aborted` each); all are answered by one callback on
    the loop, and the drain is queued again while calls are left. A call finding nothing queued runs alone."""

    def __init__(self, name: str, method: Callable, many: Callable, max_calls: int,
                 pool: concurrent.futures.Executor, admission: Admission, metrics: Metrics):
        self.name, self.method, self.many, self.max_calls = name, method, many, max_calls
        self.pool, self.admission, self.metrics = pool, admission, metrics
        self._queue: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._draining = False

    def put(self, loop: asyncio.AbstractEventLoop, request: Any, context: CallContext,
            answer: asyncio.Future) -> None:
        """Queue a call (on the loop); `answer` gets its response, or its Aborted as the exception."""
        with self._lock:
            self._queue.append((request, context, answer))
            if self._draining:
                return
            self._draining = True
        self.pool.submit(self._drain, loop)

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """One batch of the calls queued; then, if more came meanwhile, the next drain goes to the back of the
        pool's queue: another RPC's calls waiting for a thread are not held back by a busy one."""
        with self._lock:
            calls = [self._queue.popleft() for _ in range(min(len(self._queue), self.max_calls))]
        live = [call for call in calls if not call[2].cancelled()]  # cancelled while queued: never computed
        self._count_expired([call for call in calls if call[2].cancelled()])
        try:
            if len(live) == 1:
                results = [run_alone(self.method, *live[0][:2])]
            else:
                results = self.many([c[0] for c in live], [c[1] for c in live]) if live else []
        except BaseException as e:  # noqa: BLE001 - every caller gets it rather than waiting forever
            results = [e] * len(live)
        _call_soon(loop, functools.partial(self._answer, calls, live, results))
        with self._lock:
            if not self._queue:
                self._draining = False
                return
        self.pool.submit(self._drain, loop)

    def _count_expired(self, cancelled: list) -> None:
        """Calls whose deadline passed while they queued count as DEADLINE_EXCEEDED, as those the servicer finds
        expired do; a call its caller cancelled is not counted."""
        for _, context, _ in cancelled:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                self.metrics.child(self.metrics.requests, self.name, grpc.StatusCode.DEADLINE_EXCEEDED.name).inc()

    def _answer(self, calls: list, live: list, results: list) -> None:
        """On the loop: each computed call's answer, and every taken call's place in the admission bound back."""
        for (_, _, answer), result in zip(live, results):
            if not answer.done():
                if isinstance(result, BaseException):
                    answer.set_exception(result)
                else:
                    answer.set_result(result)
        for _ in calls:
            self.admission.leave()


def run_alone(method: Callable, request: Any, context: CallContext) -> Any:
    """`method(request, context)`'s answer, or the exception it raised (an Aborted mostly: the call's status)."""
    try:
        return method(request, context)
    except BaseException as e:  # noqa: BLE001 - the caller answers it as the call's status
        return e


def threaded_handler(name: str, method: Callable, pool: concurrent.futures.Executor, admission: Admission,
                     metrics: Metrics, many: Callable | None = None, max_calls: int = 1) -> Callable:
    """An async unary handler running the sync `method(request, context)` in `pool`, beyond the admission bound
    answering RESOURCE_EXHAUSTED at once (counted like every other answer, in dwcp_inference_requests_total).
    With `many` and `max_calls` > 1, calls that wait at the same time are computed together (Coalescer)."""
    coalescer = (Coalescer(name, method, many, max_calls, pool, admission, metrics) if many and max_calls > 1
                 else None)

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if not admission.enter():
            metrics.child(metrics.requests, name, grpc.StatusCode.RESOURCE_EXHAUSTED.name).inc()
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{name}: the server is at its limit of {admission.limit} calls at once; retry later")
        loop = asyncio.get_running_loop()
        call = CallContext(context.time_remaining())
        # A call's place is released when its work ends, not when the caller goes: a cancelled call still
        # computing holds its place; one cancelled while queued is never computed.
        if coalescer is not None:
            answer = loop.create_future()
            coalescer.put(loop, request, call, answer)
        else:
            work = pool.submit(method, request, call)
            work.add_done_callback(lambda _: _call_soon(loop, admission.leave))
            answer = asyncio.wrap_future(work)
        try:
            return await answer
        except Aborted as e:
            await context.abort(e.code, e.details)

    return handle


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable) -> None:
    try:
        loop.call_soon_threadsafe(callback)
    except RuntimeError:  # the loop has stopped with the server
        pass
