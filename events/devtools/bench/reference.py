"""A fixed workload the bench times next to its figures: how fast this machine was, then.

On a shared virtual machine the CPU a process gets for the same work varies from hour to hour
(the host's other guests); every CPU-per-command figure moves with it. The bench runs this
workload (plain Python: the kind of work serve does between its C calls) before each repeat,
and reports its CPU time: two runs whose reference times differ by 20% should be compared
with that in mind.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Final

__all__ = ["REFERENCE_ROUNDS", "reference_ms"]

REFERENCE_ROUNDS: Final = 5
_DOCUMENT: Final = {
    "sync_config_id": "sync_reference",
    "status": "ACTIVE",
    "pause_holds": [{"hold": "user:ada", "reason": "maintenance", "until": None}],
    "metadata": {f"key_{i}": f"value {i}" for i in range(20)},
}


def _work() -> int:
    """About 25 ms of CPU on the VM of docs/performance.md: dicts, strings, JSON, loops."""
    total = 0
    text = json.dumps(_DOCUMENT)
    for i in range(4_000):
        doc = json.loads(text)
        doc["version"] = i
        doc["status"] = "SUSPENDED" if i % 2 else "ACTIVE"
        labels = [h["hold"].upper() for h in doc["pause_holds"]]
        total += len(labels) + sum(len(k) for k in doc["metadata"])
        total += len(f"{doc['sync_config_id']}:v{i}")
    return total


def reference_ms(rounds: int = REFERENCE_ROUNDS) -> float:
    """The median CPU time (ms, this process's) of ``rounds`` runs of the workload."""
    times = []
    for _ in range(rounds):
        start = time.process_time()
        _work()
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times)
