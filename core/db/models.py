"""Database models (SQLAlchemy 2, typed declarative), portable to PostgreSQL and SQLite.

Conventions
-----------
- Every constraint and index is named (:data:`NAMING_CONVENTION`), so migrations can drop or
  alter them by name on both databases.
- Ids are UUIDs (``sa.Uuid``: native ``uuid`` on PostgreSQL, ``CHAR(32)`` on SQLite).
- JSON columns are ``JSONB`` on PostgreSQL, ``JSON`` elsewhere; Python ``None`` stores SQL NULL.
- Timestamps are :class:`UTCDateTime`: timezone-aware UTC in and out on both databases (naive
  datetimes are refused; SQLite, which has no time zones, stores UTC text that sorts correctly).
- String enums are ``VARCHAR(32)`` plus a named CHECK constraint (no native PostgreSQL enum
  types, so adding a value is a CHECK change, not a type change). The values are the
  :class:`~enum.StrEnum` classes below, which services import.
- Tenant isolation is also enforced by the database: a comparison's images and batch are
  referenced through composite foreign keys ``(tenant_id, id)``, so a row can never point at
  another tenant's image or batch.
- There are no ORM relationships: services query what they need explicitly (no lazy loads after
  the session closed, no hidden N+1 queries).
- ``ON DELETE``: deleting a tenant deletes everything it owns; deleting a batch deletes its
  comparisons; an image referenced by a comparison cannot be deleted; deleting a webhook
  endpoint deletes its deliveries and their attempts.
- Webhook signing secrets (``whsec_...``) are HMAC keys the service must read back to sign every
  delivery (a one-way hash cannot sign), so they are stored encrypted, not hashed: the
  :class:`~core.db.secretbox.EncryptedSecret` columns hold ``fernet:v1:<token>`` under the first
  key of ``DIFFALL_WEBHOOKS__SECRET_KEYS`` and services see the clear secret. With no key
  configured (the embedded default; refused in production) they are stored in clear, and a clear
  value is always read as such, so rows written before a key was set keep working until
  ``diffall db encrypt-secrets`` rewrites them. API keys, which only need checking, are stored
  hashed.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core.db.secretbox import EncryptedSecret
from core.netguard.classify import MAX_URL_LENGTH

__all__ = [
    "FINAL_STATES",
    "NAMING_CONVENTION",
    "OPEN_STATES",
    "ApiKey",
    "Base",
    "Batch",
    "BrowserSession",
    "Comparison",
    "ComparisonQueue",
    "ComparisonState",
    "IdempotencyKey",
    "IdempotencyState",
    "Image",
    "ImageStatus",
    "JSONType",
    "SigninToken",
    "Tenant",
    "UTCDateTime",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookDeliveryState",
    "WebhookDisabledReason",
    "WebhookEndpoint",
    "WebhookEvent",
    "WebhookEventType",
    "WebhookTenantSecret",
    "utcnow",
]

#: Names for every index (ix), unique (uq), check (ck), foreign key (fk) and primary key (pk).
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Length of the VARCHAR holding a string enum (room for values added later).
ENUM_LENGTH = 32
#: Length of URL columns (webhook URLs), in characters: the longest URL the guard accepts.
URL_LENGTH = MAX_URL_LENGTH
#: Length of object-storage key columns, in characters.
STORAGE_KEY_LENGTH = 512


def utcnow() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always returns aware UTC datetimes.

    Binding a naive datetime raises ``ValueError`` (it would be ambiguous). Aware values are
    converted to UTC; on SQLite they are stored as naive UTC text (fixed width, so text order is
    time order) and read back with ``tzinfo=UTC``.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert an aware datetime to UTC (naive on SQLite); refuse naive input."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r} refused: use an aware UTC datetime")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return the stored time as an aware UTC datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: Portable JSON column type: ``JSONB`` on PostgreSQL, ``JSON`` elsewhere; None is SQL NULL.
JSONType = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class ImageStatus(enum.StrEnum):
    """Lifecycle of an image row."""

    PENDING = "pending"  # presigned upload issued, bytes not yet received and validated
    READY = "ready"  # bytes stored under images/<sha256>, header validated


class ComparisonQueue(enum.StrEnum):
    """Celery queue a comparison is sent to (interactive work is never behind batches)."""

    INTERACTIVE = "interactive"
    BATCH = "batch"
    BIG = "big"
    """Pairs above ``worker.big_image_pixels`` (``core.services.routing``), single or batch."""


class ComparisonState(enum.StrEnum):
    """State of a comparison job; ``succeeded``, ``failed`` and ``canceled`` are final."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        """True for the states a comparison never leaves."""
        return self in FINAL_STATES


#: States a comparison never leaves (defined once; the state machine is
#: ``core.services.lifecycle``).
FINAL_STATES: frozenset[ComparisonState] = frozenset(
    {ComparisonState.SUCCEEDED, ComparisonState.FAILED, ComparisonState.CANCELED}
)
#: States a comparison can still leave.
OPEN_STATES: tuple[ComparisonState, ...] = (ComparisonState.QUEUED, ComparisonState.RUNNING)


class WebhookEventType(enum.StrEnum):
    """Type of a webhook event (the ``type`` of its payload)."""

    COMPARISON_SUCCEEDED = "comparison.succeeded"
    COMPARISON_FAILED = "comparison.failed"
    BATCH_COMPLETED = "batch.completed"
    PING = "ping"
    ENDPOINT_DISABLED = "endpoint.disabled"


class WebhookDeliveryState(enum.StrEnum):
    """State of one event's delivery to one target; ``succeeded`` and ``failed`` are final
    (a final delivery can be sent again by hand: retry, recover)."""

    PENDING = "pending"  # waiting for ``due_at``
    SENDING = "sending"  # claimed by a dispatcher pass; ``due_at`` is the end of the lease
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookDisabledReason(enum.StrEnum):
    """Why a webhook endpoint is disabled."""

    MANUAL = "manual"  # the tenant disabled it
    GONE = "gone"  # the receiver answered 410 Gone
    FAILING = "failing"  # every delivery failed for ``webhooks.disable_after_s``


class IdempotencyState(enum.StrEnum):
    """State of an ``Idempotency-Key`` record."""

    IN_PROGRESS = "in_progress"  # first request still running: a concurrent duplicate gets 409
    DONE = "done"  # response stored: a replay returns it


def _str_enum(enum_class: type[enum.StrEnum], name: str) -> sa.Enum:
    """A portable string enum: VARCHAR(32) and a CHECK constraint ``ck_<table>_<name>``."""
    return sa.Enum(
        enum_class,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=ENUM_LENGTH,
        validate_strings=True,
        values_callable=lambda members: [member.value for member in members],
    )


class Base(DeclarativeBase):
    """Declarative base: shared metadata with the naming convention."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 (SQLAlchemy reads this class attribute)
        datetime: UTCDateTime(),
        uuid.UUID: sa.Uuid(),
    }


