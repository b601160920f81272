"""Locks that hold across processes, for read-modify-write edits of shared records.

A champion history, a version number, a GitOps model file: each is read, changed and written back. A
``threading.Lock`` orders the threads of one process only, so a CLI ``skiff promote`` and the API (or
several pipeline workers) each read the same old document and the last writer drops the others'
entries. Every writer takes the record's lock from the :data:`Locks` that :func:`locks_for` picks from
the settings, in this order:

* **A PostgreSQL control-plane database** (``database_url: postgresql://...``, what a cluster runs):
  :class:`DatabaseLocks`, a session advisory lock (``pg_advisory_lock``) on a connection of its own,
  held for the critical section. Its 64-bit key is derived from the record's URI, so every process
  and pod that edits ``s3://bucket/models/churn/_champion.json`` waits for the same lock, whatever the
  store. The server drops it when the holder's connection closes, including when the holder is killed
  (``kill -9``, an evicted pod), so nothing has to expire.
* **Local folders** (the embedded default, and a shared POSIX volume): :class:`FileLocks`, an OS lock
  on a lock file next to the record (``filelock``: ``flock`` on Linux/macOS, ``LockFileEx`` on
  Windows). The kernel drops it when the holder dies, even by ``kill -9``.
* **Object stores** (``s3://``, ``abfs://``) without a PostgreSQL database have no lock and no
  rename: :class:`FileLocks` then orders the threads of this process only, and logs a warning once per
  store. Writes are not refused there, since pipelines that run one writer per model (a KFP register
  step) are safe and a chart without a database must keep working; set ``database_url`` to the
  cluster's PostgreSQL to make concurrent writers safe.

Both kinds are re-entrant per thread (a thread that holds a lock may take it again). Lock files are
named ``.<record>.lock`` (hidden: no reader lists them as data or versions); database keys use the same
name, as a URI.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from skiff.errors import StorageError
from skiff.storage import Store

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine

    from skiff.config import Settings

__all__ = ["exclusive", "exclusive_path", "locks_for", "lock_key", "FileLocks", "DatabaseLocks", "Locks",
           "LOCK_TIMEOUT_S"]

log = logging.getLogger(__name__)

#: How long a writer waits for another one before giving up (a held lock means a live writer).
LOCK_TIMEOUT_S = 120.0

_warned_remote: set[str] = set()


@contextlib.contextmanager
def exclusive_path(path: str | os.PathLike[str], *, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the lock ``path`` (a local file, created if missing) against every other process and thread."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), is_singleton=True)  # one instance per path: re-entrant per thread
    try:
        lock.acquire(timeout=timeout)
    except Timeout as e:
        raise StorageError(f"{path}: another writer has held this lock for over {timeout:g} s; retry, or "
                           "find the process that holds it (a stuck `skiff` command or server)",
                           path=str(path)) from e
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def exclusive(store: Store, *parts: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the file lock of the record ``parts`` under ``store`` while reading and rewriting it.

    On an object store this only orders the threads of this process: the lock does NOT hold across
    processes or pods there (logged once per store); :class:`DatabaseLocks` does."""
    *folder, name = parts
    if store.is_local:
        with exclusive_path(store.local_path(*folder, f".{name}.lock"), timeout=timeout):
            yield
        return
    if store.root not in _warned_remote:
        _warned_remote.add(store.root)
        log.warning("%s: object stores have no cross-process lock; concurrent writers of one model's "
                    "versions or champion may lose an update (set database_url to the cluster's PostgreSQL, "
                    "or run one writer per model)", store.root)
    with exclusive_path(Path(_local_lock_dir(), *_safe(store.root), *folder, f".{name}.lock"), timeout=timeout):
        yield


class FileLocks:
    """OS file locks: across processes on local folders; within one process on object stores."""

    def exclusive(self, store: Store, *parts: str, timeout: float = LOCK_TIMEOUT_S) -> contextlib.AbstractContextManager[None]:
        return exclusive(store, *parts, timeout=timeout)

    def exclusive_path(self, path: str | os.PathLike[str], *, timeout: float = LOCK_TIMEOUT_S) -> contextlib.AbstractContextManager[None]:
        return exclusive_path(path, timeout=timeout)


