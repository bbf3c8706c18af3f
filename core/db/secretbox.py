"""Secrets encrypted at rest: a Fernet key ring and the column type that uses it.

Webhook signing secrets are HMAC keys the service must read back to sign (a one-way hash cannot
sign), so they are stored encrypted rather than hashed: a database dump or a read-only SQL
injection then yields ciphertext, not secrets.

Stored form
-----------
``fernet:v1:`` + a Fernet token (AES-128-CBC + HMAC-SHA256, url-safe base64; the ``cryptography``
package). A stored value without the ``fernet:`` scheme is clear text: rows written before a key
was configured keep working, and ``diffall db encrypt-secrets`` rewrites them encrypted. A 50
character ``whsec_`` secret becomes 174 characters.

Keys
----
:class:`SecretBox` holds the ring (``DIFFALL_WEBHOOKS__SECRET_KEYS``): the first key encrypts,
every key decrypts (``MultiFernet``), so a new key is put first and the old ones kept until the
stored values were rewritten under the new one. An empty ring stores and reads clear text; a value
no key of the ring opens raises :class:`SecretDecryptionError` (never a garbage secret).

Which ring a column uses
------------------------
The ring belongs to the engine: :func:`core.db.session.make_engine` attaches the ring it is given
(:func:`attach_secret_box`); an engine with none attached uses the ring of the process's settings
(:func:`core.config.get_settings`, read when a value is written or read, so it is never read at
import time).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Final

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr
from sqlalchemy.engine import Dialect, Engine

from core.config import get_settings

__all__ = [
    "PREFIX",
    "SCHEME",
    "EncryptedSecret",
    "SecretBox",
    "SecretDecryptionError",
    "attach_secret_box",
    "secret_box_for",
    "settings_secret_box",
]

#: Marks an encrypted value; any stored value starting with it is treated as ciphertext.
SCHEME: Final = "fernet:"
#: Prefix of the values this version writes: the scheme and the format version.
PREFIX: Final = "fernet:v1:"
#: Error code when no key of the ring opens a stored value (the key that sealed it is missing).
KEY_MISSING: Final = "secret_key_missing"
#: Error code when a stored value has the scheme but a format this version does not know.
FORMAT_UNKNOWN: Final = "secret_format_unknown"

# Attribute of an engine's dialect holding its ring (see attach_secret_box).
_DIALECT_ATTRIBUTE: Final = "_diffall_secret_box"


class SecretDecryptionError(Exception):
    """A stored secret cannot be decrypted with the configured keys.

    Attributes
    ----------
    code
        Stable, machine-readable: ``secret_key_missing`` (no key of the ring opens the value:
        add the key that encrypted it to ``DIFFALL_WEBHOOKS__SECRET_KEYS``) or
        ``secret_format_unknown`` (written by a newer version).
    message
        One human sentence (never contains a key or a secret).
    """

    def __init__(self, message: str, *, code: str = KEY_MISSING) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _key_bytes(key: str | bytes | SecretStr) -> bytes:
    """The key as bytes, whatever form it was given in."""
    if isinstance(key, SecretStr):
        key = key.get_secret_value()
    if isinstance(key, str):
        key = key.strip().encode("ascii", errors="replace")
    return key


class SecretBox:
    """A key ring that seals secrets into their stored form and opens them again.

    Parameters
    ----------
    keys
        Fernet keys (32 url-safe base64-encoded bytes each, as ``Fernet.generate_key()`` makes),
        the encrypting one first; empty stores clear text.

    Raises
    ------
    ValueError
        When a key is not a Fernet key (the message names its position, not its value).
    """

    __slots__ = ("_fernets", "_ring")

    def __init__(self, keys: Iterable[str | bytes | SecretStr] = ()) -> None:
        fernets: list[Fernet] = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(_key_bytes(key)))
            except (ValueError, TypeError):
                raise ValueError(
                    f"secret key {position} is not a Fernet key (32 url-safe base64-encoded "
                    "bytes; make one with Fernet.generate_key())"
                ) from None
        self._fernets: tuple[Fernet, ...] = tuple(fernets)
        self._ring: MultiFernet | None = MultiFernet(fernets) if fernets else None

    def __repr__(self) -> str:
        return f"SecretBox(<{len(self._fernets)} keys>)"

    @property
    def key_count(self) -> int:
        """How many keys the ring holds (0: clear text)."""
        return len(self._fernets)

    @property
    def encrypts(self) -> bool:
        """Whether values are stored encrypted (the ring has a key)."""
        return self._ring is not None

    def seal(self, secret: str) -> str:
        """The stored form of ``secret``: ``fernet:v1:<token>`` under the first key, or the
        secret itself when the ring is empty.

        Raises
        ------
        ValueError
            When ``secret`` already looks encrypted (it would be read back as ciphertext).
        """
        if secret.startswith(SCHEME):
            raise ValueError("refusing to store a value that already looks encrypted")
        if self._ring is None:
            return secret
        return PREFIX + self._ring.encrypt(secret.encode("utf-8")).decode("ascii")

    def open(self, stored: str) -> str:
        """The secret held by a stored value (clear text is returned as it is).

        Raises
        ------
        SecretDecryptionError
            When the value is encrypted and no key of the ring opens it, or its format is
            unknown.
        """
        if not stored.startswith(SCHEME):
            return stored
        if not stored.startswith(PREFIX):
            raise SecretDecryptionError(
                "a stored secret has an encryption format this version does not know "
                f"(expected {PREFIX!r})",
                code=FORMAT_UNKNOWN,
            )
        if self._ring is None:
            raise SecretDecryptionError(
                "a stored secret is encrypted but DIFFALL_WEBHOOKS__SECRET_KEYS is empty: "
                "configure the key that encrypted it"
            )
        try:
            return self._ring.decrypt(stored[len(PREFIX) :].encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SecretDecryptionError(
                f"no key of DIFFALL_WEBHOOKS__SECRET_KEYS ({self.key_count} configured) "
                "decrypts a stored secret: add the key that encrypted it"
            ) from None

    def is_current(self, stored: str) -> bool:
        """Whether ``stored`` is already in the form :meth:`seal` writes now: encrypted under the
        first key (or, with an empty ring, clear text). Other values are what
        ``diffall db encrypt-secrets`` rewrites."""
        if self._ring is None:
            return not stored.startswith(SCHEME)
        if not stored.startswith(PREFIX):
            return False
        try:
            self._fernets[0].decrypt(stored[len(PREFIX) :].encode("ascii"))
        except (InvalidToken, UnicodeError):
            return False
        return True


@functools.lru_cache(maxsize=8)
def _box_of(keys: tuple[str, ...]) -> SecretBox:
    """One ring per distinct key list (the settings' ring is rebuilt only when keys change)."""
    return SecretBox(keys)


def settings_secret_box() -> SecretBox:
    """The ring of this process's settings (``webhooks.secret_keys``)."""
    keys = get_settings().webhooks.secret_keys
    return _box_of(tuple(key.get_secret_value() for key in keys))


def attach_secret_box(engine: Engine, box: SecretBox) -> None:
    """Make ``box`` the ring of every :class:`EncryptedSecret` value ``engine`` writes or reads.

    Parameters
    ----------
    engine
        An engine (its dialect carries the ring; ``execution_options`` copies share it).
    box
        The ring.
    """
    setattr(engine.dialect, _DIALECT_ATTRIBUTE, box)


def secret_box_for(dialect: Dialect) -> SecretBox:
    """The ring used through ``dialect``: the one attached to its engine, else the settings'.

    Parameters
    ----------
    dialect
        The dialect of a connection (``session.get_bind().dialect``, or the one SQLAlchemy passes
        to a type).

    Returns
    -------
    SecretBox
        The ring.
    """
    box = getattr(dialect, _DIALECT_ATTRIBUTE, None)
    if isinstance(box, SecretBox):
        return box
    return settings_secret_box()


class EncryptedSecret(sa.types.TypeDecorator[str]):
    """A ``VARCHAR(length)`` holding a secret encrypted at rest (see the module docstring).

    Python sees the clear secret; the database holds ``fernet:v1:<token>`` (or the clear secret
    while no key is configured). Values are not comparable in SQL (every encryption differs):
    never filter on such a column.
    """

    impl = sa.String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        """Seal the secret with the engine's ring."""
        if value is None:
            return None
        return secret_box_for(dialect).seal(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        """Open the stored value with the engine's ring."""
        if value is None:
            return None
        return secret_box_for(dialect).open(value)