def _created_at() -> Mapped[datetime]:
    """A ``created_at`` column set by Python when the row is inserted."""
    return mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class Tenant(Base):
    """A customer; owns API keys, images, batches and comparisons."""

    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    created_at: Mapped[datetime] = _created_at()


class ApiKey(Base):
    """An API key, stored only as the SHA-256 of the full key."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    prefix: Mapped[str] = mapped_column(sa.String(16))
    """First characters of the key, shown to humans to tell keys apart (not secret)."""
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    """Lower-case hex SHA-256 of the full key (64 characters)."""
    created_at: Mapped[datetime] = _created_at()
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    __table_args__ = (sa.CheckConstraint("length(key_hash) = 64", name="key_hash_length"),)


class SigninToken(Base):
    """A one-time sign-in link's token (the viewer's, printed by ``diffall serve``), hashed."""

    __tablename__ = "signin_tokens"

    token_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    """Lower-case hex SHA-256 of the token."""
    api_key_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("api_keys.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = _created_at()
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class BrowserSession(Base):
    """A viewer's cookie session, acting as the tenant of the API key it came from."""

    __tablename__ = "browser_sessions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    """Lower-case hex SHA-256 of the cookie's value."""
    api_key_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("api_keys.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = _created_at()
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


class Image(Base):
    """An image a tenant uploaded.

    A ``ready`` image has its SHA-256, size, format and dimensions; its bytes live at
    ``storage_key`` (``images/<sha256>``, shared by tenants uploading the same bytes). A
    ``pending`` image is a presigned upload not finalised yet: its sha256 and header fields are
    NULL and ``storage_key`` is where the client PUTs the bytes.

    ``(tenant_id, sha256)`` is unique. NULLs are distinct in unique constraints on both
    PostgreSQL and SQLite, so any number of pending rows coexist, while a tenant has at most one
    ready row per content. Finalising a pending upload whose bytes a ready row already holds must
    therefore return that row (and delete the pending one) instead of setting the sha256.
    """

    __tablename__ = "images"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    status: Mapped[ImageStatus] = mapped_column(
        _str_enum(ImageStatus, "image_status"), default=ImageStatus.READY
    )
    sha256: Mapped[str | None] = mapped_column(sa.String(64))
    """Lower-case hex SHA-256 of the bytes; NULL while pending."""
    storage_key: Mapped[str] = mapped_column(sa.String(STORAGE_KEY_LENGTH))
    size_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    format: Mapped[str | None] = mapped_column(sa.String(16))
    """Decoder's format name, e.g. ``PNG`` or ``JPEG``."""
    width: Mapped[int | None]
    """Width in pixels."""
    height: Mapped[int | None]
    """Height in pixels."""
    created_at: Mapped[datetime] = _created_at()

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "sha256"),
        # Target of the composite foreign keys that keep comparisons within one tenant.
        sa.UniqueConstraint("tenant_id", "id"),
        sa.CheckConstraint(
            "status <> 'ready' OR (sha256 IS NOT NULL AND size_bytes IS NOT NULL"
            " AND format IS NOT NULL AND width IS NOT NULL AND height IS NOT NULL)",
            name="ready_complete",
        ),
        sa.CheckConstraint("size_bytes IS NULL OR size_bytes >= 0", name="size_bytes_nonnegative"),
        sa.CheckConstraint(
            "(width IS NULL OR width > 0) AND (height IS NULL OR height > 0)",
            name="dimensions_positive",
        ),
    )


