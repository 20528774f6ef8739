"""Bounded retries with jitter: the one backoff every retry loop of the service uses.

``Backoff`` says how long to wait before each next attempt (exponential, capped, with full
jitter: a random wait between 0 and the exponential bound, so that processes failing at the
same moment do not come back at the same moment) and when to give up (after ``attempts``
attempts or ``deadline`` seconds after the first failure, whichever comes first; neither:
until ``stop``).
``Retrying`` is one loop's state: ``await retrying.wait()`` sleeps the next delay and answers
whether to try again (False once the budget is spent or ``stop`` is set, at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff", "Retrying"]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, a cap, and a budget of attempts or seconds."""

    base: float = 0.1  # the bound of the first wait (seconds)
    cap: float = 5.0  # the longest wait
    attempts: int | None = None  # attempts in all (the first included); None: no limit
    deadline: float | None = None  # seconds from the first failure; None: no limit
    immediate: int = 0  # the first this many retries go at once (no wait)

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError("Backoff needs 0 < base <= cap")
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("Backoff.attempts must be at least 1")
        if self.deadline is not None and self.deadline < 0:
            raise ValueError("Backoff.deadline must not be negative")
        if self.immediate < 0:
            raise ValueError("Backoff.immediate must not be negative")

    def bound(self, failures: int) -> float:
        """The longest wait after ``failures`` failed attempts (1, 2, ...): 0 for the first
        ``immediate`` ones, then ``base``, doubling, up to ``cap``."""
        waited = failures - self.immediate
        if waited < 1:
            return 0.0
        return min(self.cap, math.ldexp(self.base, min(waited - 1, 62)))

    def delay(self, failures: int, rng: Callable[[], float] = random.random) -> float:
        """A wait between 0 and ``bound(failures)`` (full jitter)."""
        return rng() * self.bound(failures)


class Retrying:
    """One retry loop: count the failures, wait between attempts, say when to give up."""

    def __init__(
        self,
        backoff: Backoff,
        stop: asyncio.Event | None = None,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.backoff = backoff
        self.stop = stop
        self.failures = 0
        self._rng = rng
        self._started: float | None = None

    @property
    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def reset(self) -> None:
        """An attempt succeeded: the next failure starts from the first wait again."""
        self.failures = 0
        self._started = None

    def exhausted(self) -> bool:
        """The budget is spent: no attempt is left, or the deadline has passed."""
        b = self.backoff
        if b.attempts is not None and self.failures >= b.attempts:
            return True
        return b.deadline is not None and self._elapsed() >= b.deadline

    async def wait(self) -> bool:
        """After a failed attempt: wait the next delay, then True to try again; False (at
        once, or as soon as ``stop`` is set) when the budget is spent or the loop is stopped.
        The wait never goes past the deadline."""
        loop = asyncio.get_running_loop()
        if self._started is None:
            self._started = loop.time()
        self.failures += 1
        if self.stopped or self.exhausted():
            return False
        delay = self.backoff.delay(self.failures, self._rng)
        if self.backoff.deadline is not None:
            delay = min(delay, max(0.0, self.backoff.deadline - self._elapsed()))
        if delay <= 0:
            await asyncio.sleep(0)  # an immediate retry still lets the rest of the loop run
            return not self.stopped
        if self.stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)
        return not self.stopped

    def _elapsed(self) -> float:
        if self._started is None:
            return 0.0
        return asyncio.get_running_loop().time() - self._started
