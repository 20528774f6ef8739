"""What a sync configuration is and how it may change: pure models and the lifecycle machine.

Nothing here does I/O or imports ``events``.
"""

from statemachine.commands import Command, CommandType, parse_data
from statemachine.errors import CommandError, ErrorCode
from statemachine.machine import TABLE, Change, Decision, EventType, Outcome, decide
from statemachine.model import Provider, SyncConfiguration, SyncMode, SyncSettings
from statemachine.status import SyncStatus

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