class Batch(Base):
    """A group of comparisons submitted in one request."""

    __tablename__ = "batches"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    client_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType)
    """The client's own reference, echoed back (column ``metadata``)."""
    webhook_url: Mapped[str | None] = mapped_column(sa.String(URL_LENGTH))
    total: Mapped[int] = mapped_column(default=0)
    """Number of comparisons accepted in the batch."""
    created_at: Mapped[datetime] = _created_at()
    completed_at: Mapped[datetime | None]
    """When the last comparison of the batch reached a final state (set exactly once)."""

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "id"),
        sa.Index("ix_batches_tenant_created", "tenant_id", "created_at", "id"),
        sa.CheckConstraint("total >= 0", name="total_nonnegative"),
    )


class Comparison(Base):
    """One comparison job of image A against image B and, once done, its result."""

    __tablename__ = "comparisons"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    batch_id: Mapped[uuid.UUID | None]
    image_a_id: Mapped[uuid.UUID]
    image_b_id: Mapped[uuid.UUID]
    options: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    """Engine options as given (validated by the service)."""
    client_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType)
    """The client's own reference, echoed back (column ``metadata``)."""
    webhook_url: Mapped[str | None] = mapped_column(sa.String(URL_LENGTH))
    queue: Mapped[ComparisonQueue] = mapped_column(
        _str_enum(ComparisonQueue, "comparison_queue"), default=ComparisonQueue.INTERACTIVE
    )
    state: Mapped[ComparisonState] = mapped_column(
        _str_enum(ComparisonState, "comparison_state"), default=ComparisonState.QUEUED
    )
    attempt: Mapped[int] = mapped_column(default=0)
    """Times a worker claimed the job; a worker writes results only if its attempt holds."""
    crash_count: Mapped[int] = mapped_column(default=0)
    """Times a worker died (or hit the hard time limit) while running the job."""
    error_code: Mapped[str | None] = mapped_column(sa.String(64))
    """Stable error code when ``failed`` (the engine's, or e.g. ``worker_crashed``)."""
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    """The result contract (scores, verdict, alignment, regions) when ``succeeded``."""
    heatmap_key: Mapped[str | None] = mapped_column(sa.String(STORAGE_KEY_LENGTH))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    enqueued_at: Mapped[datetime | None]
    """When the task message was last sent (the sweeper re-sends stale ones)."""
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    lease_expires_at: Mapped[datetime | None]
    """While ``running``: the lease its worker renews (heartbeat); once it has expired the
    sweeper may treat the worker as gone."""
    lease_lost_at: Mapped[datetime | None]
    """When the sweeper first saw the lease expired (a heartbeat clears it); the worker is
    taken for dead only if the lease is still expired ``worker.lease_confirm_s`` later."""

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "batch_id"], ["batches.tenant_id", "batches.id"], ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["tenant_id", "image_a_id"], ["images.tenant_id", "images.id"]),
        sa.ForeignKeyConstraint(["tenant_id", "image_b_id"], ["images.tenant_id", "images.id"]),
        # Cursor pagination: WHERE tenant_id = ? AND (created_at, id) < (?, ?) ORDER BY ... DESC.
        sa.Index("ix_comparisons_tenant_created", "tenant_id", "created_at", "id"),
        # Sweeper: queued or running rows by age.
        sa.Index("ix_comparisons_state_updated", "state", "updated_at"),
        # Batch progress: counts by state.
        sa.Index("ix_comparisons_batch_state", "batch_id", "state"),
        # A batch's comparisons newest first (cursor pagination within one batch).
        sa.Index("ix_comparisons_batch_created", "batch_id", "created_at", "id"),
        sa.CheckConstraint("attempt >= 0", name="attempt_nonnegative"),
        sa.CheckConstraint("crash_count >= 0", name="crash_count_nonnegative"),
    )


