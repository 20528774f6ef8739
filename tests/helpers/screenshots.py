"""``make screenshots``: the console's list and one sync's page, as PNGs in docs/.

Starts (or reuses) the local stack, runs the service and a gateway in this process on topics
of their own, seeds a namespace (three buckets, paused holds, a failing sync, runs of one sync
through the worker protocol), and photographs the pages in headless Chromium. Its topics are
deleted at the end.

    python -m tests.helpers.screenshots [OUTPUT_DIR]
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from pydantic import SecretStr

from events.client import SynclifeClient, new_sync_id
from events.devtools import stack
from events.service.app import Service
from events.service.db import connect, migrate
from events.service.settings import Settings
from tests.helpers.browser import chromium
from tests.helpers.gateway import running_gateway
from tests.helpers.live import new_tenant, own_topics, remove_session_topics

BUCKETS = ("bkt_marketing_assets", "bkt_finance_reports", "bkt_support_tickets")
PROVIDERS = ("google_drive", "s3", "sharepoint", "snowflake", "tigris")
PATHS = (
    "1AbCdEfGhIjKlMn{i:02d}",
    "acme-raw-assets/incoming/{i:02d}",
    "/sites/Finance/Shared Documents/{i:02d}",
    "ANALYTICS.PUBLIC.EVENTS_{i:02d}",
    "acme-archive/exports/{i:02d}",
)


async def seed(settings: Settings, key: str, run_key: str, namespace: str) -> str:
    """Syncs to look at; returns the id of the one with runs."""
    async with (
        SynclifeClient(settings, api_key=key, namespace=namespace) as client,
        SynclifeClient(settings, api_key=run_key, namespace=namespace) as worker,
    ):
        ids: list[str] = []
        for i in range(24):
            sync_id = new_sync_id()
            created = await client.create(
                sync_id,
                bucket_id=BUCKETS[i % 3],
                connection_id=f"conn_{PROVIDERS[i % 5]}_{i // 5}",
                provider=PROVIDERS[i % 5],
                source_path=PATHS[i % 5].format(i=i),
                sync_mode="continuous",
                polling_interval_seconds=300,
                metadata={"team": ["growth", "finance", "support"][i % 3]},
            )
            assert created.sync is not None, created.error
            ids.append(sync_id)
        await client.pause(ids[-2], reason="vendor API quota exhausted until renewal")
        await client.pause(
            ids[4], hold="maintenance:INC-4211", reason="storage migration", until="PT6H"
        )
        await client.pause(ids[-5], reason="waiting for the migration sign-off")
        await client.pause(ids[-8], reason="duplicate of the finance drive", until="P2D")
        featured = ids[0]
        for run, (synced, failed, error) in enumerate(
            [
                (1200, 0, None),
                (340, 2, None),
                (95, 0, None),
                (0, 0, "401 from the provider"),
                (410, 1, None),
                (288, 0, None),
                (512, 0, None),
            ]
        ):
            if run:
                await client.trigger(featured, mode="full" if run == 4 else "incremental")
            started = await worker.run_start(featured, worker_id=f"worker-{run % 2 + 1}")
            for _ in range(100):  # until the scheduler has requested the run
                if started.run is not None:
                    break
                await asyncio.sleep(0.1)
                started = await worker.run_start(featured, worker_id=f"worker-{run % 2 + 1}")
            assert started.run is not None, started.error
            lock = {"run_id": started.run["run_id"], "lock_token": started.run["lock_token"]}
            if error:
                await worker.run_fail(featured, **lock, error=error)
            else:
                await worker.run_complete(
                    featured,
                    **lock,
                    files_discovered=synced + failed,
                    files_synced=synced,
                    files_failed=failed,
                )
        return featured


async def main(out: Path) -> None:
    env = await stack.up(Settings(), lambda line: print(line, file=sys.stderr))
    os.environ.update(env)
    settings = Settings(**own_topics(), topic_partitions=3, http_port=0)
    await stack.ensure_topics(settings, settings.kafka_bootstrap_servers, lambda line: None)
    try:
        conn = await connect(settings)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        await _photograph(settings, out)
    finally:
        await remove_session_topics(settings, lambda line: print(line, file=sys.stderr))


async def _photograph(settings: Settings, out: Path) -> None:
    service = Service(settings, http=False)
    task = asyncio.create_task(service.run())
    try:
        tenant = await new_tenant(settings, ("production",))
        featured = await seed(settings, tenant.write_key, tenant.run_key, tenant.namespace)
        secret = SecretStr("screenshots-" + os.urandom(16).hex())
        async with (
            running_gateway(settings, console_secret=secret) as gateway,
            chromium(gateway.url, 1440, 1100) as browser,
        ):
            await browser.sign_in(tenant.write_key, tenant.namespace)
            await browser.live()
            await browser.screenshot(str(out / "console-syncs.png"))
            await browser.open(f"/console/b/{BUCKETS[0]}/s/{featured}")
            await browser.live()
            await browser.screenshot(str(out / "console-sync.png"))
        print(f"wrote {out / 'console-syncs.png'} and {out / 'console-sync.png'}")
    finally:
        service.stop.set()
        await asyncio.wait_for(task, 30)


if __name__ == "__main__":
    where = Path(sys.argv[1] if len(sys.argv) > 1 else "docs")
    where.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(where))
