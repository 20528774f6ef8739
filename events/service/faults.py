"""Crash points: the fault suite's way to SIGKILL ``serve`` at exact places (failpoints).

``SYNCLIFE_CRASH_POINTS="apply.before_commit=0.01,relay.after_send=@3"`` makes the process
kill itself (SIGKILL: no cleanup, as a crash) each time it passes the named point with that
probability, or (``@N``) the Nth time it passes it. Unset (always, outside the fault suite),
``crash_point`` is one dict lookup.

Points: ``apply.before_commit`` (a batch written, its transaction not committed),
``apply.after_commit`` (committed in Postgres, offsets not committed to Kafka),
``relay.after_send`` (published and acknowledged, outbox rows not deleted),
``bulk.before_commit`` (a bulk operation's chunk of syncs written, not committed),
``bulk.after_commit`` (a step of a bulk operation committed).
"""

from __future__ import annotations

import os
import random
import signal
import sys
from typing import Final

__all__ = ["CRASH_POINTS_ENV", "crash_point"]

CRASH_POINTS_ENV: Final = "SYNCLIFE_CRASH_POINTS"


def _parse(text: str) -> dict[str, str]:
    points: dict[str, str] = {}
    for item in text.split(","):
        name, _, when = item.strip().partition("=")
        if name:
            points[name] = when.strip() or "1"
    return points


_POINTS: Final = _parse(os.environ.get(CRASH_POINTS_ENV, ""))
_PASSES: Final[dict[str, int]] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process here, if ``SYNCLIFE_CRASH_POINTS`` asks for it."""
    when = _POINTS.get(name)
    if when is None:
        return
    _PASSES[name] = passes = _PASSES.get(name, 0) + 1
    if when.startswith("@"):
        crash = passes == int(when[1:])
    else:
        crash = random.random() < float(when)  # noqa: S311 - fault injection, not crypto
    if crash:
        sys.stderr.write(f"crash point {name}: SIGKILL\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
