"""Drive synclife from another Python service: create a sync, pause it, resume it, and watch.

Run against a serving synclife (``synclife serve``), with a key of scope ``syncs:write``:

    export SYNCLIFE_API_KEY=sk_... SYNCLIFE_NAMESPACE=production
    python examples/quickstart.py

It prints each result and the lifecycle events of the new sync, then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from events import Event, KafkaSettings, SynclifeClient, lifecycle_events, new_sync_id


async def main() -> None:
    settings = KafkaSettings()
    sync_id = new_sync_id()
    seen: list[Event] = []

    async def watch() -> None:
        # Every event of this sync, each once (deduplicated by event id).
        async for event in lifecycle_events(settings, sync_ids=[sync_id], from_beginning=True):
            seen.append(event)

    watcher = asyncio.create_task(watch())
    async with SynclifeClient(
        settings, api_key=os.environ["SYNCLIFE_API_KEY"], namespace=os.environ["SYNCLIFE_NAMESPACE"]
    ) as client:
        created = await client.create(
            sync_id,
            bucket_id="bkt_marketing_assets",
            connection_id="conn_abc123",
            provider="google_drive",
            source_path="1AbCdEfGhIjK",
            created_by_user_id="user_ada",
            sync_mode="continuous",
            polling_interval_seconds=120,
            file_filters={"include_patterns": ["*.pdf"], "max_size_bytes": 50_000_000},
        )
        print("created:", created.outcome.value, created.status, "v", created.version)
        paused = await client.pause(sync_id, paused_by_user_id="user_ada", reason="audit")
        print("paused:", paused.outcome.value, paused.status, "v", paused.version)
        resumed = await client.resume(sync_id, resumed_by_user_id="user_ada")
        print("resumed:", resumed.outcome.value, resumed.status, "v", resumed.version)

    last = resumed.version or 0
    for _ in range(100):
        if len(seen) >= last:
            break
        await asyncio.sleep(0.1)
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    for event in seen:
        print(f"event v{event.data.version} {event.type} -> {event.data.to_status}")


if __name__ == "__main__":
    asyncio.run(main())
