"""Structured logs: one JSON object a line, with the command's context bound to it."""

from __future__ import annotations

import io
import json
import logging

from events.observability import _ContextFilter, bind, configure_logging


def test_json_lines_carry_the_bound_command_context() -> None:
    configure_logging(logging.INFO, json_logs=True)
    root = logging.getLogger()
    handler = root.handlers[0]
    stream = io.StringIO()
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    try:
        bind(command_id="cmd-1", sync_config_id="sync_1", partition=2, offset=41)
        logging.getLogger("synclife.test").warning("something %s", "happened")
    finally:
        bind(command_id=None, sync_config_id=None, partition=None, offset=None)
        root.handlers.clear()
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["message"] == "something happened"
    assert entry["level"] == "WARNING" and entry["logger"] == "synclife.test"
    assert (entry["command_id"], entry["sync_config_id"], entry["partition"], entry["offset"]) == (
        "cmd-1",
        "sync_1",
        2,
        41,
    )
    assert any(isinstance(f, _ContextFilter) for f in handler.filters)
