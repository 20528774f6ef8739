"""`stack up --cluster` after a failover refuses to drop the promoted server's data."""

from __future__ import annotations

from pathlib import Path

import pytest

from events.devtools.stack.files import StackPaths
from events.devtools.stack.standby import PgPair, PromotedStandbyError, ensure_pair


def pair_with_promoted_standby(tmp_path: Path) -> PgPair:
    paths = StackPaths(root=tmp_path, kafka_version="0")
    paths.pg_location_file.write_text(str(tmp_path / "pg"), encoding="utf-8")
    pair = PgPair(paths, 27999)
    pair.standby.data.mkdir(parents=True)
    (pair.standby.data / "PG_VERSION").write_text("15\n", encoding="utf-8")  # no standby.signal
    return pair


async def test_refuses_without_reset(tmp_path: Path) -> None:
    pair = pair_with_promoted_standby(tmp_path)
    with pytest.raises(PromotedStandbyError, match="--reset-promoted") as refused:
        await ensure_pair(pair, lambda _: None)
    assert "27999" in str(refused.value) and "28000" in str(refused.value)
    assert (pair.standby.data / "PG_VERSION").is_file()  # nothing dropped


async def test_a_first_start_is_not_taken_for_a_failover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Postgres yet (a fresh machine): the pair is made, not refused or failed on."""
    pair = PgPair(StackPaths(root=tmp_path, kafka_version="0"), 27999)

    class Started(Exception):
        pass

    async def start_primary(*args: object, **kwargs: object) -> None:
        raise Started  # the primary is the first thing made

    monkeypatch.setattr("events.devtools.stack.standby.ensure_postmaster", start_primary)
    with pytest.raises(Started):
        await ensure_pair(pair, lambda _: None)
