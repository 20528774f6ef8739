"""The cluster's Postgres: a primary and a streaming-replication standby (``stack up --cluster``).

The primary is an ordinary stack Postgres (``postgres.ensure_postmaster``) with replication
settings added; the standby is a ``pg_basebackup`` of it on the next port, started with
``standby.signal``, both run as the same OS user. Once the standby streams, the primary's
``synclife-replication.conf`` names it in ``synchronous_standby_names``: a commit returns
only once the standby has flushed it, and until then no other session sees it either (a relay
cannot publish it). The standby's own file names no standby, so once promoted it waits for
none (it has none). ``synchronous=False`` (tests only) leaves the standby asynchronous: a
commit returns before the standby has it, which is what a failover then loses.

Faults for the fault suite: ``kill_primary`` (SIGKILL to the primary's whole process group,
as if its machine died), ``walsender_pid`` (to freeze replication), ``promote``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg

from events.devtools.stack.errors import StackError

from .addresses import DB_NAME, DB_USER, pg_url
from .files import Echo, StackPaths, write_if_changed
from .install import postgres_bin_dir
from .postgres import (
    PgLayout,
    ensure_postmaster,
    known_pg_layout,
    postgres_run_as,
    postmaster_pid,
    read_password,
    stop_postmaster,
)
from .process import pid_alive, run, wait_until

STANDBY_NAME = "synclife_standby"
REPLICATION_FILE = "synclife-replication.conf"
STREAMING_TIMEOUT = 60.0

# Both servers include the file this module writes (the primary's names the standby).
_PRIMARY_CONF = f"""\
# Replication (stack up --cluster): the standby streams from here.
wal_level = replica
max_wal_senders = 5
wal_keep_size = 1GB
include_if_exists = '{REPLICATION_FILE}'
"""
_STANDBY_CONF = f"""\
# Replication (stack up --cluster): a hot standby of the primary (standby.signal).
hot_standby = on
include_if_exists = '{REPLICATION_FILE}'
"""


class PromotedStandbyError(StackError):
    """``stack up --cluster`` after a failover, without ``--reset-promoted``."""


@dataclass(frozen=True)
class PgPair:
    """The primary on ``port``, the standby on ``port + 1``, in the stack dir ``paths``."""

    paths: StackPaths
    port: int

    @property
    def standby_port(self) -> int:
        return self.port + 1

    @property
    def primary(self) -> PgLayout:
        layout = known_pg_layout(self.paths)
        if layout is None:
            raise StackError(f"no Postgres in {self.paths.root} yet: run `stack up --cluster`")
        return layout

    @property
    def standby(self) -> PgLayout:
        return PgLayout(self.primary.base / "standby")

    def password(self) -> str:
        password = read_password(self.paths)
        if password is None:
            raise StackError(f"no Postgres password file at {self.paths.pg_password_file}")
        return password

    def url(self, database: str = DB_NAME) -> str:
        """Both servers, the writable one chosen at each connection (the service's URL)."""
        hosts = f"127.0.0.1:{self.port},127.0.0.1:{self.standby_port}"
        secret = quote(self.password(), safe="")
        return f"postgresql://{DB_USER}:{secret}@{hosts}/{database}?target_session_attrs=read-write"

    def primary_url(self, database: str = DB_NAME) -> str:
        return pg_url(self.port, self.password(), database)

    def standby_url(self, database: str = DB_NAME) -> str:
        return pg_url(self.standby_port, self.password(), database)


async def ensure_pair(
    pair: PgPair, echo: Echo, *, synchronous: bool = True, reset_promoted: bool = False
) -> None:
    """Start (or reuse) the primary and its standby; return once the standby streams and the
    primary waits for it (``synchronous``) or not.

    A standby that was promoted (a failover) holds everything written since; it is dropped and
    made again from the old primary only with ``reset_promoted`` (what the promoted one took
    since is lost), else ``PromotedStandbyError``.
    """
    # On a first start there is no primary yet, so no standby either: nothing was promoted.
    first_start = known_pg_layout(pair.paths) is None
    if not first_start and standby_promoted(pair.standby) and not reset_promoted:
        raise PromotedStandbyError(
            f"the standby at {pair.standby.data} (port {pair.standby_port}) was promoted: it is "
            f"the primary now and holds every write since the failover; the old primary (port "
            f"{pair.port}) does not. Starting the pair again would drop the promoted server's "
            "data, and `serve` processes still connected to it would write there while the old "
            "primary took writes too. Stop every `serve` process, keep what you need from port "
            f"{pair.standby_port} (pg_dump), then run `synclife stack up --cluster "
            "--reset-promoted` to make the standby again from the old primary."
        )
    await ensure_postmaster(pair.paths, pair.port, echo, extra_conf=_PRIMARY_CONF)
    standby = pair.standby  # the primary's layout is known from here on
    if standby_promoted(standby):
        echo(f"the standby at {standby.data} was promoted: making it again from the primary")
        await stop_postmaster(pair.paths, echo, standby)
        shutil.rmtree(standby.data)
    if not (standby.data / "PG_VERSION").is_file():
        await _base_backup(pair, echo)
    _write_replication_file(standby, _standby_replication(pair))
    await ensure_postmaster(
        pair.paths, pair.standby_port, echo, layout=standby, extra_conf=_STANDBY_CONF
    )
    await _wait_streaming(pair, None)
    await set_synchronous(pair, synchronous)


async def _base_backup(pair: PgPair, echo: Echo) -> None:
    standby = pair.standby
    run_as = postgres_run_as()
    bin_dir = await postgres_bin_dir(echo)
    echo(f"copying the primary into a standby at {standby.data} (pg_basebackup)...")
    shutil.rmtree(standby.data, ignore_errors=True)
    standby.base.mkdir(mode=0o700, parents=True, exist_ok=True)
    if run_as is not None:
        os.chown(standby.base, run_as.uid, run_as.gid)
    await run(
        [
            str(bin_dir / "pg_basebackup"),
            "--host=127.0.0.1",
            f"--port={pair.port}",
            f"--username={DB_USER}",
            "--no-password",
            f"--pgdata={standby.data}",
            "--wal-method=stream",
            "--checkpoint=fast",
        ],
        what="pg_basebackup",
        within=300,
        run_as=run_as,
        cwd=standby.base,
        env={"PGPASSWORD": pair.password()},
    )
    signal_file = standby.data / "standby.signal"
    signal_file.touch(mode=0o600)
    if run_as is not None:
        os.chown(signal_file, run_as.uid, run_as.gid)


def _standby_replication(pair: PgPair) -> str:
    conninfo = (
        f"host=127.0.0.1 port={pair.port} user={DB_USER} password={pair.password()} "
        f"application_name={STANDBY_NAME}"
    )
    return f"""\
# Written by `synclife stack up --cluster`.
primary_conninfo = '{conninfo}'
# Promoted, this server has no standby of its own: it must not wait for one.
synchronous_standby_names = ''
"""


def _primary_replication(synchronous: bool) -> str:
    if not synchronous:
        return """\
# Written by the fault suite: an ASYNCHRONOUS standby (a failover loses recent commits).
synchronous_standby_names = ''
"""
    return f"""\
# Written by `synclife stack up --cluster`: a commit returns once the standby has flushed it.
synchronous_standby_names = 'FIRST 1 ({STANDBY_NAME})'
synchronous_commit = on
"""


def _write_replication_file(layout: PgLayout, text: str) -> bool:
    target = layout.data / REPLICATION_FILE
    changed = write_if_changed(target, text)
    owner = postgres_run_as()
    if owner is not None:
        os.chown(target, owner.uid, owner.gid)
    target.chmod(0o600)  # the standby's holds the replication password
    return changed


async def set_synchronous(pair: PgPair, synchronous: bool) -> None:
    """Make the primary wait for the standby at each commit (or not: tests only), reload it,
    and return once ``pg_stat_replication`` shows the standby so."""
    primary = pair.primary
    if _write_replication_file(primary, _primary_replication(synchronous)):
        await _pg_ctl(pair, primary, "reload")
    await _wait_streaming(pair, "sync" if synchronous else "async")


async def _pg_ctl(pair: PgPair, layout: PgLayout, *args: str) -> None:
    bin_dir = await postgres_bin_dir(lambda _: None)
    await run(
        [str(bin_dir / "pg_ctl"), *args, "-D", str(layout.data)],
        what=f"pg_ctl {' '.join(args)}",
        within=90,
        run_as=postgres_run_as(),
        cwd=layout.base,
    )


async def _wait_streaming(pair: PgPair, sync_state: str | None) -> None:
    """Until the primary lists the standby as streaming (with ``sync_state``, if given)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STREAMING_TIMEOUT
    conn = await asyncpg.connect(pair.primary_url("postgres"), timeout=10)
    try:
        while True:
            row = await conn.fetchrow(
                "SELECT state, sync_state FROM pg_stat_replication WHERE application_name = $1",
                STANDBY_NAME,
            )
            if row is not None and row["state"] == "streaming":
                if sync_state is None or row["sync_state"] == sync_state:
                    return
            if loop.time() >= deadline:
                raise StackError(
                    f"the standby on port {pair.standby_port} does not stream from the primary "
                    f"({dict(row) if row else 'not connected'}) after {STREAMING_TIMEOUT:.0f}s; "
                    f"see {pair.standby.log}"
                )
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def stop_pair(pair: PgPair, echo: Echo) -> None:
    """Stop the primary first (its WAL senders hand the standby everything), then the standby."""
    if known_pg_layout(pair.paths) is None:
        echo("Postgres: not running (nothing this stack started)")
        return
    await stop_postmaster(pair.paths, echo, pair.primary)
    await stop_postmaster(pair.paths, echo, pair.standby)


def primary_pid(pair: PgPair) -> int | None:
    return postmaster_pid(pair.primary.data)


async def walsender_pid(pair: PgPair) -> int:
    """The primary's process that streams WAL to the standby."""
    conn = await asyncpg.connect(pair.primary_url("postgres"), timeout=10)
    try:
        pid = await conn.fetchval(
            "SELECT pid FROM pg_stat_replication WHERE application_name = $1", STANDBY_NAME
        )
    finally:
        await conn.close()
    if pid is None:
        raise StackError("no WAL sender streams to the standby")
    return int(pid)


async def kill_primary(pair: PgPair) -> None:
    """SIGKILL the primary's postmaster and every process of it, as if its machine died.

    Each backend is a process group of its own (Postgres makes them group leaders), so: stop
    the postmaster (it forks nothing more), SIGKILL each of its children, then it. A backend
    left to notice its postmaster's death could still finish a commit and answer it.
    """
    pid = primary_pid(pair)
    if pid is None:
        raise StackError("the primary does not run")
    os.kill(pid, signal.SIGSTOP)
    victims = [*children(pid), pid]
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    if not await wait_until(lambda: not any(pid_alive(v) for v in victims), 15.0):
        raise StackError(f"the primary (pid {pid}) or one of its processes survived SIGKILL")


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text(encoding="utf-8")
        except OSError:
            continue
        fields = text.rpartition(")")[2].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(stat.parent.name))
    return found


async def promote(pair: PgPair) -> None:
    """Promote the standby (``pg_ctl promote -w``): it ends recovery and takes writes."""
    await _pg_ctl(pair, pair.standby, "promote", "-w", "-t", "60")


def standby_promoted(layout: PgLayout) -> bool:
    """Whether the standby's data dir is a server of its own now (no ``standby.signal``)."""
    return (layout.data / "PG_VERSION").is_file() and not (layout.data / "standby.signal").exists()
