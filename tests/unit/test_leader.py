"""The keep-alive of a leader's session: it speaks while the leader works, and stops the work
when the session is gone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from events.service import db
from events.service.leader import LeadershipLost, kept_alive


class _Session:
    """A leader's session that answers ``answers`` statements, then is gone."""

    def __init__(self, answers: int) -> None:
        self.answers = answers
        self.statements = 0
        self.spoken = asyncio.Event()

    async def fetchval(self, query: str, *args: Any) -> int:
        self.statements += 1
        self.spoken.set()
        if self.statements > self.answers:
            raise ConnectionResetError("the session is gone")
        return 1


@pytest.fixture(autouse=True)
def _short_idle_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "LEADER_IDLE_TIMEOUT_SECONDS", 0.03)  # a statement every 10 ms


async def test_the_session_is_spoken_on_while_the_leader_works() -> None:
    session = _Session(answers=1_000_000)
    async with kept_alive(session):  # type: ignore[arg-type]
        await asyncio.wait_for(session.spoken.wait(), 10)  # the work: waits for the keep-alive
    assert session.statements >= 1


async def test_a_lost_session_cancels_the_work_and_says_so() -> None:
    session = _Session(answers=2)
    finished = False
    with pytest.raises(LeadershipLost):
        async with kept_alive(session):  # type: ignore[arg-type]
            await asyncio.sleep(3600)  # the work: would outlast the session by far
            finished = True
    assert not finished
    assert session.statements == 3
    # The task was not left cancelled: it goes on (the leader tries again).
    await asyncio.sleep(0)
