"""Static group membership (``SYNCLIFE_GROUP_INSTANCE_ID``): a ``serve`` that goes away and
comes back with the same id gets its partitions back without a rebalance of the others.

Two ``Service`` instances in one group on topics of their own (two partitions, one each). The
first stops and a new one starts with its settings. With static membership the stop does not
leave the group (aiokafka sends no LeaveGroup for a static member: to the group it looks like
a SIGKILL), and the broker hands the same assignment to the returning instance at the same
generation: the other member sees nothing. With dynamic membership (the control) the other
member goes through rebalances."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from events.service.app import Service
from events.service.settings import Settings
from tests.helpers.live import running, with_own_topics

pytestmark = pytest.mark.stack

WAIT_SECONDS = 60.0  # each step is awaited this long at most (not a timed assertion)


async def _until(condition: Any, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while not condition():
        assert loop.time() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


def _assigned(service: Service) -> set[Any]:
    return set(service._consumer.assignment()) if service._consumer is not None else set()


def _generation(service: Service) -> int:
    assert service._consumer is not None
    return int(service._consumer._coordinator.generation)


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
async def test_a_member_back_with_its_instance_id_gets_its_partitions_without_a_rebalance(
    settings: Settings, static: bool
) -> None:
    own = await with_own_topics(settings, topic_partitions=2, apply_concurrency=1)

    def member(name: str) -> Service:
        update = {"client_id": name, "group_instance_id": f"{name}-slot" if static else None}
        return Service(own.model_copy(update=update), schedule=False)

    other = member("other")
    revocations = 0
    settle = other.settle_lanes

    async def counting_settle(within: float = 10.0) -> None:  # called by each revocation
        nonlocal revocations
        revocations += 1
        await settle(within)

    other.settle_lanes = counting_settle  # type: ignore[method-assign]
    async with running(other):
        first = member("first")
        async with running(first):
            await _until(
                lambda: len(_assigned(first)) == 1 and len(_assigned(other)) == 1,
                "one partition each",
            )
            theirs = _assigned(first)
            generation, before = _generation(other), revocations
        # Gone (to the group: as if killed); back with the same settings.
        back = member("first")
        async with running(back):
            await _until(lambda: _assigned(back) == theirs, "its partition back")
            await _until(lambda: len(_assigned(other)) == 1, "the other keeps one")
            if static:
                assert _generation(other) == generation
                assert revocations == before
                assert _generation(back) == generation
            else:  # the control: the same steps rebalance the other member
                assert _generation(other) > generation
                assert revocations > before
