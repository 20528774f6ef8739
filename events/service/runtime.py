"""The Python runtime of a long-running process: the cyclic garbage collector."""

from __future__ import annotations

import gc
from typing import Final

#: Container objects alive beyond those of the last collection before the youngest generation
#: is collected (Python's default is 700). Python counts allocations minus deallocations, so
#: what triggers a collection is a batch's peak of live objects, not its churn: the documents,
#: models and rows of two batches of 500 commands in flight, 20,000 to 40,000 objects, of
#: which a collection of the young generation traversed every one (about 5 ms), once or twice
#: a batch. Above that peak, a batch's objects are freed by reference counting before any
#: collection; the rare cycles (exceptions, futures) wait a little longer.
YOUNG_THRESHOLD: Final = 100_000


def tune_gc() -> None:
    """Once a process (serve, the gateway) has started (modules imported, settings read):
    what exists now lives as long as the process, so the collector stops scanning it
    (``gc.freeze``), and collects the young generation only past a batch's peak of live
    objects (``YOUNG_THRESHOLD``). At max throughput the collector took about 9% of
    ``serve``'s CPU with Python's thresholds, most of it full collections scanning every
    object of the process; about 3% with a young threshold of 10,000, which a batch still
    crossed; the collections of a batch's objects are gone with this one."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 20, 20)
