"""Settings: ``webhooks.secret_keys`` (DIFFALL_WEBHOOKS__SECRET_KEYS), the key ring encrypting
webhook signing secrets at rest, and the removal of ``api.webhook_signing_secret``."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from core.config import Settings, get_settings

OLD_KEY = "h2J1bhWAmUmCzp6J4J-GWjN8BM1wIS2gJUIUaJ-y9Kk="
NEW_KEY = "X6tN7bHq3bYcP0k3nW0mJp7m5x0f0YQz4cN3rQ9b2dE="
REAL_URL = "postgresql://diffall:Zq8%40kP2vLw9@db/diffall"


pytestmark = pytest.mark.usefixtures("clean_diffall_env")


def _settings(**kwargs: Any) -> Settings:
    return Settings(_env_file=None, **kwargs)  # type: ignore[call-arg]


def _keys(settings: Settings) -> list[str]:
    return [key.get_secret_value() for key in settings.webhooks.secret_keys]


def test_empty_by_default_outside_production() -> None:
    assert _settings().webhooks.secret_keys == ()
    assert _settings(env="test").webhooks.secret_keys == ()


@pytest.mark.parametrize(
    "value",
    [
        f"{NEW_KEY},{OLD_KEY}",
        f" {NEW_KEY} , {OLD_KEY} ,",
        f'["{NEW_KEY}", "{OLD_KEY}"]',
    ],
)
def test_read_from_the_environment_in_order(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DIFFALL_WEBHOOKS__SECRET_KEYS", value)
    assert _keys(get_settings()) == [NEW_KEY, OLD_KEY]  # the first one encrypts


def test_empty_environment_value_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFALL_WEBHOOKS__SECRET_KEYS", "")
    assert get_settings().webhooks.secret_keys == ()


def test_keys_never_printed() -> None:
    settings = _settings(webhooks={"secret_keys": [NEW_KEY, OLD_KEY]})
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert NEW_KEY not in text and OLD_KEY not in text


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([NEW_KEY, "hunter2"], "key 2 is not a Fernet key"),
        (["changeme"], "key 1 is not a Fernet key"),
        ([NEW_KEY[:-2]], "key 1 is not a Fernet key"),
        ([NEW_KEY, NEW_KEY], "listed twice"),
    ],
)
def test_invalid_keys_are_refused_without_echo(keys: list[str], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        _settings(webhooks={"secret_keys": keys})
    assert "input_value" not in str(info.value)
    for key in keys:
        assert key not in str(info.value)


def test_production_refuses_an_empty_key_list() -> None:
    with pytest.raises(ValidationError, match="DIFFALL_WEBHOOKS__SECRET_KEYS") as info:
        _settings(env="production", database_url=REAL_URL)
    assert "production" in str(info.value)
    settings = _settings(
        env="production", database_url=REAL_URL, webhooks={"secret_keys": [NEW_KEY]}
    )
    assert _keys(settings) == [NEW_KEY]


def test_production_refuses_an_empty_key_list_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DIFFALL_ENV", "production")
    monkeypatch.setenv("DIFFALL_WEBHOOKS__SECRET_KEYS", "")
    with pytest.raises(ValidationError, match="DIFFALL_WEBHOOKS__SECRET_KEYS"):
        get_settings()
    monkeypatch.setenv("DIFFALL_WEBHOOKS__SECRET_KEYS", NEW_KEY)
    get_settings.cache_clear()
    assert get_settings().env == "production"


def test_the_unused_webhook_signing_secret_setting_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "webhook_signing_secret" not in type(_settings().api).model_fields
    # A deployment still setting it is told so (groups refuse unknown keys), without the value.
    monkeypatch.setenv("DIFFALL_API__WEBHOOK_SIGNING_SECRET", "whsec_c2VjcmV0c2VjcmV0")
    with pytest.raises(ValidationError, match="webhook_signing_secret") as info:
        get_settings()
    assert "whsec_c2VjcmV0c2VjcmV0" not in str(info.value)
    # Left empty (as the old docker-compose.yml passed it), it is ignored.
    monkeypatch.setenv("DIFFALL_API__WEBHOOK_SIGNING_SECRET", "")
    get_settings.cache_clear()
    assert get_settings().api.public_base_url == "http://127.0.0.1:8000"
