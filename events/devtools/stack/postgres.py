"""The local PostgreSQL server: a data dir of our own (initdb once, our settings in
synclife.conf), started and stopped with pg_ctl, as the ``postgres`` OS user when we are root;
the role and database ``synclife``, with a password generated once.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from events.devtools.stack.errors import StackError

from .addresses import (
    DB_NAME,
    DB_USER,
    ENV_DATABASE_URL,
    ENV_KAFKA_BOOTSTRAP_SERVERS,
    pg_url,
    redact_url,
)
from .files import Echo, StackPaths, create_secret, read_secret, write_if_changed
from .install import find_postgres_bin_dir, postgres_bin_dir
from .process import (
    RunAs,
    file_tail,
    pid_alive,
    pid_exists,
    port_open,
    proc_cmdline,
    read_pid,
    run,
    supplementary_groups,
    wait_until,
)

POSTGRES_READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class PgLayout:
    """The Postgres directories; ``base`` is the stack dir or a /var/tmp fallback."""

    base: Path

    @property
    def data(self) -> Path:
        return self.base / "postgres"

    @property
    def socket_dir(self) -> Path:
        return self.base / "postgres-run"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"


async def ensure_postmaster(
    paths: StackPaths,
    port: int,
    echo: Echo,
    *,
    layout: PgLayout | None = None,
    extra_conf: str = "",
) -> None:
    """Start Postgres (installed and initialised if need be), or reuse one that runs (ours has
    its settings reloaded); return once it answers and the database ``synclife`` exists.

    ``layout``: another server's directories than the stack's one (the cluster's standby, made
    by pg_basebackup beforehand); ``extra_conf``: lines added to its synclife.conf."""
    started = time.monotonic()
    password = read_password(paths)
    layout = layout or known_pg_layout(paths)
    pid = postmaster_pid(layout.data) if layout is not None else None
    if pid is None and await port_open("127.0.0.1", port):
        if password is None:
            raise StackError(
                f"something else already listens on 127.0.0.1:{port} and this stack has no "
                f"password for it ({paths.pg_password_file} is missing): stop it, or set both "
                f"{ENV_KAFKA_BOOTSTRAP_SERVERS} and {ENV_DATABASE_URL} to use running services"
            )
        echo(
            f"something already answers at 127.0.0.1:{port} (not started by this stack): "
            "reusing it with the stack's password"
        )
        await wait_for_postgres(pg_url(port, password, "postgres"), POSTGRES_READY_TIMEOUT)
        await _ensure_database(port, password, echo)
        echo(f"Postgres ready at 127.0.0.1:{port}")
        return

    bin_dir = await postgres_bin_dir(echo)
    run_as = postgres_run_as()
    if layout is None:
        layout = await _choose_pg_layout(paths, run_as, echo)
    if password is None:
        if (layout.data / "PG_VERSION").is_file():
            raise StackError(
                f"the Postgres data dir {layout.data} exists but its password file "
                f"{paths.pg_password_file} is gone: remove {layout.data} to start afresh"
            )
        password = _create_password(paths)

    _prepare_pg_dirs(layout, run_as)
    if not (layout.data / "PG_VERSION").is_file():
        await _initdb(bin_dir, layout, run_as, password, echo)
    changed = _write_pg_config(layout, port, run_as, extra_conf)
    if pid is not None:
        # Running already: the settings written take effect on a reload (a SIGHUP: cheap, and
        # done every time, in case an earlier run wrote them and stopped before reloading).
        # Those that need a restart, such as shared_buffers, wait for the next start.
        await run(
            [str(bin_dir / "pg_ctl"), "reload", "-D", str(layout.data)],
            what="pg_ctl reload",
            within=30,
            run_as=run_as,
            cwd=layout.base,
        )
        if changed:
            echo("Postgres settings changed: reloaded")

    if pid is None:
        await _wait_for_stale_postmaster(layout.data)
        echo(f"starting Postgres ({bin_dir.parent.name}) on 127.0.0.1:{port}...")
        await run(
            [
                str(bin_dir / "pg_ctl"),
                "start",
                "-D",
                str(layout.data),
                "-l",
                str(layout.log),
                "-w",
                "-t",
                str(int(POSTGRES_READY_TIMEOUT)),
            ],
            what="pg_ctl start",
            within=POSTGRES_READY_TIMEOUT + 30,
            run_as=run_as,
            cwd=layout.base,
            new_session=True,
            log_for_errors=layout.log,
        )
        pid = postmaster_pid(layout.data)
        await wait_for_postgres(
            pg_url(port, password, "postgres"), POSTGRES_READY_TIMEOUT, log=layout.log
        )
        await _ensure_database(port, password, echo)
        echo(f"Postgres ready at 127.0.0.1:{port} (pid {pid}, {time.monotonic() - started:.1f}s)")
    else:
        await wait_for_postgres(
            pg_url(port, password, "postgres"), POSTGRES_READY_TIMEOUT, log=layout.log
        )
        await _ensure_database(port, password, echo)
        echo(f"Postgres already up at 127.0.0.1:{port} (pid {pid})")


def postgres_run_as() -> RunAs | None:
    """``postgres`` when we are root (initdb and postgres refuse to run as root), else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise StackError(
            "running as root, but there is no `postgres` OS user to run PostgreSQL as "
            "(the Debian postgresql package creates it)"
        ) from None
    return RunAs(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)


