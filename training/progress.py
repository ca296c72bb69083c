"""Progress for training runs: a tqdm bar with an ETA on a terminal (stderr), and plain lines with times and an
ETA that also reach logs, where bars are not drawn."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def bar(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T]:
    """`iterable` with a progress bar and ETA on stderr when it is a terminal; silent otherwise."""
    return iter(tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, leave=False,
                     dynamic_ncols=True, mininterval=0.5))


def log(line: str) -> None:
    """One progress line on stdout, clearing any bar drawn on the same terminal first."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def seconds(s: float) -> str:
    """A duration as a person reads it: 8.2s, 3m05s, 1h02m."""
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


class Eta:
    """Time per step and the time left, from the mean step so far."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.started = self.last = time.monotonic()

    def step(self) -> tuple[float, float]:
        """Mark one step done: (its seconds, the estimated seconds left)."""
        now = time.monotonic()
        took, self.last = now - self.last, now
        self.done += 1
        return took, (now - self.started) / self.done * (self.total - self.done)