class IdempotencyKey(Base):
    """A stored ``Idempotency-Key``: the first response, replayed for the same key and body."""

    __tablename__ = "idempotency_keys"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    """Hex SHA-256 of the request (method, path, body): another body under the key is 422."""
    state: Mapped[IdempotencyState] = mapped_column(
        _str_enum(IdempotencyState, "idempotency_state"), default=IdempotencyState.IN_PROGRESS
    )
    status_code: Mapped[int | None]
    response_body: Mapped[Any | None] = mapped_column(JSONType)
    response_headers: Mapped[dict[str, str] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = _created_at()
    expires_at: Mapped[datetime] = mapped_column(index=True)
    """After this the key may be purged (kept at least 24 h)."""

    __table_args__ = (
        sa.CheckConstraint(
            "state <> 'done' OR status_code IS NOT NULL", name="done_has_status_code"
        ),
    )


#: Length of a signing secret column, in characters: its stored form is ``fernet:v1:`` + a Fernet
#: token, 174 characters for a 50-character ``whsec_`` secret; 512 leaves room for longer ones.
SECRET_LENGTH = 512


class WebhookEndpoint(Base):
    """A URL a tenant registered to receive webhook events, with its own signing secret.

    ``secret`` signs every delivery; after a rotation ``previous_secret`` signs too until
    ``previous_secret_expires_at`` (two ``v1,`` signatures in one header). Secrets are encrypted
    at rest (see the module docstring).
    """

    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(sa.String(URL_LENGTH))
    description: Mapped[str | None] = mapped_column(sa.String(500))
    events: Mapped[list[str]] = mapped_column(JSONType, default=list)
    """Event types delivered to this endpoint (``ping`` is always allowed)."""
    enabled: Mapped[bool] = mapped_column(default=True)
    disabled_reason: Mapped[WebhookDisabledReason | None] = mapped_column(
        _str_enum(WebhookDisabledReason, "webhook_disabled_reason")
    )
    disabled_at: Mapped[datetime | None]
    failing_since: Mapped[datetime | None]
    """First failed attempt since the last success (None while healthy)."""
    secret: Mapped[str] = mapped_column(EncryptedSecret(SECRET_LENGTH))
    previous_secret: Mapped[str | None] = mapped_column(EncryptedSecret(SECRET_LENGTH))
    previous_secret_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "id"),
        sa.Index("ix_webhook_endpoints_tenant_created", "tenant_id", "created_at", "id"),
    )