def known_pg_layout(paths: StackPaths) -> PgLayout | None:
    """The Postgres layout chosen by an earlier ``up``, if any."""
    try:
        base = paths.pg_location_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return PgLayout(Path(base)) if base else None


async def _choose_pg_layout(paths: StackPaths, run_as: RunAs | None, echo: Echo) -> PgLayout:
    """Keep Postgres in the stack dir if its OS user can reach it, else under /var/tmp."""
    base = paths.root
    if run_as is not None and not await _user_can_traverse(run_as, paths.root):
        digest = hashlib.sha256(str(paths.root).encode()).hexdigest()[:12]
        base = Path("/var/tmp") / f"synclife-{digest}"  # noqa: S108 - root-owned, checked below
        _make_private_root_dir(base)
        echo(
            f"the `{run_as.name}` OS user cannot reach {paths.root}: keeping the Postgres data "
            f"dir under {base} instead"
        )
    layout = PgLayout(base)
    paths.pg_location_file.write_text(f"{base}\n", encoding="utf-8")
    return layout


async def _user_can_traverse(run_as: RunAs, directory: Path) -> bool:
    """Whether ``run_as`` may search ``directory`` and every parent (asks the kernel)."""
    proc = await asyncio.create_subprocess_exec(
        "test",
        "-x",
        str(directory),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        cwd="/",
        user=run_as.uid,
        group=run_as.gid,
        extra_groups=supplementary_groups(run_as),
    )
    return await proc.wait() == 0


def _make_private_root_dir(path: Path) -> None:
    """Create ``path`` (0755, owned by us); refuse a pre-existing one we do not own."""
    path.mkdir(mode=0o755, exist_ok=True)
    st = path.lstat()
    if not path.is_dir() or path.is_symlink() or st.st_uid != os.geteuid():
        raise StackError(f"{path} exists and is not a directory owned by us: remove it")


def _prepare_pg_dirs(layout: PgLayout, run_as: RunAs | None) -> None:
    layout.base.mkdir(parents=True, exist_ok=True)
    layout.data.mkdir(mode=0o700, exist_ok=True)
    layout.socket_dir.mkdir(mode=0o700, exist_ok=True)
    layout.log.touch(mode=0o600, exist_ok=True)
    for path in (layout.data, layout.socket_dir, layout.log):
        if run_as is not None:
            os.chown(path, run_as.uid, run_as.gid)
    layout.data.chmod(0o700)


async def _initdb(
    bin_dir: Path, layout: PgLayout, run_as: RunAs | None, password: str, echo: Echo
) -> None:
    echo(f"initialising a Postgres data dir at {layout.data} (once)...")
    # initdb reads the superuser password from a file; it must be readable by the user
    # initdb runs as, so it lives briefly in the (0700) socket dir and is removed at once.
    pwfile = layout.socket_dir / ".initdb-pw"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{password}\n".encode())
        if run_as is not None:
            os.fchown(fd, run_as.uid, run_as.gid)
    finally:
        os.close(fd)
    try:
        await run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(layout.data),
                "-U",
                DB_USER,
                f"--pwfile={pwfile}",
                # Local (socket) connections: the socket dir is 0700, so only the postgres
                # OS user and root can reach it. TCP needs the password.
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            ],
            what="initdb",
            within=300,
            run_as=run_as,
            cwd=layout.base,
        )
    finally:
        pwfile.unlink(missing_ok=True)


