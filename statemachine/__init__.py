"""What a sync configuration is and how it may change: pure models and the lifecycle machine.

Nothing here does I/O or imports ``events``. ``TABLE`` and ``decide`` are resolved on first
use: they build the ``transitions`` Machine, which the client (``import events``) never needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

from statemachine.commands import Command, CommandType, parse_data
from statemachine.decision import Change, Decision, EventType, Outcome
from statemachine.errors import CommandError, ErrorCode
from statemachine.model import Provider, SyncConfiguration, SyncMode, SyncSettings
from statemachine.status import SyncStatus

if TYPE_CHECKING:
    from statemachine.decider import decide
    from statemachine.table import TABLE

__all__ = [
    "TABLE",
    "Change",
    "Command",
    "CommandError",
    "CommandType",
    "Decision",
    "ErrorCode",
    "EventType",
    "Outcome",
    "Provider",
    "SyncConfiguration",
    "SyncMode",
    "SyncSettings",
    "SyncStatus",
    "decide",
    "parse_data",
]

# Name -> the module that defines it, for the names that need the machine (PEP 562).
_LAZY: Final = {"TABLE": "statemachine.table", "decide": "statemachine.decider"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
