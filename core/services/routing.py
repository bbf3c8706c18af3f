"""Which queue a comparison goes to: the one place the choice is made.

A comparison's queue is chosen once, when it is written (``comparisons.create_comparison``,
``batches.create_batch``), from the stored headers of its two images, and kept on the row
(``comparisons.queue``); every later send (a batch's fan-out, the sweeper's re-sends, the
recovery of a dead worker's job) reads it from there, so a re-sent big job goes back to
``big``.

- ``big``: the larger image of the pair has more than ``worker.big_image_pixels`` pixels
  (single comparisons and batch items alike). One worker process serves it, one job at a
  time, so big jobs never occupy the interactive workers.
- otherwise ``interactive`` for a single comparison, ``batch`` for an item of a batch.
"""

from __future__ import annotations

from core.db.models import ComparisonQueue

__all__ = ["choose_queue", "pair_pixels"]


def pair_pixels(*sizes: tuple[int | None, int | None]) -> int:
    """Pixels of the largest of the images, each given as ``(width, height)``.

    A size not known (None, e.g. a row written before sizes were stored) counts as 0.
    """
    return max((w or 0) * (h or 0) for w, h in sizes) if sizes else 0


def choose_queue(*, in_batch: bool, pixels: int, big_image_pixels: int) -> ComparisonQueue:
    """The queue of a comparison.

    Parameters
    ----------
    in_batch
        Whether the comparison is an item of a batch.
    pixels
        Pixels (width x height) of the larger image of the pair (:func:`pair_pixels`), >= 0.
    big_image_pixels
        ``worker.big_image_pixels`` (>= 1): above it (strictly), the ``big`` queue.

    Returns
    -------
    ComparisonQueue
        ``BIG`` above the threshold, else ``BATCH`` for a batch item, ``INTERACTIVE`` otherwise.
    """
    if pixels > big_image_pixels:
        return ComparisonQueue.BIG
    return ComparisonQueue.BATCH if in_batch else ComparisonQueue.INTERACTIVE