def _write_pg_config(
    layout: PgLayout, port: int, run_as: RunAs | None, extra_conf: str = ""
) -> bool:
    """Our settings live in synclife.conf, included once from postgresql.conf; True if they
    changed."""
    socket_dir = str(layout.socket_dir)
    # A Unix socket path is limited to 107 bytes; without one, TCP still works.
    if len(socket_dir) + len(f"/.s.PGSQL.{port}.lock") > 100:
        socket_dir = ""
    conf = f"""\
# Written by `synclife stack up` before every start: change the settings, not this file.
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
unix_socket_permissions = 0700
max_connections = 200
# The service's working set at 100,000 syncs (their rows, the processed commands' results,
# the history and the outbox's churn) is larger than the default 128 MB: a batch then reads
# pages in and writes dirty ones out itself.
shared_buffers = 512MB
password_encryption = 'scram-sha-256'
fsync = on
# A write-heavy queue workload: checkpoints at most every 15 min or 4 GB of WAL (after each
# one, the next change of every page writes the whole page to the WAL; with the default 1 GB,
# a sustained load checkpointed every 20 s), and those full-page images compressed.
max_wal_size = 4GB
checkpoint_timeout = 15min
wal_compression = lz4
log_timezone = 'UTC'
timezone = 'UTC'
{extra_conf}"""
    target = layout.data / "synclife.conf"
    changed = write_if_changed(target, conf)
    main = layout.data / "postgresql.conf"
    text = main.read_text(encoding="utf-8")
    include = "include_if_exists = 'synclife.conf'"
    if include not in text:
        main.write_text(f"{text.rstrip()}\n\n# synclife stack\n{include}\n", encoding="utf-8")
        changed = True
    if run_as is not None:
        for path in (target, main):
            os.chown(path, run_as.uid, run_as.gid)
    return changed


def postmaster_pid(data: Path) -> int | None:
    """The postmaster's pid from ``postmaster.pid``, if it runs."""
    pid = read_pid(data / "postmaster.pid")
    if pid is None or not pid_alive(pid):
        return None
    cmdline = proc_cmdline(pid)
    if cmdline is not None and "postgres" not in cmdline:
        return None
    return pid


async def _wait_for_stale_postmaster(data: Path, within: float = 15.0) -> None:
    """Let a killed postmaster's zombie be reaped first.

    A new postmaster refuses to start while the pid in a stale ``postmaster.pid`` still
    exists, and a zombie does until its parent (often a slow init in containers) reaps it.
    """
    stale = read_pid(data / "postmaster.pid")
    if stale is None or pid_alive(stale):
        return
    await wait_until(lambda: not pid_exists(stale), within)


async def wait_for_postgres(
    url: str, within: float, *, log: Path | None = None, ssl: Any = None
) -> None:
    """Wait until ``url`` accepts a connection and answers ``SELECT 1``.

    ``ssl`` is asyncpg's (``db.postgres_ssl``); None leaves it to the URL.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last_error = "no attempt yet"
    extra: dict[str, Any] = {} if ssl is None else {"ssl": ssl}
    while True:
        try:
            conn = await asyncpg.connect(url, timeout=5, **extra)
            try:
                if await conn.fetchval("SELECT 1") == 1:
                    return
            finally:
                await conn.close()
        except (
            asyncpg.InvalidPasswordError,
            asyncpg.InvalidAuthorizationSpecificationError,
            asyncpg.InvalidCatalogNameError,
        ) as e:
            raise StackError(f"Postgres at {redact_url(url)} refused us: {e}") from e
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            last_error = f"{type(e).__name__}: {e}"
        if loop.time() >= deadline:
            tail = file_tail(log, f"last lines of {log}") if log is not None else ""
            raise StackError(
                f"Postgres did not answer at {redact_url(url)} within {within:.0f}s "
                f"(last: {last_error}).{tail}"
            )
        await asyncio.sleep(0.5)


async def _ensure_database(port: int, password: str, echo: Echo) -> None:
    conn = await asyncpg.connect(pg_url(port, password, "postgres"), timeout=10)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DB_NAME)
        if not exists:
            # DB_NAME is a constant identifier; CREATE DATABASE takes no parameters.
            await conn.execute(f'CREATE DATABASE "{DB_NAME}"')
            echo(f"created database {DB_NAME}")
    finally:
        await conn.close()


async def stop_postmaster(paths: StackPaths, echo: Echo, layout: PgLayout | None = None) -> None:
    """Stop the Postgres this stack started (``pg_ctl stop -m fast``), or the one of
    ``layout``."""
    layout = layout or known_pg_layout(paths)
    pid = postmaster_pid(layout.data) if layout is not None else None
    if layout is None or pid is None:
        echo("Postgres: not running (nothing this stack started)")
        return
    bin_dir = find_postgres_bin_dir()
    if bin_dir is None:
        raise StackError("cannot find pg_ctl to stop Postgres")
    echo(f"stopping Postgres (pid {pid})...")
    await run(
        [str(bin_dir / "pg_ctl"), "stop", "-D", str(layout.data), "-m", "fast", "-w", "-t", "60"],
        what="pg_ctl stop",
        within=90,
        run_as=postgres_run_as(),
        cwd=layout.base,
    )
    echo("Postgres stopped")


def read_password(paths: StackPaths) -> str | None:
    """The password of the role ``synclife``, None before the first ``up``."""
    return read_secret(paths.pg_password_file)


def _create_password(paths: StackPaths) -> str:
    return create_secret(paths.pg_password_file)
