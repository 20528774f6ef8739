"""The retry helper: exponential bounds with full jitter, capped, immediate retries first, a
budget of attempts or seconds, and ``stop`` ending a wait at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from events.service.retry import Backoff, Retrying


def test_bounds_double_up_to_the_cap_after_the_immediate_retries() -> None:
    b = Backoff(base=0.1, cap=1.0, immediate=2)
    assert [b.bound(n) for n in range(1, 8)] == [0.0, 0.0, 0.1, 0.2, 0.4, 0.8, 1.0]
    assert b.bound(10_000) == 1.0  # no overflow however many failures


def test_full_jitter_draws_between_zero_and_the_bound() -> None:
    b = Backoff(base=0.5, cap=4.0)
    assert b.delay(3, rng=lambda: 0.0) == 0.0
    assert b.delay(3, rng=lambda: 0.5) == 1.0
    assert b.delay(3, rng=lambda: 0.999) == pytest.approx(1.998)


@pytest.mark.parametrize(
    "kwargs",
    [{"base": 0}, {"base": 2.0, "cap": 1.0}, {"attempts": 0}, {"deadline": -1}, {"immediate": -1}],
)
def test_a_nonsense_backoff_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Backoff"):
        Backoff(**kwargs)


async def test_attempts_bound_the_loop() -> None:
    retrying = Retrying(Backoff(base=0.001, cap=0.001, attempts=3))
    answers = [await retrying.wait() for _ in range(4)]
    # Three attempts in all: two retries after the first two failures, none after the third.
    assert answers == [True, True, False, False]
    assert retrying.exhausted()
    retrying.reset()
    assert not retrying.exhausted()
    assert await retrying.wait()


async def test_a_deadline_bounds_the_loop_and_no_wait_goes_past_it() -> None:
    retrying = Retrying(Backoff(base=60, cap=60, deadline=0.05), rng=lambda: 1.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await retrying.wait()  # a 60 s wait cut at the deadline
    assert not await retrying.wait()
    assert loop.time() - started < 30


async def test_stop_ends_a_wait_at_once_and_refuses_the_next() -> None:
    stop = asyncio.Event()
    retrying = Retrying(Backoff(base=3600, cap=3600), stop, rng=lambda: 1.0)
    waiting = asyncio.create_task(retrying.wait())
    await asyncio.sleep(0)
    stop.set()
    assert await asyncio.wait_for(waiting, 5) is False
    assert retrying.stopped
    assert await retrying.wait() is False


async def test_no_budget_retries_until_stopped() -> None:
    stop = asyncio.Event()
    retrying = Retrying(Backoff(base=0.001, cap=0.001), stop)
    assert all([await retrying.wait() for _ in range(50)])
    stop.set()
    assert not await retrying.wait()
