"""``synclife bench``: throughput and latency of a real ``synclife serve`` on the real stack.

The bench runs ``synclife serve`` as a subprocess (so its peak RSS is its own, read from
``/proc/<pid>/status``), on topics and a consumer group of its own, and drives it like any
client: with aiokafka producers and consumers, through the wire contract. Per sync count
("scale") it creates an organization, a namespace, a key and the syncs (by publishing
``sync.create`` commands and waiting for their results), waits until the scheduler has
requested their first runs (polling interval 900 s, so it stays quiet afterwards), then, per
repeat:

1. **max throughput**: publishes ``--commands`` pause/resume commands at once (alternating per
   sync, so each one is applied), and measures commands / (last result observed - first
   publish);
2. **latency** at a fixed offered load (``--rate``, 1,000/s), at 50% of that repeat's
   maximum and at a low load (``--low-rate``, 200/s): paced publishing, latency = the
   command's scheduled send time (start + i / rate, whenever the pacer got to it: no
   coordinated omission) -> the ``sync.status_changed`` event carrying that command id
   observed by a lifecycle consumer; **relay lag** is read from the same events: the Kafka
   record timestamp (CreateTime: when the relay handed the record to its producer) minus the
   event's ``occurred_at`` (the batch's decision time, taken just before its transaction), an
   upper bound of commit -> publish. Just before the fixed and the low load's phases, the
   **latency baseline** at the same rate: a bare aiokafka produce-then-consume round trip on
   the same broker (``baseline``); the report gives synclife's latency over it;
3. **throughput baseline**: ``pgbench`` on the same Postgres, 4 clients, each transaction one
   command done one at a time (insert the command id, select the sync row for update, update
   it, insert an outbox row), in a scratch schema with as many rows as syncs, each as large as
   a real sync.

Figures are medians over ``--repeats``. Everything the bench creates (topics, tenant, syncs,
their history and processed commands, the scratch schema) is removed at the end unless
``--keep``.

Its modules: ``run`` (a run from start to end), ``phases`` (max throughput, paced latency),
``observers`` (what the bench reads back from Kafka), ``workload`` (the commands), ``serve``
(the process under test), ``database`` (settling, vacuuming, checking, cleaning up),
``pgbench`` (the throughput baseline), ``baseline`` (the latency baseline), ``http``
(``--http``'s round trips), ``report`` (the figures and the table), ``markdown``
(``--markdown``, ``--update``, ``--json``), ``options`` and ``errors``. It drives ``serve``
with ``events.devtools.loadgen``, which the fault suite shares, and samples ``/proc`` with
``events.devtools.procfs``.
"""

from events.devtools.bench.errors import BenchError
from events.devtools.bench.options import BenchOptions
from events.devtools.bench.report import format_table
from events.devtools.bench.run import run_bench

__all__ = ["BenchError", "BenchOptions", "format_table", "run_bench"]
