"""Processes of the local stack: running a command to completion, starting one that outlives
us, pid files and liveness, waiting, open ports, and log tails for error messages.

Nothing here knows Kafka or Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from events.devtools.stack.errors import StackError

_LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class RunAs:
    """An OS user to run a command as when we are root (initdb and postgres refuse root)."""

    name: str
    uid: int
    gid: int


def supplementary_groups(run_as: RunAs) -> list[int]:
    """``run_as``'s own groups, to run a command with instead of root's."""
    # Drop root's supplementary groups; keep the user's own (e.g. ssl-cert for postgres).
    return os.getgrouplist(run_as.name, run_as.gid)


async def run(
    argv: Sequence[str],
    *,
    what: str,
    within: float,
    cwd: Path | None = None,
    run_as: RunAs | None = None,
    env: dict[str, str] | None = None,
    new_session: bool = False,
    log_for_errors: Path | None = None,
) -> str:
    """Run a command to completion; its combined output, or StackError with the tail of it."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=str(cwd) if cwd is not None else None,
        env={**os.environ, "LC_ALL": "C", **(env or {})},
        start_new_session=new_session,
        user=run_as.uid if run_as is not None else None,
        group=run_as.gid if run_as is not None else None,
        extra_groups=supplementary_groups(run_as) if run_as is not None else None,
    )
    try:
        async with asyncio.timeout(within):
            output, _ = await proc.communicate()
    except BaseException as e:  # timeout or cancellation: never leave the child behind
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        if isinstance(e, TimeoutError):
            raise StackError(f"{what} did not finish within {within:.0f}s") from e
        raise
    text = output.decode(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-_LOG_TAIL_LINES:])
        extra = (
            file_tail(log_for_errors, f"last lines of {log_for_errors}") if log_for_errors else ""
        )
        raise StackError(f"{what} failed (exit {proc.returncode}):\n{tail}{extra}")
    return text


def spawn_detached(argv: list[str], output: Path) -> int:
    """Start ``argv`` in a session of its own, output appended to ``output``; its pid.

    ``posix_spawn`` rather than ``asyncio``/``subprocess``: their process objects kill or warn
    about a child that outlives them, and this one must outlive the CLI.
    """
    with output.open("a", encoding="utf-8") as out:
        out.write(f"\n--- synclife stack up {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
    file_actions: list[tuple[Any, ...]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(output), os.O_WRONLY | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawn(argv[0], argv, dict(os.environ), file_actions=file_actions, setsid=True)


def read_pid(path: Path) -> int | None:
    """The pid on the first line of ``path``, None if there is none."""
    try:
        first = path.read_text(encoding="utf-8").split("\n", 1)[0].strip()
    except (FileNotFoundError, PermissionError):
        return None
    return int(first) if first.isdigit() else None


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    # The broker is our own child when `up` and `down` run in one process (tests): reap it,
    # or it lingers as a zombie that still answers kill(pid, 0).
    with contextlib.suppress(ChildProcessError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def pid_exists(pid: int) -> bool:
    """Whether ``pid`` names any process at all, zombies included."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def proc_cmdline(pid: int) -> str | None:
    """``pid``'s command line, arguments joined by spaces; None if it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


async def wait_until(condition: Callable[[], bool], within: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``within`` seconds pass (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if condition():
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.2)


async def port_open(host: str, port: int, within: float = 1.0) -> bool:
    """Whether something accepts a TCP connection at ``host:port`` within ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def file_tail(path: Path | None, title: str, lines: int = _LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path`` under ``title``, for an error message; "" if none."""
    if path is None:
        return ""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    kept = text.splitlines()[-lines:]
    if not kept:
        return ""
    return f"\n--- {title}:\n" + "\n".join(kept)
