"""The current call's deadline, for the layers below the servicer (the runtime, the micro-batcher) that must not
compute for a caller that has given up. Set by servicers.rpc around each call; a ContextVar, so it follows the
call's own thread or task."""

from __future__ import annotations

import time
from contextvars import ContextVar, Token

_DEADLINE: ContextVar[float | None] = ContextVar("dwcp_inference_deadline", default=None)  # time.monotonic()


def start(remaining: float | None) -> Token:
    """The call has `remaining` seconds (None: no deadline)."""
    return _DEADLINE.set(None if remaining is None else time.monotonic() + remaining)


def end(token: Token) -> None:
    _DEADLINE.reset(token)


def current() -> float | None:
    return _DEADLINE.get()


def passed(at: float | None = None) -> bool:
    """Whether the deadline `at` (default: the current call's) has passed."""
    at = _DEADLINE.get() if at is None else at
    return at is not None and time.monotonic() >= at
