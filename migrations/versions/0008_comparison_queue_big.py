"""Allow the ``big`` queue on comparisons (``comparisons.queue``).

Pairs whose larger image has more than ``worker.big_image_pixels`` pixels are written on the
``big`` queue (``core.services.routing``), served by a worker of concurrency 1 of its own: the
CHECK constraint of the portable enum gains the value.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 16:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ck_comparisons_comparison_queue"


def upgrade() -> None:
    """``queue IN ('interactive', 'batch', 'big')``."""
    with op.batch_alter_table("comparisons") as batch:
        batch.drop_constraint(op.f(_NAME), type_="check")
        batch.create_check_constraint(op.f(_NAME), "queue IN ('interactive', 'batch', 'big')")


def downgrade() -> None:
    """Back to ``interactive`` and ``batch``: big rows move to their pre-0008 queue."""
    op.execute(
        "UPDATE comparisons SET queue = CASE WHEN batch_id IS NULL THEN 'interactive' "
        "ELSE 'batch' END WHERE queue = 'big'"
    )
    with op.batch_alter_table("comparisons") as batch:
        batch.drop_constraint(op.f(_NAME), type_="check")
        batch.create_check_constraint(op.f(_NAME), "queue IN ('interactive', 'batch')")
