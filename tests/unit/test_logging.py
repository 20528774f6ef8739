"""Structured logs: one JSON object a line, with the command's context bound to it."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from events.service.observability import _ContextFilter, configure_logging, log_context


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    configure_logging(logging.INFO, json_logs=True)
    root = logging.getLogger()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    assert any(isinstance(f, _ContextFilter) for f in handler.filters)
    stream = io.StringIO()
    handler.setStream(stream)
    try:
        yield stream
    finally:
        root.handlers.clear()


def test_json_lines_carry_the_bound_command_context(json_lines: io.StringIO) -> None:
    with log_context(command_id="cmd-1", sync_config_id="sync_1", partition=2, offset=41):
        logging.getLogger("synclife.test").warning("something %s", "happened")
    (line,) = json_lines.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["message"] == "something happened"
    assert entry["level"] == "WARNING" and entry["logger"] == "synclife.test"
    assert (entry["command_id"], entry["sync_config_id"], entry["partition"], entry["offset"]) == (
        "cmd-1",
        "sync_1",
        2,
        41,
    )


def test_the_context_ends_with_its_command(json_lines: io.StringIO) -> None:
    """A batch's own line, after its commands, carries none of the last command's ids."""
    log = logging.getLogger("synclife.test")
    with log_context(partition=3):
        for n in range(2):
            with log_context(command_id=f"cmd-{n}", sync_config_id=f"sync_{n}", offset=n):
                log.info("command")
        log.error("batch of 2 failed")
    log.error("after the batch")
    first, second, batch, after = (json.loads(line) for line in json_lines.getvalue().splitlines())
    assert (first["command_id"], second["command_id"]) == ("cmd-0", "cmd-1")
    assert batch["partition"] == 3
    assert "command_id" not in batch and "sync_config_id" not in batch and "offset" not in batch
    assert not {"command_id", "partition", "offset"} & after.keys()


def test_importing_the_client_changes_no_logger() -> None:
    """A service that imports the client keeps its loggers as it set them up."""
    probe = (
        "import logging\n"
        "loggers = logging.root.manager.loggerDict\n"
        "before = {n: (list(l.filters), l.level) for n, l in loggers.items()"
        " if isinstance(l, logging.Logger)}\n"
        "import events, events.client, events.kafka, events.envelope, events.messages\n"
        "after = {n: (list(l.filters), l.level) for n, l in loggers.items()"
        " if isinstance(l, logging.Logger)}\n"
        "changed = sorted(n for n in after if n in before and after[n] != before[n])\n"
        "filtered = sorted(n for n, (f, _) in after.items() if f)\n"
        "print(changed, filtered, logging.root.handlers, logging.root.level)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == f"[] [] [] {logging.WARNING}"


def test_the_context_keys_come_in_one_order_and_none_binds_nothing(
    json_lines: io.StringIO,
) -> None:
    """Whatever order the blocks bound them in, a line lists them command_id, sync_config_id,
    partition, offset; a value None leaves the name out, even when a block around it bound it;
    a name of the record's own (``extra``) is kept."""
    log = logging.getLogger("synclife.test")
    with log_context(offset=7, partition=1):
        with log_context(sync_config_id="sync_1", command_id="cmd-1"):
            log.info("inner")
            with log_context(command_id=None):
                log.info("no command")
        log.info("outer", extra={"partition": 9})
    inner, no_command, outer = (json.loads(line) for line in json_lines.getvalue().splitlines())
    bound = ["command_id", "sync_config_id", "partition", "offset"]
    assert [k for k in inner if k in bound] == bound
    assert [k for k in no_command if k in bound] == ["sync_config_id", "partition", "offset"]
    assert (outer["partition"], outer["offset"]) == (9, 7)
    assert "command_id" not in outer


def test_only_the_four_names_can_be_bound() -> None:
    with pytest.raises(KeyError, match="tenant"), log_context(offset=1, tenant="t"):
        pass
    with log_context(offset=2):
        pass  # nothing of the refused block stayed bound