class WebhookTenantSecret(Base):
    """A tenant's default signing secret: signs deliveries to per-comparison and per-batch
    ``webhook_url`` targets. Created on first need; rotated like an endpoint's secret."""

    __tablename__ = "webhook_tenant_secrets"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    secret: Mapped[str] = mapped_column(EncryptedSecret(SECRET_LENGTH))
    previous_secret: Mapped[str | None] = mapped_column(EncryptedSecret(SECRET_LENGTH))
    previous_secret_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = _created_at()
    rotated_at: Mapped[datetime | None]


class WebhookEvent(Base):
    """An outbox event: written in the transaction that caused it; its id is the
    ``webhook-id`` of every delivery and retry of it."""

    __tablename__ = "webhook_events"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    type: Mapped[WebhookEventType] = mapped_column(
        _str_enum(WebhookEventType, "webhook_event_type")
    )
    subject_id: Mapped[uuid.UUID | None]
    """The comparison, batch or endpoint the event is about."""
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    """The payload's ``data`` (links relative to the API's base URL)."""
    created_at: Mapped[datetime] = _created_at()

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "id"),
        sa.Index("ix_webhook_events_subject", "subject_id", "type"),
    )


class WebhookDelivery(Base):
    """One event to one target (a registered endpoint, or an ad-hoc ``webhook_url``).

    The schedule lives here: the dispatcher picks rows whose ``due_at`` has passed
    (``pending``: the next attempt is due; ``sending``: the claim's lease expired) and sends one
    task per row, fenced by ``claim_id``.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    event_id: Mapped[uuid.UUID]
    endpoint_id: Mapped[uuid.UUID | None]
    """The registered endpoint, or None for an ad-hoc ``webhook_url`` (tenant default secret)."""
    url: Mapped[str] = mapped_column(sa.String(URL_LENGTH))
    """Target when the delivery was created (an endpoint's current URL is used when sending)."""
    state: Mapped[WebhookDeliveryState] = mapped_column(
        _str_enum(WebhookDeliveryState, "webhook_delivery_state"),
        default=WebhookDeliveryState.PENDING,
    )
    attempt_count: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int | None]
    """Attempts after which a failing delivery ends ``failed``; None means the length of the
    retry schedule (``webhooks.retry_schedule_s``); a manual retry sets it to one more."""
    due_at: Mapped[datetime | None]
    """``pending``: when the next attempt is due; ``sending``: end of the lease; else None."""
    claim_id: Mapped[uuid.UUID | None]
    """Fencing token of the current claim (the task carries it)."""
    attempt_started_at: Mapped[datetime | None]
    """Set while a task is posting (a claim found with it set lost its worker)."""
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "event_id"],
            ["webhook_events.tenant_id", "webhook_events.id"],
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "endpoint_id"],
            ["webhook_endpoints.tenant_id", "webhook_endpoints.id"],
            ondelete="CASCADE",
        ),
        # Dispatcher: WHERE due_at <= now ORDER BY due_at (final rows have NULL).
        sa.Index("ix_webhook_deliveries_due", "due_at"),
        # Delivery log: one endpoint's deliveries, newest first.
        sa.Index("ix_webhook_deliveries_endpoint_created", "endpoint_id", "created_at", "id"),
        # Delivery log: the tenant's deliveries, newest first (/v1/webhook-deliveries).
        sa.Index("ix_webhook_deliveries_tenant_created", "tenant_id", "created_at", "id"),
        sa.Index("ix_webhook_deliveries_event", "event_id"),
        sa.CheckConstraint("attempt_count >= 0", name="attempt_count_nonnegative"),
        sa.CheckConstraint("max_attempts >= 1", name="max_attempts_positive"),
    )


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery (or a lost one: ``error_code`` ``worker_lost``)."""

    __tablename__ = "webhook_attempts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    number: Mapped[int]
    """1 for the first attempt of the delivery."""
    started_at: Mapped[datetime]
    duration_ms: Mapped[int | None]
    status_code: Mapped[int | None]
    error_code: Mapped[str | None] = mapped_column(sa.String(64))
    error_message: Mapped[str | None] = mapped_column(sa.String(500))
    response_body: Mapped[str | None] = mapped_column(sa.Text)
    """The first kilobyte of the response (decoded as UTF-8, errors replaced)."""

    __table_args__ = (
        sa.UniqueConstraint("delivery_id", "number"),
        sa.CheckConstraint("number >= 1", name="number_positive"),
    )
