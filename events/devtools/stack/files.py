"""The stack dir's files: where each one lives (``StackPaths``) and how they are written: secrets
in new 0600 files, configuration only when it changed, templates from ``resources/``.

Also ``Echo``, the progress callback every step of the stack takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from events.devtools.stack.errors import StackError
from events.service.settings import Settings

Echo = Callable[[str], None]

LOCK_TIMEOUT = 900.0


@dataclass(frozen=True)
class StackPaths:
    """Where the local stack keeps its files (all absolute)."""

    root: Path
    kafka_version: str
    # The broker's own directory under ``root``: one per broker of ``stack up --cluster``.
    kafka_home_name: str = "kafka"

    @classmethod
    def from_settings(cls, settings: Settings) -> StackPaths:
        root = Path(os.path.abspath(os.path.expanduser(settings.stack_dir)))
        return cls(root=root, kafka_version=settings.kafka_version)

    @property
    def kafka_dist(self) -> Path:
        return self.root / f"kafka-{self.kafka_version}"

    @property
    def kafka_libs(self) -> Path:
        return self.kafka_dist / "libs"

    @property
    def kafka_home(self) -> Path:
        return self.root / self.kafka_home_name

    @property
    def kafka_data(self) -> Path:
        return self.kafka_home / "data"

    @property
    def kafka_logs(self) -> Path:
        return self.kafka_home / "logs"

    @property
    def kafka_pid_file(self) -> Path:
        return self.kafka_home / "kafka.pid"

    @property
    def kafka_out(self) -> Path:
        return self.kafka_home / "kafka.out"

    @property
    def kafka_properties(self) -> Path:
        return self.kafka_home / "server.properties"

    @property
    def kafka_log4j(self) -> Path:
        return self.kafka_home / "log4j2.xml"

    @property
    def kafka_cluster_id(self) -> Path:
        return self.kafka_home / "cluster-id"

    @property
    def kafka_started_with(self) -> Path:
        return self.kafka_home / "server.properties.sha256"

    @property
    def kafka_scram_password_file(self) -> Path:
        return self.root / "kafka-scram-password"

    @property
    def pg_password_file(self) -> Path:
        return self.root / "postgres-password"

    @property
    def pg_location_file(self) -> Path:
        return self.root / "postgres-location"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"


def read_secret(path: Path) -> str | None:
    """The password in ``path``, None if the file is missing or empty."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def create_secret(path: Path) -> str:
    """A new random password in a new 0600 file (refuses to overwrite one)."""
    password = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(password + "\n")
    return password


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` unless it holds that already; True if it was written."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return True


def resource_text(name: str) -> str:
    """The text of ``resources/<name>``."""
    # Next to this module (package data: events/devtools/stack/resources/*), installed or not.
    return (Path(__file__).parent / "resources" / name).read_text(encoding="utf-8")


@contextlib.asynccontextmanager
async def stack_lock(paths: StackPaths, echo: Echo) -> AsyncIterator[None]:
    """An exclusive flock on ``{stack_dir}/.lock`` (another ``up``/``down`` may be running)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCK_TIMEOUT
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    echo(f"waiting for another `synclife stack` command ({paths.lock_file})...")
                    told = True
                if loop.time() >= deadline:
                    raise StackError(
                        f"{paths.lock_file} stayed locked for {LOCK_TIMEOUT:.0f}s"
                    ) from None
                await asyncio.sleep(0.25)
        yield
    finally:
        os.close(fd)  # closing releases the lock
