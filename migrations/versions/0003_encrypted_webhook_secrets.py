"""Webhook signing secrets encrypted at rest: widen the secret columns to VARCHAR(512).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00.000000+00:00

The four secret columns now hold ``fernet:v1:`` + a Fernet token (174 characters for a
50-character ``whsec_`` secret; see ``core.db.secretbox``). Existing clear values are left as
they are (they are read as clear text): ``diffall db encrypt-secrets`` encrypts them once keys are
configured. Written by hand; SQLite alters the columns by copying the tables (batch mode).

The downgrade narrows the columns back to VARCHAR(100) and refuses to run while a stored secret
is encrypted: the previous version would sign with the ciphertext.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The tables and their secret columns.
_COLUMNS: dict[str, tuple[str, ...]] = {
    "webhook_endpoints": ("secret", "previous_secret"),
    "webhook_tenant_secrets": ("secret", "previous_secret"),
}
_OLD_LENGTH = 100
_NEW_LENGTH = 512


def _alter(old_length: int, new_length: int) -> None:
    for table, columns in _COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.alter_column(
                    column,
                    existing_type=sa.String(length=old_length),
                    type_=sa.String(length=new_length),
                    existing_nullable=column != "secret",
                )


def upgrade() -> None:
    """Upgrade the schema."""
    _alter(_OLD_LENGTH, _NEW_LENGTH)


def downgrade() -> None:
    """Downgrade the schema (only while every stored secret is clear text)."""
    connection = op.get_bind()
    for table, columns in _COLUMNS.items():
        for column in columns:
            found = connection.execute(
                sa.text(
                    f"SELECT COUNT(*) FROM {table} "
                    f"WHERE {column} LIKE 'fernet:%' OR length({column}) > {_OLD_LENGTH}"
                )
            ).scalar_one()
            if found:
                raise RuntimeError(
                    f"{found} row(s) of {table}.{column} hold an encrypted secret: the previous "
                    "schema stores webhook secrets in clear only; downgrading would make "
                    "deliveries sign with ciphertext"
                )
    _alter(_NEW_LENGTH, _OLD_LENGTH)
