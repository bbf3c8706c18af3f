"""Stable Celery task and queue names: registered by the worker, sent by name by the API.

A refactor of the worker never orphans queued messages, because these strings never change.
"""

from __future__ import annotations

#: Run one comparison; args: [comparison_id: str].
RUN_COMPARISON = "diffall.comparisons.run"
#: Periodic: re-send queued jobs never picked up, recover running jobs whose worker vanished.
SWEEP = "diffall.sweeper.sweep"
#: Send the run tasks of a large batch's comparisons from a worker; args: [batch_id: str].
ENQUEUE_BATCH = "diffall.batches.enqueue"

#: Queue of single comparisons submitted interactively: served before batch work.
QUEUE_INTERACTIVE = "interactive"
#: Queue of comparisons submitted in batches.
QUEUE_BATCH = "batch"
#: Queue of housekeeping tasks (the sweeper).
QUEUE_MAINTENANCE = "maintenance"
