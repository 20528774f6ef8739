"""The baseline: ``pgbench`` on the same Postgres, each transaction one command done one
statement at a time (insert the command id, select the sync row for update, update it, insert
an outbox row), in a scratch schema with as many rows as syncs, each as large as a real one."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

from events.devtools.bench.errors import BenchError
from events.devtools.bench.options import BenchOptions
from events.service.db import connect
from events.service.settings import Settings

__all__ = ["Pgbench"]


class Pgbench:
    """pgbench in ``schema`` (created on first use; the run drops it), its script in
    ``workdir``, its options (path, clients, seconds) from ``options``."""

    def __init__(self, settings: Settings, options: BenchOptions, schema: str, workdir: Path):
        self.settings = settings
        self.options = options
        self.schema = schema
        self.workdir = workdir
        self.rows = 0

    def path(self) -> str:
        """``--pgbench``, else pgbench on PATH, else the newest of Debian's installs."""
        if self.options.pgbench:
            return self.options.pgbench
        found = shutil.which("pgbench")
        if found:
            return found
        candidates = sorted(
            Path("/usr/lib/postgresql").glob("*/bin/pgbench"),
            key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
        )
        if not candidates:
            raise BenchError("pgbench not found: install postgresql-client or pass --pgbench")
        return str(candidates[-1])

    async def _setup(self, rows: int, template_sync: str) -> None:
        """The baseline's tables, with ``rows`` syncs shaped like ``template_sync``."""
        if rows <= self.rows:
            return
        conn = await connect(self.settings)
        try:
            template = await conn.fetchval(
                "SELECT data FROM syncs WHERE sync_config_id = $1", template_sync
            )
            sch = self.schema
            await conn.execute(
                f"""
                CREATE SCHEMA IF NOT EXISTS "{sch}";
                CREATE TABLE IF NOT EXISTS "{sch}".processed (
                    command_id text PRIMARY KEY, processed_at timestamptz NOT NULL);
                CREATE TABLE IF NOT EXISTS "{sch}".syncs (
                    id bigint PRIMARY KEY, status text NOT NULL, version integer NOT NULL,
                    data jsonb NOT NULL, updated_at timestamptz NOT NULL);
                CREATE TABLE IF NOT EXISTS "{sch}".outbox (
                    id bigserial PRIMARY KEY, topic text NOT NULL, key bytea, value bytea,
                    created_at timestamptz NOT NULL DEFAULT now());
                """
            )
            await conn.execute(
                f"""INSERT INTO "{sch}".syncs
                    SELECT g, 'ACTIVE', 1, $1::jsonb, now() FROM generate_series($2::int, $3) g
                    ON CONFLICT DO NOTHING""",  # noqa: S608 - our own schema name
                template,
                self.rows + 1,
                rows,
            )
            await conn.execute(f'VACUUM ANALYZE "{sch}".syncs')
        finally:
            await conn.close()
        self.rows = rows

    async def tps(self, rows: int, template_sync: str) -> float:
        """pgbench's TPS over ``rows`` syncs shaped like ``template_sync`` (a real one)."""
        await self._setup(rows, template_sync)
        sch = self.schema
        script = self.workdir / "per_command.sql"
        script.write_text(
            f"""\\set sid random(1, {rows})
BEGIN;
INSERT INTO "{sch}".processed (command_id, processed_at) VALUES (gen_random_uuid()::text, now());
SELECT status, version, data FROM "{sch}".syncs WHERE id = :sid FOR UPDATE;
UPDATE "{sch}".syncs SET version = version + 1, updated_at = now(),
    status = CASE WHEN status = 'ACTIVE' THEN 'SUSPENDED' ELSE 'ACTIVE' END,
    data = jsonb_set(data, '{{version}}', to_jsonb(version + 1)) WHERE id = :sid;
INSERT INTO "{sch}".outbox (topic, key, value)
    SELECT 'sync.lifecycle', convert_to(id::text, 'UTF8'), convert_to(data::text, 'UTF8')
    FROM "{sch}".syncs WHERE id = :sid;
COMMIT;
""",  # noqa: S608 - the bench's own schema name
            encoding="utf-8",
        )
        conn = await connect(self.settings)
        try:
            await conn.execute(f'TRUNCATE "{sch}".outbox')
        finally:
            await conn.close()
        url = urlsplit(self.settings.database_url.get_secret_value())
        env = dict(os.environ)
        if url.password is not None:
            env["PGPASSWORD"] = unquote(url.password)
        clients = self.options.pgbench_clients
        argv = [
            self.path(),
            "-h",
            url.hostname or "localhost",
            "-p",
            str(url.port or 5432),
            "-U",
            unquote(url.username or "postgres"),
            "-n",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            str(min(clients, os.cpu_count() or 1)),
            "-T",
            str(max(1, round(self.options.pgbench_seconds))),
            "-f",
            str(script),
            unquote(url.path.lstrip("/")) or "postgres",
        ]
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        text = out.decode(errors="replace")
        match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", text)
        if proc.returncode != 0 or match is None:
            tail = (err.decode(errors="replace") or text).strip().splitlines()[-5:]
            raise BenchError(f"pgbench failed ({proc.returncode}): {' | '.join(tail)}")
        return float(match.group(1))
