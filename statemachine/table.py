"""The transition table, the one ``transitions`` Machine built from it, and its diagram.

``TABLE`` is the single statement of which command moves a sync from which status to which;
``fire`` asks the machine, ``allowed_commands`` lists what it accepts, ``mermaid`` draws it.
Importing this module builds the machine (and imports ``transitions``): the client never does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from transitions import Machine, MachineError

from statemachine.commands import CommandType, SystemTrigger
from statemachine.model import SyncConfiguration, SyncMode
from statemachine.runs import DEFAULT_POLICY, Policy, fails_out
from statemachine.status import SyncStatus

__all__ = [
    "INITIAL_STATUSES",
    "NOOPS",
    "STATUS_ROLES",
    "TABLE",
    "Rule",
    "allowed_commands",
    "fire",
    "mermaid",
]

S = SyncStatus
C = CommandType
T = SystemTrigger
LIVE: Final = (S.DRAFT, S.PENDING, S.ACTIVE, S.SUSPENDED)
SCHEDULABLE: Final = (S.PENDING, S.ACTIVE)
# A worker that holds the lock may report until it releases it, even after a pause or cancel.
REPORTING: Final = (S.ACTIVE, S.SUSPENDED, S.CANCELED)
# Where sync.unlock is accepted (a noop wherever no run holds the lock): all but ARCHIVED.
UNLOCKABLE: Final = (*LIVE, S.FAILED, S.COMPLETED, S.CANCELED)

#: The documented role of each of the 13 statuses.
STATUS_ROLES: Final[dict[SyncStatus, str]] = {
    S.DRAFT: "sync status: created as a draft; never scheduled; sync.activate makes it PENDING",
    S.PENDING: "sync status: created, first run not started yet (it is due at once)",
    S.ACTIVE: "sync status: running or polling on its interval",
    S.SUSPENDED: "sync status: paused: at least one pause hold is held (a user's, a named one, "
    "a bulk operation's, or system:failures after repeated failures)",
    S.COMPLETED: "sync status: an initial_only sync whose run completed (terminal); "
    "also a run status",
    S.CANCELED: "sync status: cancelled by a user (terminal)",
    S.ARCHIVED: "sync status: archived (terminal, final)",
    S.IN_PROGRESS: "run status (last_run_status): the run holds the lock",
    S.COMPLETED_WITH_ERRORS: "run status: completed, some files dead-lettered",
    S.FAILED: "sync status: an initial_only sync whose run failed the auto-suspend number of "
    "times in a row (a continuous one is SUSPENDED instead); sync.trigger or sync.resume makes "
    "it PENDING; also a run status",
    S.PROCESSING: "never taken: kept for wire compatibility",
    S.UNKNOWN: "never taken: kept for wire compatibility",
    S.SKIPPED: "never taken: kept for wire compatibility",
}


@dataclass(frozen=True, slots=True)
class Rule:
    """``command`` is allowed from ``sources``; it moves to ``dest`` (None: status unchanged).

    A ``noop`` rule accepts the command and does nothing (resume of a running sync, ...). A
    rule with a ``condition`` applies only when that check on the sync (and, for the holds, on
    what the command releases) holds; the first rule of a command that applies wins.
    """

    command: CommandType | SystemTrigger
    sources: tuple[SyncStatus, ...]
    dest: SyncStatus | None = None
    noop: bool = False
    condition: str | None = None


#: The one transition table. The machine, ``allowed_commands`` and the diagram all read it.
TABLE: Final[tuple[Rule, ...]] = (
    Rule(C.ACTIVATE, (S.DRAFT,), S.PENDING),
    Rule(C.ACTIVATE, SCHEDULABLE, noop=True),
    Rule(C.UPDATE, (*LIVE, S.FAILED)),
    Rule(C.PAUSE, SCHEDULABLE, S.SUSPENDED),
    # Another hold, or a held one changed (nothing changed: noop, said by the decider).
    Rule(C.PAUSE, (S.SUSPENDED,)),
    Rule(C.RESUME, (S.SUSPENDED,), S.ACTIVE, condition="no_hold_left"),
    # Holds left: still SUSPENDED (nothing released: noop, said by the decider).
    Rule(C.RESUME, (S.SUSPENDED,)),
    Rule(C.RESUME, SCHEDULABLE, noop=True),
    Rule(C.RESUME, (S.FAILED,), S.PENDING),
    Rule(C.TRIGGER, SCHEDULABLE),
    Rule(C.TRIGGER, (S.FAILED,), S.PENDING),
    Rule(C.CANCEL, (*LIVE, S.FAILED), S.CANCELED),
    Rule(C.CANCEL, (S.CANCELED,), noop=True),
    Rule(C.ARCHIVE, (*LIVE, S.FAILED, S.COMPLETED, S.CANCELED), S.ARCHIVED),
    Rule(C.ARCHIVE, (S.ARCHIVED,), noop=True),
    Rule(C.RUN_START, (S.PENDING,), S.ACTIVE),
    Rule(C.RUN_START, (S.ACTIVE,)),
    Rule(C.RUN_HEARTBEAT, REPORTING),
    Rule(C.RUN_CHECKPOINT, REPORTING),
    Rule(C.RUN_COMPLETE, (S.ACTIVE, S.SUSPENDED), S.COMPLETED, condition="initial_only"),
    Rule(C.RUN_COMPLETE, REPORTING),
    Rule(C.UNLOCK, UNLOCKABLE),
    Rule(C.RUN_FAIL, (S.ACTIVE,), S.FAILED, condition="fails_out_initial_only"),
    Rule(C.RUN_FAIL, (S.ACTIVE,), S.SUSPENDED, condition="fails_out"),
    Rule(C.RUN_FAIL, REPORTING),
    Rule(T.REQUEST_RUN, SCHEDULABLE),
    Rule(T.PAUSE_EXPIRED, (S.SUSPENDED,), S.ACTIVE, condition="no_hold_left"),
    Rule(T.PAUSE_EXPIRED, (S.SUSPENDED,)),
    Rule(T.LOCK_EXPIRED, (S.ACTIVE,), S.FAILED, condition="fails_out_initial_only"),
    Rule(T.LOCK_EXPIRED, (S.ACTIVE,), S.SUSPENDED, condition="fails_out"),
    Rule(T.LOCK_EXPIRED, (*REPORTING, S.COMPLETED, S.ARCHIVED)),
)

#: Statuses a new sync may start in (``initial_status`` of ``sync.create``).
INITIAL_STATUSES: Final = (S.PENDING, S.DRAFT, S.SUSPENDED)

#: (trigger, status) pairs the table accepts and where the command does nothing.
NOOPS: Final[frozenset[tuple[str, SyncStatus]]] = frozenset(
    (r.command.value, s) for r in TABLE if r.noop for s in r.sources
)


def _transitions_spec() -> list[dict[str, Any]]:
    return [
        {
            "trigger": rule.command.value,
            "source": list(rule.sources),
            "dest": rule.dest,
            **({"conditions": [rule.condition]} if rule.condition else {}),
        }
        for rule in TABLE
    ]


class _Cursor:
    """The one model of the one Machine: it carries a sync while a command is decided.

    Its methods are the table's conditions; they only read.
    """

    state: SyncStatus
    sync: SyncConfiguration | None = None
    policy: Policy = DEFAULT_POLICY
    #: The holds a resume or an expiry leaves (given by the decider; None: not asked).
    holds_left: int | None = None

    def no_hold_left(self) -> bool:
        """The resume (or the expiry) releases the last hold: the sync runs again."""
        if self.holds_left is not None:
            return self.holds_left == 0
        return self.sync is not None and not self.sync.pause_holds

    def initial_only(self) -> bool:
        return self.sync is not None and self.sync.sync_mode is SyncMode.INITIAL_ONLY

    def fails_out(self) -> bool:
        """This failure reaches the auto-suspend threshold."""
        return self.sync is not None and fails_out(self.sync, self.policy)

    def fails_out_initial_only(self) -> bool:
        """This failure reaches the threshold and the sync runs once: it goes FAILED."""
        return self.initial_only() and self.fails_out()


_MACHINE: Final = Machine(
    model=None,
    states=list(SyncStatus),
    transitions=_transitions_spec(),
    initial=None,
    auto_transitions=False,
    ignore_invalid_triggers=False,
)
_CURSOR: Final = _Cursor()
_MACHINE.add_model(_CURSOR, initial=S.PENDING)


#: (trigger, status) pairs where some rule has a condition: the machine must see the sync.
_CONDITIONAL: Final[frozenset[tuple[str, SyncStatus]]] = frozenset(
    (r.command.value, s) for r in TABLE if r.condition is not None for s in r.sources
)
#: The conditions of each conditional (trigger, status) pair, in the table's order.
_CONDITIONS: Final[dict[tuple[str, SyncStatus], tuple[str, ...]]] = {
    pair: tuple(
        dict.fromkeys(
            r.condition
            for r in TABLE
            if r.condition is not None and r.command.value == pair[0] and pair[1] in r.sources
        )
    )
    for pair in _CONDITIONAL
}
#: What the machine answered for an unconditional (trigger, status): it depends on nothing else.
_ANSWERS: Final[dict[tuple[str, SyncStatus], SyncStatus | None]] = {}
#: What it answered for a conditional pair, by the values of the pair's conditions.
_CONDITIONAL_ANSWERS: Final[dict[tuple[str, SyncStatus, tuple[bool, ...]], SyncStatus | None]] = {}


def fire(
    sync: SyncConfiguration, trigger: str, policy: Policy, holds_left: int | None = None
) -> SyncStatus | None:
    """Run ``trigger`` through the machine from the sync's status; the new status, or None.
    ``holds_left``: how many holds the command (a resume, an expiry) leaves.

    Where no rule of ``trigger`` from this status has a condition, the machine's answer
    depends on the pair alone: it is asked once and remembered (the transitions library
    costs ~20 us a call). Where some has one, the answer depends on the pair and on the values
    of its conditions (which only read): they are evaluated, and the machine is asked once per
    combination of values.
    """
    pair = (trigger, sync.status)
    if pair in _CONDITIONAL:
        key = (trigger, sync.status, _condition_values(sync, pair, policy, holds_left))
        if key not in _CONDITIONAL_ANSWERS:
            _CONDITIONAL_ANSWERS[key] = _run_machine(sync, trigger, policy, holds_left)
        return _CONDITIONAL_ANSWERS[key]
    if pair not in _ANSWERS:
        _ANSWERS[pair] = _run_machine(sync, trigger, policy, None)
    return _ANSWERS[pair]


def _condition_values(
    sync: SyncConfiguration,
    pair: tuple[str, SyncStatus],
    policy: Policy,
    holds_left: int | None,
) -> tuple[bool, ...]:
    _CURSOR.sync, _CURSOR.policy, _CURSOR.holds_left = sync, policy, holds_left
    try:
        return tuple(bool(getattr(_CURSOR, name)()) for name in _CONDITIONS[pair])
    finally:
        _CURSOR.sync, _CURSOR.holds_left = None, None


def _run_machine(
    sync: SyncConfiguration, trigger: str, policy: Policy, holds_left: int | None
) -> SyncStatus | None:
    _MACHINE.set_state(sync.status, model=_CURSOR)
    _CURSOR.sync, _CURSOR.policy, _CURSOR.holds_left = sync, policy, holds_left
    try:
        fired = _CURSOR.trigger(trigger)  # type: ignore[attr-defined]
    except MachineError:
        return None
    finally:
        _CURSOR.sync, _CURSOR.holds_left = None, None
    return SyncStatus(_CURSOR.state) if fired else None


_LOCK_HOLDER_COMMANDS: Final = frozenset(
    {C.RUN_HEARTBEAT.value, C.RUN_CHECKPOINT.value, C.RUN_COMPLETE.value, C.RUN_FAIL.value}
)
#: Commands about a held lock: its holder's reports, and sync.unlock (a noop without one).
_LOCK_COMMANDS: Final = _LOCK_HOLDER_COMMANDS | {C.UNLOCK.value}


def allowed_commands(status: SyncStatus, locked: bool = True) -> list[str]:
    """Commands the table accepts from ``status`` (for ``invalid_transition`` details).

    Without a run lock, the commands about one are left out: the lock holder's reports
    (nobody could send them) and sync.unlock (it would do nothing).
    """
    return sorted(
        t
        for t in _MACHINE.get_triggers(status)
        if t in CommandType._value2member_map_ and (locked or t not in _LOCK_COMMANDS)
    )


def mermaid() -> str:
    """The state diagram of ``TABLE`` as Mermaid, drawn by transitions' GraphMachine."""
    from transitions.extensions import GraphMachine

    holder = _Cursor()
    GraphMachine(
        model=holder,
        states=[s for s in SyncStatus if any(s in r.sources or s == r.dest for r in TABLE)],
        transitions=[t for t in _transitions_spec() if t["dest"] is not None],
        show_conditions=True,
        initial=S.PENDING,
        auto_transitions=False,
        graph_engine="mermaid",
        title="synclife sync lifecycle",
    )
    diagram = str(holder.get_graph().draw(None))  # type: ignore[attr-defined]
    # Keep the structure only: no highlighting of the helper model's current state.
    return "\n".join(
        line
        for line in diagram.splitlines()
        if not line.strip().startswith(("classDef ", "Class ", "class "))
    )