class DatabaseLocks:
    """PostgreSQL session advisory locks: across processes and pods, whatever the store."""

    def __init__(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        if parsed.drivername in ("postgres", "postgresql"):  # SQLAlchemy's default is psycopg2; skiff ships psycopg 3
            parsed = parsed.set(drivername="postgresql+psycopg")
        self._url = parsed
        self._shown = parsed.render_as_string(hide_password=True)
        self._held = threading.local()  # uri -> how many times this thread holds it

    def exclusive(self, store: Store, *parts: str, timeout: float = LOCK_TIMEOUT_S) -> contextlib.AbstractContextManager[None]:
        *folder, name = parts
        return self.hold(store.uri(*folder, f".{name}.lock"), timeout=timeout)

    def exclusive_path(self, path: str | os.PathLike[str], *, timeout: float = LOCK_TIMEOUT_S) -> contextlib.AbstractContextManager[None]:
        return self.hold(Path(path).resolve().as_uri(), timeout=timeout)

    @contextlib.contextmanager
    def hold(self, uri: str, *, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the advisory lock of ``uri`` (waiting at most ``timeout`` seconds) until the block ends."""
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError, SQLAlchemyError

        held: dict[str, int] = self._held.__dict__.setdefault("depth", {})
        if held.get(uri):  # this thread holds it already: a second session would wait for itself
            held[uri] += 1
            try:
                yield
            finally:
                held[uri] -= 1
            return
        key = lock_key(uri)
        try:
            # AUTOCOMMIT: the lock belongs to the session, and no transaction stays open while it is held
            conn = _engine(self._url).connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as e:
            raise StorageError(f"{uri}: cannot reach the lock database {self._shown} "
                               f"({type(getattr(e, 'orig', None) or e).__name__}); check database_url and that "
                               "PostgreSQL is up", path=uri) from None
        try:
            try:
                # lock_timeout bounds the wait (0 would mean forever); pg_advisory_lock honours it
                conn.execute(text("SELECT set_config('lock_timeout', :t, false)"),
                             {"t": f"{max(1, int(timeout * 1000))}ms"})
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            except DBAPIError as e:
                if getattr(e.orig, "sqlstate", None) == "55P03":  # lock_not_available
                    raise StorageError(
                        f"{uri}: another writer has held this lock for over {timeout:g} s (PostgreSQL advisory "
                        f"lock {key} on {self._shown}); retry, or find the session that holds it in pg_locks "
                        "(a stuck `skiff` command, server or pipeline step)", path=uri) from None
                raise StorageError(f"{uri}: could not take the lock on {self._shown} ({type(e.orig).__name__}); "
                                   "check database_url and that PostgreSQL is up", path=uri) from None
            held[uri] = 1
            try:
                yield
            finally:
                held.pop(uri, None)
                with contextlib.suppress(SQLAlchemyError):  # closing the session releases it anyway
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        finally:
            conn.close()


#: The lock kinds :func:`locks_for` returns; writers call ``.exclusive(store, *parts)`` or ``.exclusive_path(p)``.
Locks = FileLocks | DatabaseLocks


def locks_for(settings: Settings) -> Locks:
    """The locks every writer of these settings takes: PostgreSQL advisory locks when the control plane
    has a PostgreSQL database, else file locks (which on an object store hold within one process only)."""
    url = settings.database_url
    if url and url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres"):
        return DatabaseLocks(url)
    return FileLocks()


def lock_key(uri: str) -> int:
    """The stable signed 64-bit advisory-lock key of a lock URI (the same in every process and release)."""
    digest = hashlib.blake2b(f"skiff-lock:{uri}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _engine(url: URL) -> Engine:
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    key = url.render_as_string(hide_password=False)
    with _engines_lock:
        if key not in _engines:
            # NullPool: each critical section has its own session, closed (and so unlocked) at the end
            _engines[key] = sa.create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 10})
        return _engines[key]


def _local_lock_dir() -> Path:
    import tempfile

    return Path(tempfile.gettempdir()) / "skiff-locks"


def _safe(root: str) -> list[str]:
    return ["".join(c if c.isalnum() or c in "-_." else "_" for c in root)]
