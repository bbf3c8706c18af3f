"""Record when a running comparison's lease was first seen expired (``lease_lost_at``).

The sweeper takes a worker for dead only when the lease it renews (its heartbeat) was still
expired a confirmation period after the sweeper first saw it expired; a live worker renews it
meanwhile (after a database outage, for example), and no crash is counted.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 14:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the nullable ``comparisons.lease_lost_at``."""
    with op.batch_alter_table("comparisons") as batch:
        batch.add_column(sa.Column("lease_lost_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop it."""
    with op.batch_alter_table("comparisons") as batch:
        batch.drop_column("lease_lost_at")
