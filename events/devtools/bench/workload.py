"""The commands the bench sends, and what it knows of its syncs: ``sync.create`` for new
syncs, then ``sync.pause``/``sync.resume`` round robin over them, each sync alternating, so
that every command is applied and emits one ``sync.status_changed``."""

from __future__ import annotations

import json
from typing import Any, Final

from events.devtools.loadgen import Command, Sender

__all__ = ["POLLING_INTERVAL", "Workload"]

POLLING_INTERVAL: Final = 900  # the longest allowed: the scheduler stays quiet during phases


class Workload:
    """Command ids ``bench-<run>-<phase>-<n>`` (a phase: one batch of commands, so that a
    phase's outcomes can be looked up by id), sync ids ``sync_bench<run>x<n>``."""

    def __init__(self, run_id: str, sender: Sender) -> None:
        self.run_id = run_id
        self.sender = sender
        self.syncs: list[str] = []
        self.paused: dict[str, bool] = {}
        self.buckets: dict[str, str] = {}
        self.cursor = 0
        self.phase = 0
        self.baselines = 0

    def creates(self, count: int) -> list[Command]:
        """``count`` new syncs' creates (``created`` adds them once they are applied)."""
        self.phase += 1
        out: list[Command] = []
        for i in range(count):
            sync_id = f"sync_bench{self.run_id}x{len(self.syncs) + i:07d}"
            data = {
                "bucket_id": f"bkt_bench_{i % 97}",
                "connection_id": "conn_bench",
                "provider": "s3",
                "source_path": f"bench-bucket/prefix/{i}",
                "created_by_user_id": "user_bench",
                "polling_interval_seconds": POLLING_INTERVAL,
                "metadata": {"team": "bench", "index": i},
            }
            out.append(self.sender.command(self._command_id(i), "sync.create", sync_id, data))
        return out

    def created(self, creates: list[Command]) -> None:
        """The syncs these creates made now exist (active: the next command pauses them)."""
        for command in creates:
            self.syncs.append(command.sync_id)
            self.paused[command.sync_id] = False
            self.buckets[command.sync_id] = json.loads(command.value)["bucket_id"]

    def http_path(self, command: Command) -> str:
        """The gateway's route for a pause or resume of ``pause_resume``."""
        action = "pause" if command.kind == "sync.pause" else "resume"
        bucket = self.buckets[command.sync_id]
        return f"/v1/buckets/{bucket}/syncs/{command.sync_id}/{action}"

    def pause_resume(self, count: int, scale: int) -> list[Command]:
        """``count`` commands over the first ``scale`` syncs, round robin, alternating each."""
        self.phase += 1
        out: list[Command] = []
        for i in range(count):
            sync_id = self.syncs[self.cursor % scale]
            self.cursor += 1
            data: dict[str, Any]
            if self.paused[sync_id]:
                kind, data = "sync.resume", {"resumed_by_user_id": "user_bench"}
            else:
                kind, data = "sync.pause", {"paused_by_user_id": "user_bench", "reason": "bench"}
            self.paused[sync_id] = not self.paused[sync_id]
            out.append(self.sender.command(self._command_id(i), kind, sync_id, data))
        return out

    def baseline(self, count: int, scale: int) -> list[Command]:
        """``count`` records shaped like ``pause_resume``'s (a pause's key, body and headers)
        for the latency baseline's scratch topic: never applied, so they change nothing here;
        ids ``bench-<run>-baseline-<n>-<i>``, outside every phase's pattern."""
        self.baselines += 1
        data = {"paused_by_user_id": "user_bench", "reason": "bench"}
        return [
            self.sender.command(
                f"bench-{self.run_id}-baseline-{self.baselines}-{i}",
                "sync.pause",
                self.syncs[i % scale],
                data,
            )
            for i in range(count)
        ]

    def id_patterns(self, phases: range) -> list[str]:
        """``LIKE`` patterns of the command ids of these phases."""
        return [f"bench-{self.run_id}-{phase}-%" for phase in phases]

    def _command_id(self, i: int) -> str:
        return f"bench-{self.run_id}-{self.phase}-{i}"
