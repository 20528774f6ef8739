"""The scopes the record's statement accepts (``k.scopes && granting``) are exactly those for
which ``grants`` lets the request through."""

from __future__ import annotations

from itertools import combinations

from events.auth import SCOPES, grants
from events.gateway.caller import _granting


def test_granting_matches_grants_for_every_set_of_scopes() -> None:
    every = [*sorted(SCOPES), "syncs:unknown"]
    sets = [set(c) for n in range(len(every) + 1) for c in combinations(every, n)]
    for needed in sorted(SCOPES):
        accepted = set(_granting(needed))
        assert accepted  # some scope grants each one
        for scopes in sets:
            assert bool(scopes & accepted) == grants(scopes, needed), (needed, scopes)
