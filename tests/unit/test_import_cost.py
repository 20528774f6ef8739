"""The client builds no lifecycle machine: ``statemachine`` resolves ``TABLE`` and ``decide``
on first use, so ``import events`` loads neither ``transitions`` nor the table."""

from __future__ import annotations

import subprocess
import sys

import pytest

import statemachine

# The modules that build the machine (or need it built) and the library it is built with.
MACHINE_MODULES = ("statemachine.table", "statemachine.decider", "transitions")


def _loaded_after(statement: str) -> list[str]:
    """The machine modules loaded by ``statement`` in a fresh interpreter."""
    probe = (
        f"import sys\n{statement}\n"
        f"machine = {MACHINE_MODULES!r}\n"
        "print(sorted(m for m in sys.modules if m in machine or m.startswith('transitions.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return [line for line in out.splitlines() if line][-1:]


@pytest.mark.parametrize(
    "statement",
    [
        "import events",
        "import events.client, events.envelope, events.messages, events.kafka, events.settings",
        "import events.auth, events.errors",
        "from statemachine import CommandType, Outcome, EventType, SyncConfiguration",
    ],
)
def test_the_client_does_not_build_the_machine(statement: str) -> None:
    assert _loaded_after(statement) == ["[]"]


def test_the_machine_is_built_on_first_use_of_its_names() -> None:
    loaded = _loaded_after("from statemachine import decide")
    assert loaded != ["[]"]
    assert "statemachine.table" in loaded[0]
    assert "'transitions'" in loaded[0]


def test_every_exported_name_resolves() -> None:
    from statemachine.decider import decide
    from statemachine.table import TABLE

    assert statemachine.decide is decide
    assert statemachine.TABLE is TABLE
    for name in statemachine.__all__:
        assert getattr(statemachine, name) is not None, name
    assert set(statemachine.__all__) <= set(dir(statemachine))
    with pytest.raises(AttributeError, match="no_such_name"):
        getattr(statemachine, "no_such_name")  # noqa: B009 - the lookup is what is tested
