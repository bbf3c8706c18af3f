"""An :class:`~core.storage.base.ObjectStore` kept in a local directory (the embedded default)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from core.storage.base import (
    ObjectNotFound,
    StorageError,
    StorageUnavailable,
    validate_expires,
    validate_key,
)

__all__ = ["DIR_MODE", "FILE_MODE", "LocalObjectStore"]

#: Mode of every stored file: readable and writable by the service's user only.
FILE_MODE = 0o600
#: Mode of every directory the store creates (its root included): the service's user only.
DIR_MODE = 0o700
#: Bytes copied at a time by :meth:`LocalObjectStore.put_file`.
_COPY_PIECE = 1024 * 1024

# OSError numbers that describe a condition that may clear up by itself: retrying can succeed.
_TRANSIENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ESTALE}
)

# Temporary files carry a '~', which no valid key contains, so they never shadow an object.
_TMP_SUFFIX = ".tmp~"


@contextlib.contextmanager
def _map_os_errors(key: str, *, reading: bool) -> Iterator[None]:
    """Translate ``OSError`` raised inside the block into storage errors for ``key``.

    When ``reading``, a missing path (or a directory where the file should be) means
    :class:`ObjectNotFound`; when writing, it is a path conflict (:class:`StorageError`).
    """
    try:
        yield
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError) as exc:
        if reading and not isinstance(exc, FileExistsError):
            raise ObjectNotFound(key) from exc
        raise StorageError(
            f"local storage: path conflict for {key!r} (a file or directory is in the way)"
        ) from exc
    except OSError as exc:
        if exc.errno in _TRANSIENT_ERRNOS:
            raise StorageUnavailable(f"local storage: {exc.strerror} ({key!r})") from exc
        raise StorageError(f"local storage: {exc.strerror} ({key!r})") from exc


class LocalObjectStore:
    """Objects as files under a root directory: the key ``a/b`` is the file ``<root>/a/b``.

    Writes are atomic and durable: the bytes go to a temporary file in the destination directory,
    which is fsynced and then renamed over the destination (``os.replace``), and the directory is
    fsynced. Files are private to the service's user (mode 0600, directories 0700), whatever
    the umask. Concurrent writers of one key leave one complete file (the last rename wins).
    Content types are not recorded, and presigning is not supported (the methods return None).

    Parameters
    ----------
    root : Path
        The directory holding the objects; created (with parents) on the first write or
        :meth:`check`.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalObjectStore(root={str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        """Store ``data`` under ``key`` atomically, replacing any existing file.

        Parameters
        ----------
        key : str
            Object key (see :func:`~core.storage.base.validate_key`).
        data : bytes
            The whole object.
        content_type : str
            Accepted for interface compatibility and ignored.

        Raises
        ------
        StorageUnavailable
            On a transient file-system error (disk full, I/O error).
        StorageError
            On any other file-system error (for example a file where a directory is needed).
        """
        self._write(key, lambda fh: fh.write(data))

    def put_file(
        self, key: str, file: BinaryIO, *, content_type: str = "application/octet-stream"
    ) -> None:
        """Store the contents of ``file`` (read from its start, 1 MiB at a time) under ``key``
        atomically; same errors as :meth:`put`."""
        file.seek(0)

        def copy(fh: BinaryIO) -> None:
            while piece := file.read(_COPY_PIECE):
                fh.write(piece)

        self._write(key, copy)

    def _make_dirs(self, directory: Path) -> None:
        """Create ``directory`` and its missing parents with mode 0700 (``mkdir``'s ``mode``
        is not applied to parents)."""
        missing: list[Path] = []
        current = directory
        while not current.is_dir():
            missing.append(current)
            if current.parent == current:
                break
            current = current.parent
        for folder in reversed(missing):
            try:
                folder.mkdir(mode=DIR_MODE)
            except FileExistsError:
                continue  # created concurrently: its creator sets the mode
            os.chmod(folder, DIR_MODE)  # whatever the umask

    def _write(self, key: str, write: Callable[[BinaryIO], object]) -> None:
        path = self._path(key)
        with _map_os_errors(key, reading=False):
            self._make_dirs(path.parent)
            fd, tmp_name = tempfile.mkstemp(
                dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX
            )
            try:
                with os.fdopen(fd, "wb") as fh:
                    write(fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.chmod(tmp_name, FILE_MODE)
                os.replace(tmp_name, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
                raise
            _fsync_dir(path.parent)

    def get(self, key: str) -> bytes:
        """Return the bytes stored under ``key``.

        Raises
        ------
        ObjectNotFound
            If there is no file for the key.
        """
        path = self._path(key)
        with _map_os_errors(key, reading=True):
            return path.read_bytes()

    def exists(self, key: str) -> bool:
        """Return whether a regular file is stored under ``key``."""
        path = self._path(key)
        with _map_os_errors(key, reading=True):
            return path.is_file()

    def size(self, key: str) -> int:
        """Return the size in bytes of the object under ``key``.

        Raises
        ------
        ObjectNotFound
            If there is no file for the key.
        """
        path = self._path(key)
        with _map_os_errors(key, reading=True):
            st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(key)
        return st.st_size

    def delete(self, key: str) -> None:
        """Delete the file under ``key``; a missing key (or a directory) is left alone."""
        path = self._path(key)
        try:
            with _map_os_errors(key, reading=True):
                path.unlink()
        except ObjectNotFound:
            pass

    def presign_put(self, key: str, *, expires_s: int, content_type: str) -> str | None:
        """Return None: a local directory cannot serve presigned uploads."""
        validate_key(key)
        validate_expires(expires_s)
        return None

    def presign_get(self, key: str, *, expires_s: int) -> str | None:
        """Return None: a local directory cannot serve presigned downloads."""
        validate_key(key)
        validate_expires(expires_s)
        return None

    def check(self) -> None:
        """Create the root if needed and check that it is a writable directory.

        Raises
        ------
        StorageUnavailable
            If the root cannot be created or is not a writable directory.
        """
        try:
            self._make_dirs(self.root)
        except OSError as exc:
            raise StorageUnavailable(f"local storage root {str(self.root)!r}: {exc}") from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable(f"local storage root {str(self.root)!r} is not writable")


def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry change (a rename) to disk; best effort where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
