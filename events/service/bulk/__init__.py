"""Bulk operations: ``sync.bulk.pause``, ``sync.bulk.resume`` and ``sync.bulk.undo``.

- ``requests``: what a consumed batch does with a bulk command (checks it, records it; the
  result comes later, from the worker);
- ``selector``: a selector as SQL, and the match (bounded by ``max_bulk_syncs``);
- ``apply``: the worker's transactions: start an operation (match, items, ``sync.bulk_started``),
  apply a chunk of its items (each sync one versioned change through ``decide``), finish it
  (``sync.bulk_completed`` or ``sync.bulk_undone`` and the command's one result);
- ``worker``: the leader that runs them; ``queries``: an operation's progress, a preview.

Nothing is imported here: the processor imports ``requests``, ``worker`` imports the processor.
"""
