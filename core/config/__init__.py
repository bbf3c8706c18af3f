"""Settings: one pydantic-settings object, built lazily by :func:`get_settings`.

Every variable is read from the environment with the prefix ``DIFFALL_``; nested groups use
``__`` as the delimiter, e.g. ``DIFFALL_STORAGE__BACKEND=s3`` or
``DIFFALL_WORKER__HARD_TIME_LIMIT_S=300``. A ``.env`` file in the working directory is read too
(the environment wins). Empty values count as unset, so a copy of ``.env.example`` behaves like
the defaults. Nothing reads the environment at import time: call :func:`get_settings` (cached;
tests call ``get_settings.cache_clear()`` after changing the environment).

Defaults are the embedded, server-less setup: everything lives under ``data_dir``
(``./diffall-data``): the SQLite database, the local object store and Celery's filesystem broker.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from cryptography.fernet import Fernet
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.config.machine import MIB, job_memory_share, machine_memory_bytes, usable_cpus
from core.netguard.classify import IPNetwork, parse_allowed_networks

__all__ = [
    "DEFAULT_BIG_IMAGE_PIXELS",
    "PLACEHOLDER_SECRETS",
    "REDIS_SCHEMES",
    "ApiSettings",
    "LimitsSettings",
    "Settings",
    "StorageSettings",
    "WebhookSettings",
    "WorkerSettings",
    "ensure_broker_folders",
    "get_settings",
    "job_memory_share",
    "machine_memory_bytes",
    "usable_cpus",
]

#: Values refused as secrets when ``env == "production"`` (compared lower-cased and stripped).
PLACEHOLDER_SECRETS: frozenset[str] = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "change_me",
        "minioadmin",
        "password",
        "secret",
        "admin",
        "test",
        "testing",
        "example",
        "postgres",
        "diffall",
    }
)

#: Seconds added to the hard time limit for the default ``stale_running_after_s``.
STALE_RUNNING_MARGIN_S = 30

#: Default ``worker.big_image_pixels``: 4096 x 4096 (16.8 MP), the size above which the viewer
#: tiles previews too.
DEFAULT_BIG_IMAGE_PIXELS = 4096 * 4096
#: URL schemes of kombu's Redis transport (``redis+socket``: the embedded default's server).
REDIS_SCHEMES = ("redis", "rediss", "redis+socket", "sentinel")
#: The environment variable of ``Settings.webhook_allowed_networks`` (named in the 422 that
#: refuses a webhook URL an operator could allow).
ALLOWED_NETWORKS_ENV = "DIFFALL_WEBHOOK_ALLOWED_NETWORKS"
#: Largest ``limit`` of any paginated listing, in items (``limits.page_size_max`` may lower it).
MAX_PAGE_SIZE = 100
#: Page size of a listing when the request gives no ``limit``, in items.
DEFAULT_PAGE_SIZE = 50


def _is_placeholder(value: str) -> bool:
    """Return True when ``value`` is empty or a well-known placeholder secret."""
    normalised = value.strip().lower()
    return normalised in PLACEHOLDER_SECRETS or "changeme" in normalised.replace("-", "").replace(
        "_", ""
    )


class _Group(BaseModel):
    """Base of the nested settings groups: unknown keys are errors, values are validated."""

    model_config = ConfigDict(
        extra="forbid",
        validate_default=True,
        hide_input_in_errors=True,
        use_attribute_docstrings=True,  # each field's docstring is its description (docs)
    )


class StorageSettings(_Group):
    """Object storage (``DIFFALL_STORAGE__*``)."""

    backend: Literal["local", "s3"] = "local"
    """Which object store to use: a local directory or any S3 API (MinIO, AWS, moto)."""

    local_dir: Path = Path("storage")
    """Directory of the local store. A relative path is taken relative to ``data_dir``
    (default ``<data_dir>/storage``); the resolved value is always absolute."""

    s3_endpoint_url: str | None = None
    """S3 endpoint the service talks to (e.g. ``http://minio:9000``); None means AWS."""

    s3_presign_endpoint_url: str | None = None
    """Endpoint written into presigned URLs given to clients, when it differs from the one the
    service uses (e.g. ``http://localhost:9000`` outside the compose network); None means
    ``s3_endpoint_url``."""

    s3_bucket: str = Field(default="diffall", min_length=3, max_length=63)
    """Bucket holding images and heatmaps (3 to 63 characters)."""

    s3_region: str = "us-east-1"
    """Region used to sign S3 requests."""

    s3_access_key_id: SecretStr | None = None
    """S3 access key id; None uses boto3's default credential chain."""

    s3_secret_access_key: SecretStr | None = None
    """S3 secret access key; None uses boto3's default credential chain."""

    presign_expiry_s: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    """Lifetime of presigned URLs, in seconds (1 s to 7 days, S3's maximum)."""


class LimitsSettings(_Group):
    """Limits enforced by the API (``DIFFALL_LIMITS__*``); each refusal has a stable code."""

    max_upload_bytes: int = Field(default=50 * MIB, ge=1)
    """Largest accepted image file, in bytes (default 50 MiB)."""

    max_pixels: int = Field(default=100_000_000, ge=1)
    """Largest accepted image, in decoded pixels (width x height), checked from the header."""

    max_batch_pairs: int = Field(default=10_000, ge=1)
    """Most pairs accepted in one batch request."""

    rate_limit_per_minute: int = Field(default=600, ge=1)
    """Requests allowed per API key per minute."""

    failed_auth_per_minute: int = Field(default=30, ge=1)
    """Failed API-key checks allowed per client address per minute; beyond, every request from
    the address is refused with 429 ``too_many_failed_logins`` and ``Retry-After`` before its
    key is looked at. The address is the connection's peer: behind a proxy, run uvicorn with
    ``--proxy-headers --forwarded-allow-ips=<proxy>`` so that it is the client's."""

    page_size_max: int = Field(default=MAX_PAGE_SIZE, ge=1)
    """Largest ``limit`` accepted by paginated listings, in items."""

    job_memory_mb: int | None = Field(default=None, ge=1)
    """Memory one comparison may use at its peak, in MiB (decoded images and the engine's
    intermediates, estimated from the headers before decoding; above it, ``image_too_large``).
    Unset: 75 % of this machine's memory (cgroup limit included) divided by the comparison
    processes that may run at once (``worker.processes`` + 1, room for one more comparison process),
    filled in when the settings are built (:func:`job_memory_share`).
    None only in a bare ``LimitsSettings()``: no budget."""

    @property
    def job_memory_bytes(self) -> int | None:
        """:attr:`job_memory_mb` in bytes (None: no budget)."""
        return None if self.job_memory_mb is None else self.job_memory_mb * MIB

    max_concurrent_uploads: int = Field(default=16, ge=1)
    """Uploads one API process receives at once (bodies are spooled to disk); one more is
    refused with 503 ``too_many_uploads`` and ``Retry-After``."""

    upload_spool_memory_bytes: int = Field(default=1 * MIB, ge=0)
    """Bytes of an upload kept in memory before the rest is spooled to a temporary file."""

    pending_upload_max_age_s: int = Field(default=24 * 3600, ge=60)
    """Seconds after which a presigned upload never finalised is deleted with its stored bytes
    (default 24 h; never sooner than its URL expires, ``storage.presign_expiry_s``)."""


class WorkerSettings(_Group):
    """Celery workers and the sweeper (``DIFFALL_WORKER__*``)."""

    soft_time_limit_s: int = Field(default=120, ge=1)
    """Seconds after which a comparison task gets ``SoftTimeLimitExceeded``."""

    hard_time_limit_s: int = Field(default=150, ge=1)
    """Seconds after which the worker process running a task is killed; > soft limit."""

    max_attempts: int = Field(default=3, ge=1)
    """Attempts (worker crashes included) before a comparison ends ``failed``."""

    sweep_interval_s: int = Field(default=30, ge=1)
    """Seconds between two passes of the sweeper."""

    stale_running_after_s: int = Field(
        default_factory=lambda data: (
            int(data.get("hard_time_limit_s", 150)) + STALE_RUNNING_MARGIN_S
        ),
        ge=1,
    )
    """Seconds after which a ``running`` comparison whose worker vanished is re-sent by the
    sweeper (its lease); default hard time limit + 30 s; must exceed the hard time limit."""

    stale_queued_after_s: int = Field(default=60, ge=1)
    """Seconds a comparison may stay ``queued`` before the sweeper re-sends its message."""

    heartbeat_interval_s: float = Field(default=2.0, gt=0.0, le=60.0)
    """Seconds between two renewals of a running job's lease by the process running it (a
    thread beside the job)."""

    lease_s: float = Field(default=10.0, gt=0.0, le=3600.0)
    """Seconds a running job's lease lasts from its last renewal; >= 3 heartbeats. A worker
    that stops renewing (it died) loses the job after it."""

    lease_confirm_s: float = Field(default=4.0, ge=0.0, le=3600.0)
    """Seconds a lease must stay expired after the sweeper first saw it expired before a crash
    is counted (a live worker renews it meanwhile, e.g. after a database outage); >= 2
    heartbeats."""

    recover_interval_s: float = Field(default=5.0, gt=0.0, le=3600.0)
    """Seconds between two passes that take back the jobs of dead workers (a light part of the
    sweeper). A dead worker's job is queued again within about ``lease_s + lease_confirm_s +
    2 * recover_interval_s`` (20 s... 24 s by default)."""

    final_write_retry_s: float = Field(default=60.0, ge=0.0, le=3600.0)
    """Seconds the final write of a job (and its give-back) is retried while the database is
    unavailable, before the job is given back to the broker's retry."""

    nice: int = Field(default=10, ge=0, le=19)
    """Niceness added to each pool process of a prefork worker when it starts (0: none). On a
    machine the API shares with the workers (``diffall serve``, one host), the API's requests
    (polls, uploads) then get the CPU first and the comparisons take the rest; in containers
    with CPU shares of their own it changes nothing."""

    concurrency: int | None = Field(default=None, ge=1, le=256)
    """Comparison worker processes per worker (``diffall serve``, compose's ``worker``); None:
    the CPUs + 1 (see :attr:`processes`)."""

    image_cache_mb: int = Field(default=256, ge=0)
    """Per worker process: memory for recently read images (content-addressed, so never stale),
    in MiB; 0 turns the cache off."""

    big_image_pixels: int = Field(default=DEFAULT_BIG_IMAGE_PIXELS, ge=1)
    """Pixels (width x height, from the stored headers) of the larger image of a pair above
    which the comparison goes to the ``big`` queue, served by a worker of concurrency 1 of its
    own (``diffall serve``; compose's ``worker-big``), so a big job never delays an interactive
    one beyond the engine run already under way. Default 16,777,216 (4096 x 4096)."""

    visibility_timeout_s: int = Field(default=3600, ge=1)
    """Redis broker visibility timeout, in seconds: an unacknowledged message is redelivered
    after it. Must exceed the hard time limit (late acks hold the message while running)."""

    @property
    def processes(self) -> int:
        """Comparison worker processes: ``concurrency``, or by default :func:`usable_cpus` + 1
        (a comparison also waits on storage and the database; one process more than CPUs keeps
        them busy meanwhile; bench/bench_webhooks.py measured it)."""
        if self.concurrency is not None:
            return self.concurrency
        return usable_cpus() + 1

    @model_validator(mode="after")
    def _check_time_limits(self) -> WorkerSettings:
        """Refuse time limits that would redeliver or re-send jobs still running."""
        hard = self.hard_time_limit_s
        if self.soft_time_limit_s >= hard:
            raise ValueError(
                f"worker.soft_time_limit_s ({self.soft_time_limit_s}) must be smaller than "
                f"worker.hard_time_limit_s ({hard})"
            )
        if self.visibility_timeout_s <= hard:
            raise ValueError(
                f"worker.visibility_timeout_s ({self.visibility_timeout_s}) must be greater than "
                f"worker.hard_time_limit_s ({hard}), or the broker redelivers running tasks"
            )
        beat = self.heartbeat_interval_s
        if self.lease_s < 3 * beat or self.lease_confirm_s < 2 * beat:
            raise ValueError(
                f"worker.lease_s ({self.lease_s}) must be at least 3 heartbeats and "
                f"worker.lease_confirm_s ({self.lease_confirm_s}) at least 2 heartbeats "
                f"(worker.heartbeat_interval_s = {beat}), or live workers lose their jobs"
            )
        if self.stale_running_after_s <= hard:
            raise ValueError(
                f"worker.stale_running_after_s ({self.stale_running_after_s}) must be greater "
                f"than worker.hard_time_limit_s ({hard}), or the sweeper re-sends running jobs"
            )
        return self


class ApiSettings(_Group):
    """The HTTP API (``DIFFALL_API__*``)."""

    public_base_url: str = "http://127.0.0.1:8000"
    """Base URL clients reach the API at; used to build links (no trailing slash)."""

    preview_max_side: int = Field(default=2048, ge=256, le=8192)
    """Longest side, in pixels, of the viewer's downscaled previews of big comparisons (the top
    level of their tile pyramid; see ``core.imaging.pyramid``)."""

    preview_tiled_above_pixels: int = Field(default=4096 * 4096, ge=1)
    """Images A larger than this (width x height) are shown by the viewer from the downscaled
    previews and full-resolution tiles; smaller ones from full-resolution PNGs."""

    @field_validator("public_base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        """Require an absolute http(s) URL and drop any trailing slash."""
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"api.public_base_url must be an http(s) URL, got {value!r}")
        return value.rstrip("/")


#: Default retry schedule of webhook deliveries, in seconds: the wait before each attempt after
#: the previous one failed (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h).
DEFAULT_WEBHOOK_SCHEDULE_S: tuple[float, ...] = (
    0.0,
    5.0,
    300.0,
    1800.0,
    7200.0,
    18000.0,
    36000.0,
    50400.0,
    72000.0,
    86400.0,
)


class WebhookSettings(_Group):
    """Webhook delivery (``DIFFALL_WEBHOOKS__*``)."""

    retry_schedule_s: Annotated[tuple[float, ...], NoDecode] = Field(
        default=DEFAULT_WEBHOOK_SCHEDULE_S, min_length=1, max_length=50
    )
    """Seconds to wait before each attempt of a delivery, counted from the previous attempt;
    the first entry is 0 (the first attempt is made as soon as the event is committed) and the
    length is the number of attempts (1 to 50). In the environment: comma-separated numbers
    (``0,5,300``) or a JSON list."""

    jitter: float = Field(default=0.2, ge=0.0, lt=1.0)
    """Random spread of each wait, as a fraction: 0.2 gives +-20 % (0 to < 1)."""

    timeout_s: float = Field(default=15.0, gt=0.0, le=120.0)
    """Total seconds one delivery may take (name resolution, connect, send, read the answer;
    up to 120)."""

    disable_after_s: float = Field(default=5 * 24 * 3600.0, gt=0.0)
    """An endpoint whose deliveries all failed for this long is disabled (default 5 days)."""

    dispatch_interval_s: float = Field(default=1.0, gt=0.0, le=3600.0)
    """Seconds between two passes of the dispatcher (the periodic safety net; a finished
    comparison also dispatches its deliveries at once)."""

    retention_s: float = Field(default=30 * 24 * 3600.0, gt=0.0)
    """Seconds webhook events are kept once every delivery of theirs is final (succeeded or
    failed); the sweeper then deletes them with their deliveries and attempts. Default 30 days
    (longer than the retry schedule, so ``recover`` can still replay recent failures)."""

    lease_s: float = Field(default=60.0, gt=0.0)
    """Seconds a dispatched delivery is reserved for its task; a task not started by then
    (message lost, e.g. a broker restart) is re-sent by the dispatcher. Must exceed
    ``timeout_s``."""

    preclaim_lease_s: float = Field(default=10.0, gt=0.0, le=3600.0)
    """Seconds the deliveries a finished comparison writes already claimed wait for the task
    its worker sends right after the commit; if that worker died in between (or the broker
    was down), the dispatcher sends them once this has passed. An attempt that starts takes
    the full ``lease_s``."""

    secret_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(default=(), max_length=20)
    """Fernet keys encrypting the webhook signing secrets stored in the database (secret): the
    first key encrypts, every key decrypts, so a key is rotated by putting the new one first and
    keeping the old ones until ``diffall db encrypt-secrets`` has rewritten the stored secrets.
    Empty (the default) stores them in clear; refused when ``env`` is ``production``. In the
    environment: comma-separated keys or a JSON list. Make a key with
    ``python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"``.
    """

    @field_validator("retry_schedule_s", "secret_keys", mode="before")
    @classmethod
    def _parse_list(cls, value: Any) -> Any:
        """Accept comma-separated text or a JSON list (environment, .env) as well as a list."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("secret_keys")
    @classmethod
    def _check_secret_keys(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        """Require Fernet keys (32 url-safe base64-encoded bytes); never echo one."""
        keys = tuple(SecretStr(key.get_secret_value().strip()) for key in value)
        for position, key in enumerate(keys, start=1):
            try:
                Fernet(key.get_secret_value().encode("ascii", errors="replace"))
            except (ValueError, TypeError):
                raise ValueError(
                    f"webhooks.secret_keys: key {position} is not a Fernet key (32 url-safe "
                    "base64-encoded bytes; make one with Fernet.generate_key())"
                ) from None
        if len({key.get_secret_value() for key in keys}) != len(keys):
            raise ValueError("webhooks.secret_keys: a key is listed twice")
        return keys

    @field_validator("retry_schedule_s")
    @classmethod
    def _check_schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        """Require finite waits between 0 and 7 days."""
        for wait in value:
            if not 0.0 <= wait <= 7 * 24 * 3600.0:
                raise ValueError(f"webhook retry waits must be within 0..604800 s, got {wait}")
        if value[0] != 0.0:
            raise ValueError("the first webhook retry wait must be 0: the first attempt is at once")
        return value

    @model_validator(mode="after")
    def _check_lease(self) -> WebhookSettings:
        """Refuse a lease that would expire while a receiver may still be answering."""
        if self.lease_s <= self.timeout_s:
            raise ValueError(
                f"webhooks.lease_s ({self.lease_s}) must be greater than webhooks.timeout_s "
                f"({self.timeout_s})"
            )
        return self


class Settings(BaseSettings):
    """Every setting of DiffALL. Build it with :func:`get_settings`, not at import time."""

    model_config = SettingsConfigDict(
        env_prefix="DIFFALL_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        validate_default=True,
        hide_input_in_errors=True,  # validation errors must not echo secrets
    )

    env: Literal["development", "test", "production"] = "development"
    """Deployment kind; ``production`` refuses placeholder secrets and an empty
    ``webhooks.secret_keys``."""

    data_dir: Path = Path("./diffall-data")
    """Directory of the embedded defaults (database, storage, broker); made absolute."""

    database_url: str | None = None
    """SQLAlchemy URL; None means ``sqlite:///<data_dir>/diffall.db``. ``postgresql://`` URLs
    use psycopg 3. Read :attr:`database_url_resolved`."""

    broker_url: str | None = None
    """Celery broker URL (e.g. ``redis://127.0.0.1:6379/0``); None means Celery's filesystem
    transport under ``<data_dir>/broker``. Read :attr:`broker_url_resolved`."""

    webhook_allowed_networks: Annotated[tuple[IPNetwork, ...], NoDecode] = ()
    """Networks webhooks may reach although they are private, loopback or otherwise refused,
    e.g. ``127.0.0.0/8`` for tests and on-premise receivers; empty by default (only public
    addresses). Written as comma-separated CIDRs in :data:`ALLOWED_NETWORKS_ENV`
    (``127.0.0.0/8,::1/128``), parsed once here."""

    storage: StorageSettings = Field(default_factory=StorageSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: Any) -> Any:
        """Parse comma-separated CIDR networks (host bits clear; blanks ignored) into networks;
        ``ValueError`` naming the item that is not one."""
        if isinstance(value, str):
            return parse_allowed_networks(value)
        return value

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        """Expand ``~`` and make the path absolute (relative to the working directory)."""
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _resolve_and_check(self) -> Settings:
        """Resolve paths relative to ``data_dir``; refuse placeholder secrets in production."""
        local_dir = (self.data_dir / self.storage.local_dir.expanduser()).resolve()
        if local_dir != self.storage.local_dir:
            self.storage = self.storage.model_copy(update={"local_dir": local_dir})
        if self.limits.job_memory_mb is None:
            share = job_memory_share(machine_memory_bytes(), self.worker.processes + 1)
            self.limits = self.limits.model_copy(update={"job_memory_mb": share // MIB})
        if self.env == "production":
            bad = self._placeholder_secret_names()
            if bad:
                raise ValueError(
                    "placeholder or empty secrets are refused when DIFFALL_ENV=production: "
                    + ", ".join(bad)
                    + "; set real values"
                )
        return self

    def _placeholder_secret_names(self) -> list[str]:
        """Names of the environment variables holding a placeholder secret."""
        secrets: dict[str, SecretStr | None] = {
            "DIFFALL_STORAGE__S3_ACCESS_KEY_ID": self.storage.s3_access_key_id,
            "DIFFALL_STORAGE__S3_SECRET_ACCESS_KEY": self.storage.s3_secret_access_key,
        }
        bad = [
            name
            for name, secret in secrets.items()
            if secret is not None and _is_placeholder(secret.get_secret_value())
        ]
        if not self.webhooks.secret_keys:
            # Webhook signing secrets would be stored in clear.
            bad.append("DIFFALL_WEBHOOKS__SECRET_KEYS (empty)")
        for name, url in (
            ("DIFFALL_DATABASE_URL", self.database_url),
            ("DIFFALL_BROKER_URL", self.broker_url),
        ):
            password = _url_password(url)
            if password is not None and _is_placeholder(password):
                bad.append(f"{name} (password)")
        return bad

    @property
    def database_url_resolved(self) -> str:
        """The database URL to connect to: ``database_url`` or the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'diffall.db'}"

    @property
    def broker_url_resolved(self) -> str:
        """The Celery broker URL: ``broker_url`` or ``filesystem://`` (see
        :attr:`broker_transport_options` for its folders)."""
        return self.broker_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        """Root of the filesystem broker's folders: ``<data_dir>/broker``."""
        return self.data_dir / "broker"

    @property
    def broker_transport_options(self) -> dict[str, Any]:
        """Celery ``broker_transport_options`` for :attr:`broker_url_resolved`.

        Filesystem transport: ``data_folder_in`` and ``data_folder_out`` are the same directory
        (``<data_dir>/broker/queue``) so every process on the machine shares one queue,
        ``processed_folder`` is ``<data_dir>/broker/processed`` and ``control_folder`` (queue
        bindings, kombu's default is relative to the working directory)
        ``<data_dir>/broker/control``; create them with :func:`ensure_broker_folders`.
        Redis: ``visibility_timeout`` in seconds from ``worker.visibility_timeout_s``.
        Other transports: no options.
        """
        scheme = self.broker_url_resolved.split("://", 1)[0].lower()
        if scheme == "filesystem":
            queue_dir = str(self.broker_dir / "queue")
            return {
                "data_folder_in": queue_dir,
                "data_folder_out": queue_dir,
                "processed_folder": str(self.broker_dir / "processed"),
                "control_folder": str(self.broker_dir / "control"),
                "store_processed": False,
            }
        if scheme in REDIS_SCHEMES:
            return {"visibility_timeout": self.worker.visibility_timeout_s}
        return {}


def _url_password(url: str | None) -> str | None:
    """The password in ``url`` (percent-decoded), or None when there is none."""
    if not url:
        return None
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return None if password is None else unquote(password)


def ensure_broker_folders(settings: Settings) -> list[Path]:
    """Create the filesystem broker's folders when that transport is in use.

    Parameters
    ----------
    settings
        The settings whose :attr:`Settings.broker_transport_options` name the folders.

    Returns
    -------
    list of Path
        The folders that now exist (empty for any other transport).
    """
    options = settings.broker_transport_options
    keys = ("data_folder_in", "data_folder_out", "processed_folder", "control_folder")
    folders = sorted({Path(options[key]) for key in keys if key in options})
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    return folders


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Build the settings from the environment once per process and cache them.

    Returns
    -------
    Settings
        The shared settings object. Call ``get_settings.cache_clear()`` to rebuild it (tests,
        after changing environment variables).
    """
    return Settings()
