"""Index the tenant-wide webhook delivery log (``GET /v1/webhook-deliveries``, newest first).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 17:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``ix_webhook_deliveries_tenant_created`` (tenant_id, created_at, id)."""
    op.create_index(
        op.f("ix_webhook_deliveries_tenant_created"),
        "webhook_deliveries",
        ["tenant_id", "created_at", "id"],
        unique=False,
    )


def downgrade() -> None:
    """Drop the index."""
    op.drop_index(op.f("ix_webhook_deliveries_tenant_created"), table_name="webhook_deliveries")
