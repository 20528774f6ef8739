"""A sync's health and staleness, computed from what is stored (``GET .../metrics``).

- ``stale_after_seconds`` = max(2 x polling interval, 120);
- ``seconds_since_last_sync``: since the last successful sync; null if it never synced (the
  vendor's "None if never synced");
- ``is_stale``: a continuous, active sync without progress since its last sync for longer than
  that; never for a sync that never synced (a first run has no last sync to be stale against);
- ``intervals_since_last_sync``: those seconds over the polling interval (null likewise);
- ``failure_rate``: files failed over files discovered (0 when none were);
- ``healthy``: active, not paused, no consecutive failures, not stale;
- ``dlq_total``: the files sent to the dead letters (``total_files_failed``);
- ``last_job``: the newest run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from events.contract.http import SyncJobModel, SyncMetricsResponse

__all__ = ["of", "stale_after"]

MIN_STALE_SECONDS = 120


def stale_after(polling_interval_seconds: int) -> int:
    return max(2 * polling_interval_seconds, MIN_STALE_SECONDS)


def of(sync: dict[str, Any], now: datetime, last_job: str | None) -> SyncMetricsResponse:
    """The metrics of ``sync`` (its stored JSON) at ``now``; ``last_job`` its newest job's JSON."""
    interval = int(sync.get("polling_interval_seconds") or 300)
    since_text = sync.get("last_sync_at")
    seconds = None
    if since_text is not None:
        seconds = max(0, int((now - datetime.fromisoformat(since_text)).total_seconds()))
    threshold = stale_after(interval)
    active = bool(sync.get("is_active"))
    paused = bool(sync.get("paused"))
    continuous = sync.get("sync_mode", "continuous") == "continuous"
    stale = continuous and active and seconds is not None and seconds > threshold
    discovered = int(sync.get("total_files_discovered") or 0)
    failed = int(sync.get("total_files_failed") or 0)
    failures = int(sync.get("consecutive_failures") or 0)
    job = SyncJobModel.model_validate_json(last_job) if last_job is not None else None
    return SyncMetricsResponse(
        sync_config_id=sync["sync_config_id"],
        status=sync["status"],
        is_active=active,
        paused=paused,
        total_files_discovered=discovered,
        total_files_synced=int(sync.get("total_files_synced") or 0),
        total_files_failed=failed,
        batches_created=int(sync.get("batches_created") or 0),
        sync_run_counter=int(sync.get("sync_run_counter") or 0),
        consecutive_failures=failures,
        last_error=sync.get("last_error"),
        last_sync_at=sync.get("last_sync_at"),
        next_sync_at=sync.get("next_sync_at"),
        seconds_since_last_sync=seconds,
        is_stale=stale,
        intervals_since_last_sync=None if seconds is None else round(seconds / interval, 3),
        stale_after_seconds=threshold,
        failure_rate=failed / discovered if discovered else 0.0,
        healthy=active and not paused and failures == 0 and not stale,
        dlq_total=failed,
        running_job=job is not None and job.status == "running",
        last_job=job,
    )
