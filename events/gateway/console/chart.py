"""A small bar chart of files synced per run, drawn on the server as SVG (no script)."""

from __future__ import annotations

from typing import Any, Final

__all__ = ["files_chart"]

WIDTH: Final = 480
HEIGHT: Final = 120
_GAP: Final = 4
_TOP: Final = 12  # room for the largest value's label


def files_chart(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Bars for ``runs`` (oldest first): each a rectangle, its label and its title (the
    template escapes every text of it)."""
    values = [int(r.get("files_synced") or 0) for r in runs]
    largest = max(values, default=0)
    count = len(values)
    width = (WIDTH - _GAP * max(count - 1, 0)) / count if count else 0
    bars = []
    for i, (run, value) in enumerate(zip(runs, values, strict=True)):
        height = 0.0 if largest == 0 else (HEIGHT - _TOP) * value / largest
        bars.append(
            {
                "x": round(i * (width + _GAP), 1),
                "y": round(HEIGHT - height, 1),
                "width": round(width, 1),
                "height": round(max(height, 1.0), 1),
                "status": str(run.get("status") or "running"),
                "title": f"{run.get('sync_job_id')}: {value} files synced, "
                f"{int(run.get('files_failed') or 0)} failed ({run.get('status')})",
                "value": value,
            }
        )
    return {"width": WIDTH, "height": HEIGHT, "bars": bars, "largest": largest}
