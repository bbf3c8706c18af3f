"""Index a batch's comparisons in listing order (``GET /v1/batches/{id}/comparisons``).

The listing (``WHERE tenant_id = ? AND batch_id = ? ORDER BY created_at DESC, id DESC``) had
only the tenant-wide ``(tenant_id, created_at, id)`` index to walk, filtering out every newer
comparison of the tenant's other batches: its cost grew with the tenant's history, not the
page. ``(batch_id, created_at, id)`` reads just the page.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 23:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``ix_comparisons_batch_created`` (batch_id, created_at, id)."""
    op.create_index(
        op.f("ix_comparisons_batch_created"),
        "comparisons",
        ["batch_id", "created_at", "id"],
        unique=False,
    )


def downgrade() -> None:
    """Drop the index."""
    op.drop_index(op.f("ix_comparisons_batch_created"), table_name="comparisons")
