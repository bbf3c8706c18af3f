"""Settings: environment names, derived defaults, secrets, validation, .env.example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from core.config import Settings, ensure_broker_folders, get_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
#: A valid Fernet key (``Fernet.generate_key()``), for settings that need one.
FERNET_KEY = "h2J1bhWAmUmCzp6J4J-GWjN8BM1wIS2gJUIUaJ-y9Kk="


pytestmark = pytest.mark.usefixtures("clean_diffall_env")


def _settings(**kwargs: Any) -> Settings:
    return Settings(_env_file=None, **kwargs)  # type: ignore[call-arg]


def _env_names(model: type[BaseModel], prefix: str = "DIFFALL_") -> set[str]:
    """Every environment variable name the settings read (nested groups flattened)."""
    names: set[str] = set()
    for field_name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _env_names(annotation, f"{prefix}{field_name.upper()}__")
        else:
            names.add(f"{prefix}{field_name.upper()}")
    return names


def test_defaults_derive_from_data_dir(tmp_path: Path) -> None:
    settings = _settings()
    data_dir = tmp_path.resolve() / "diffall-data"
    assert settings.env == "development"
    assert settings.data_dir == data_dir and settings.data_dir.is_absolute()
    assert settings.database_url is None
    assert settings.database_url_resolved == f"sqlite:///{data_dir}/diffall.db"
    assert settings.broker_url_resolved == "filesystem://"
    assert settings.storage.backend == "local"
    assert settings.storage.local_dir == data_dir / "storage"
    options = settings.broker_transport_options
    assert options["data_folder_in"] == options["data_folder_out"] == str(data_dir / "broker/queue")
    assert options["processed_folder"] == str(data_dir / "broker/processed")
    assert options["control_folder"] == str(data_dir / "broker/control")
    assert settings.limits.max_upload_bytes == 50 * 1024 * 1024
    assert settings.limits.max_pixels == 100_000_000
    assert settings.limits.max_batch_pairs == 10_000
    assert settings.limits.rate_limit_per_minute == 600
    assert settings.limits.page_size_max == 100
    worker = settings.worker
    assert (worker.soft_time_limit_s, worker.hard_time_limit_s) == (120, 150)
    assert worker.max_attempts == 3 and worker.sweep_interval_s == 30
    assert worker.stale_running_after_s > worker.hard_time_limit_s
    assert worker.visibility_timeout_s > worker.hard_time_limit_s
    assert worker.stale_queued_after_s == 60
    assert settings.storage.s3_bucket == "diffall"
    assert settings.storage.presign_expiry_s == 900
    assert settings.api.public_base_url == "http://127.0.0.1:8000"


def test_env_prefix_and_nested_delimiter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DIFFALL_ENV", "test")
    monkeypatch.setenv("DIFFALL_DATA_DIR", "rel/data")
    monkeypatch.setenv("DIFFALL_DATABASE_URL", "postgresql://u@db/x")
    monkeypatch.setenv("DIFFALL_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("DIFFALL_STORAGE__BACKEND", "s3")
    monkeypatch.setenv("DIFFALL_STORAGE__LOCAL_DIR", "/srv/store")
    monkeypatch.setenv("DIFFALL_STORAGE__S3_SECRET_ACCESS_KEY", "s3cr3t-value")
    monkeypatch.setenv("DIFFALL_LIMITS__MAX_UPLOAD_BYTES", "1024")
    monkeypatch.setenv("DIFFALL_WORKER__HARD_TIME_LIMIT_S", "400")
    monkeypatch.setenv("DIFFALL_API__PUBLIC_BASE_URL", "https://diff.example.com/")
    monkeypatch.setenv("DATA_DIR", "/ignored")  # no prefix: not ours
    monkeypatch.setenv("DIFFALL_WORKER__SOFT_TIME_LIMIT_S", "")  # empty: the default

    settings = get_settings()
    assert settings is get_settings()  # cached
    assert settings.env == "test"
    assert settings.data_dir == tmp_path.resolve() / "rel/data"
    assert settings.database_url_resolved == "postgresql://u@db/x"
    assert settings.broker_transport_options == {"visibility_timeout": 3600}
    assert settings.storage.backend == "s3"
    assert settings.storage.local_dir == Path("/srv/store")
    assert settings.storage.s3_secret_access_key is not None
    assert settings.storage.s3_secret_access_key.get_secret_value() == "s3cr3t-value"
    assert settings.limits.max_upload_bytes == 1024
    assert settings.worker.hard_time_limit_s == 400
    assert settings.worker.soft_time_limit_s == 120
    # Derived from the hard limit unless set.
    assert settings.worker.stale_running_after_s == 430
    assert settings.api.public_base_url == "https://diff.example.com"

    monkeypatch.setenv("DIFFALL_LIMITS__MAX_UPLOAD_BYTES", "2048")
    assert get_settings().limits.max_upload_bytes == 1024  # still cached
    get_settings.cache_clear()
    assert get_settings().limits.max_upload_bytes == 2048


def test_dotenv_file_is_read_and_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "DIFFALL_LIMITS__PAGE_SIZE_MAX=42\nDIFFALL_LIMITS__MAX_PIXELS=7\nPOSTGRES_PASSWORD=x\n"
    )
    monkeypatch.setenv("DIFFALL_LIMITS__MAX_PIXELS", "9")
    settings = get_settings()
    assert settings.limits.page_size_max == 42
    assert settings.limits.max_pixels == 9


def test_secrets_never_printed() -> None:
    settings = _settings(
        storage={"s3_access_key_id": "AKIAEXAMPLEKEY123", "s3_secret_access_key": "hunter2-xyz"},
        webhooks={"secret_keys": [FERNET_KEY]},
    )
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        for secret in ("AKIAEXAMPLEKEY123", "hunter2-xyz", FERNET_KEY):
            assert secret not in text


@pytest.mark.parametrize("placeholder", ["changeme", "minioadmin", "", "  ", "CHANGE_ME-now"])
@pytest.mark.parametrize(
    ("field", "variable"),
    [
        ({"storage": {"s3_access_key_id": "{}"}}, "DIFFALL_STORAGE__S3_ACCESS_KEY_ID"),
        ({"storage": {"s3_secret_access_key": "{}"}}, "DIFFALL_STORAGE__S3_SECRET_ACCESS_KEY"),
    ],
)
def test_production_refuses_placeholder_secrets(
    placeholder: str, field: dict[str, dict[str, str]], variable: str
) -> None:
    group, values = next(iter(field.items()))
    kwargs = {group: {k: v.format(placeholder) for k, v in values.items()}}
    with pytest.raises(ValidationError, match=variable) as info:
        _settings(env="production", webhooks={"secret_keys": [FERNET_KEY]}, **kwargs)
    assert "production" in str(info.value)
    # The refusal does not echo the submitted values.
    assert "input_value" not in str(info.value)
    # Outside production the same values are accepted.
    _settings(env="development", **kwargs)
    _settings(env="test", **kwargs)


def test_production_refuses_placeholder_passwords_in_urls() -> None:
    with pytest.raises(ValidationError, match="DIFFALL_DATABASE_URL"):
        _settings(env="production", database_url="postgresql://diffall:changeme@db/diffall")
    with pytest.raises(ValidationError, match="DIFFALL_BROKER_URL"):
        _settings(env="production", broker_url="redis://:minioadmin@redis:6379/0")


def test_production_accepts_real_secrets() -> None:
    settings = _settings(
        env="production",
        database_url="postgresql://diffall:Zq8%40kP2vLw9@db/diffall",
        storage={"s3_access_key_id": "AKIA4REALKEY", "s3_secret_access_key": "k9Vb7Tq2Xw5Lm3"},
        webhooks={"secret_keys": [FERNET_KEY]},
    )
    assert settings.env == "production"
    # Unset secrets (boto3's credential chain) are not placeholders.
    production = _settings(env="production", webhooks={"secret_keys": [FERNET_KEY]})
    assert production.storage.s3_access_key_id is None


@pytest.mark.parametrize(
    ("worker", "message"),
    [
        ({"visibility_timeout_s": 150}, "visibility_timeout_s"),
        ({"visibility_timeout_s": 100}, "visibility_timeout_s"),
        ({"hard_time_limit_s": 4000}, "visibility_timeout_s"),
        ({"soft_time_limit_s": 150}, "soft_time_limit_s"),
        ({"stale_running_after_s": 150}, "stale_running_after_s"),
        ({"max_attempts": 0}, "max_attempts"),
    ],
)
def test_worker_timing_validation(worker: dict[str, int], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _settings(worker=worker)


def test_worker_timing_accepts_consistent_values() -> None:
    settings = _settings(
        worker={"hard_time_limit_s": 4000, "soft_time_limit_s": 3900, "visibility_timeout_s": 4001}
    )
    assert settings.worker.stale_running_after_s == 4030
    assert _settings(worker={"stale_running_after_s": 151}).worker.stale_running_after_s == 151


@pytest.mark.parametrize(
    "kwargs",
    [
        {"env": "staging"},
        {"storage": {"backend": "gcs"}},
        {"storage": {"s3_bucket": "ab"}},
        {"api": {"public_base_url": "ftp://x"}},
        {"storage": {"unknown_option": 1}},
        {"limits": {"page_size_max": 0}},
    ],
)
def test_invalid_values_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _settings(**kwargs)


def test_relative_local_dir_is_under_data_dir(tmp_path: Path) -> None:
    settings = _settings(data_dir=tmp_path / "d", storage={"local_dir": "blobs"})
    assert settings.storage.local_dir == tmp_path.resolve() / "d" / "blobs"


def test_ensure_broker_folders(tmp_path: Path) -> None:
    settings = _settings(data_dir=tmp_path / "data")
    folders = ensure_broker_folders(settings)
    expected = {
        tmp_path.resolve() / "data/broker" / name for name in ("queue", "processed", "control")
    }
    assert set(folders) == expected
    assert all(folder.is_dir() for folder in expected)
    assert ensure_broker_folders(settings) == folders  # idempotent
    assert ensure_broker_folders(_settings(broker_url="redis://127.0.0.1:6379/0")) == []


def test_env_example_lists_every_variable_with_its_default(tmp_path: Path) -> None:
    text = (REPO_ROOT / ".env.example").read_text()
    assignments = re.findall(r"^(DIFFALL_\w+)=(.*)$", text, flags=re.MULTILINE)
    names = [name for name, _ in assignments]
    assert len(names) == len(set(names))
    assert set(names) == _env_names(Settings)
    # Every listed variable has a comment line right above it.
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("DIFFALL_"):
            assert lines[index - 1].startswith("# "), line
    # Loading the example gives exactly the defaults.
    example = Settings(_env_file=REPO_ROOT / ".env.example")  # type: ignore[call-arg]
    assert example.model_dump() == _settings().model_dump()


def test_importing_reads_no_environment(tmp_path: Path) -> None:
    # An invalid environment breaks get_settings(), never an import.
    code = (
        "import core.config, core.db, core.db.models, core.db.session\n"
        "try:\n"
        "    core.config.get_settings()\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    env = {"DIFFALL_ENV": "not-a-valid-env", "PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin"}
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ValidationError"


def test_the_job_memory_budget_divides_memory_among_processes() -> None:
    from core.config import job_memory_share

    assert job_memory_share(8 * 2**30, 4, fraction=0.5) == 2**30
    with pytest.raises(ValueError):
        job_memory_share(2**30, 0)


def test_webhook_allowed_networks_are_parsed_once_into_networks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ipaddress

    monkeypatch.setenv("DIFFALL_WEBHOOK_ALLOWED_NETWORKS", " 127.0.0.0/8, ::1/128 ,,10.20.0.1")
    networks = _settings().webhook_allowed_networks
    assert networks == (
        ipaddress.IPv4Network("127.0.0.0/8"),
        ipaddress.IPv6Network("::1/128"),
        ipaddress.IPv4Network("10.20.0.1/32"),
    )
    monkeypatch.delenv("DIFFALL_WEBHOOK_ALLOWED_NETWORKS")
    assert _settings().webhook_allowed_networks == ()
    for bad in ("127.0.0.1/8", "10.0.0.0/8,nope"):
        monkeypatch.setenv("DIFFALL_WEBHOOK_ALLOWED_NETWORKS", bad)
        with pytest.raises(ValidationError, match="CIDR") as caught:
            _settings()
        assert bad.split(",")[-1] in str(caught.value)
