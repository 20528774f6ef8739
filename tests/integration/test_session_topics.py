"""A test session deletes the topics it created, and only those (tests/integration/conftest.py
calls ``remove_session_topics``, which calls ``loadgen.delete_topics`` with the session's
prefix, at its end)."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from events.devtools import stack
from events.devtools.loadgen import delete_topics
from events.kafka import kafka_options
from events.service.settings import Settings
from tests.helpers.live import SESSION_TOPICS, own_topics

pytestmark = pytest.mark.stack


async def topics(settings: Settings) -> set[str]:
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def test_every_topic_of_the_session_starts_with_its_prefix(settings: Settings) -> None:
    names = own_topics()
    for key in ("commands_topic", "lifecycle_topic", "results_topic", "dlq_topic"):
        assert names[key].startswith(SESSION_TOPICS), names[key]
        assert settings.model_dump()[key].startswith(SESSION_TOPICS)
    assert own_topics()["commands_topic"] != names["commands_topic"]


async def test_deleting_a_prefix_removes_those_topics_and_no_other(settings: Settings) -> None:
    # Not hex after the session's prefix: no topic of the session's own has this prefix.
    prefix = f"{SESSION_TOPICS}gc{secrets.token_hex(2)}"
    doomed = settings.model_copy(
        update={
            "commands_topic": f"{prefix}.commands",
            "lifecycle_topic": f"{prefix}.lifecycle",
            "results_topic": f"{prefix}.results",
            "dlq_topic": f"{prefix}.dlq",
        }
    )
    await stack.ensure_topics(doomed, doomed.kafka_bootstrap_servers, lambda line: None)
    made = {doomed.commands_topic, doomed.lifecycle_topic, doomed.results_topic, doomed.dlq_topic}
    assert made <= await topics(settings)

    deleted = await delete_topics(kafka_options(settings), prefix)

    assert set(deleted) == made
    for _ in range(50):  # the broker's metadata may lag its answer a little
        left = await topics(settings)
        if not made & left:
            break
        await asyncio.sleep(0.1)
    assert not made & left
    assert settings.commands_topic in left and settings.results_topic in left
