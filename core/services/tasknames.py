"""Stable Celery task and queue names: registered by the worker, sent by name by the API.

A refactor of the worker never orphans queued messages, because these strings never change.
"""

from __future__ import annotations

#: Run one comparison; args: [comparison_id: str].
RUN_COMPARISON = "diffall.comparisons.run"
#: Periodic: re-send queued jobs never picked up, recover running jobs whose worker vanished.
SWEEP = "diffall.sweeper.sweep"
#: Periodic, frequent: take back the running jobs of dead workers (the sweeper's first step).
RECOVER = "diffall.sweeper.recover"
#: Send the run tasks of a large batch's comparisons from a worker; args: [batch_id: str].
ENQUEUE_BATCH = "diffall.batches.enqueue"
#: Periodic: delete presigned uploads never finalised (``limits.pending_upload_max_age_s``).
SWEEP_UPLOADS = "diffall.uploads.sweep"

#: Periodic: claim the webhook deliveries that are due and send one deliver task each.
WEBHOOK_DISPATCH = "diffall.webhooks.dispatch"
#: Send one webhook delivery (one HTTP attempt); args: [delivery_id: str, claim_id: str].
WEBHOOK_DELIVER = "diffall.webhooks.deliver"

#: Queue of single comparisons submitted interactively: served before batch work.
QUEUE_INTERACTIVE = "interactive"
#: Queue of comparisons submitted in batches.
QUEUE_BATCH = "batch"
#: Queue of comparisons whose larger image exceeds ``worker.big_image_pixels`` (single or
#: batch): served by a worker of its own, one job at a time, so a big job never occupies the
#: interactive workers.
QUEUE_BIG = "big"
#: Queue of housekeeping tasks (the sweeper, the webhook dispatcher and deliveries).
QUEUE_MAINTENANCE = "maintenance"
