"""Locks that hold across processes, for read-modify-write edits of shared records.

A champion history, a version number, a GitOps model file: each is read, changed and written back. A
``threading.Lock`` orders the threads of one process only, so a CLI ``skiff promote`` and the API (or
several pipeline workers) each read the same old document and the last writer drops the others'
entries. :func:`exclusive` serialises such edits for every process that uses it:

* **Local folders** (the embedded default, and a shared POSIX volume): an OS lock on a lock file next to
  the record (``filelock``: ``flock`` on Linux/macOS, ``LockFileEx`` on Windows). The kernel drops it
  when the holder dies, even by ``kill -9``, so nothing has to expire. Within a process the same lock
  also orders threads, and a thread that holds it may take it again (re-entrant).
* **Object stores** (``s3://``, ``abfs://``) have no lock and no rename. There the lock is a no-op and
  writers are expected to be one per model (a KFP pipeline's register step, one API replica); see
  :func:`exclusive` for the exact limit. A conditional write (S3 ``If-Match``, Azure ``ETag``) would
  make it safe across pods; skiff does not do that yet.

Lock files are named ``.<record>.lock`` (hidden: no reader lists them as data or versions).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from skiff.errors import StorageError
from skiff.storage import Store

__all__ = ["exclusive", "exclusive_path", "LOCK_TIMEOUT_S"]

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
    """Hold the lock of the record ``parts`` under ``store`` while reading and rewriting it.

    On an object store this only orders the threads of this process: the lock does NOT hold across
    processes or pods there (logged once per store), so run one writer per model on object stores.
    """
    *folder, name = parts
    if store.is_local:
        with exclusive_path(store.local_path(*folder, f".{name}.lock"), timeout=timeout):
            yield
        return
    if store.root not in _warned_remote:
        _warned_remote.add(store.root)
        log.warning("%s: object stores have no cross-process lock; concurrent writers of one model's "
                    "versions or champion may lose an update (run one writer per model)", store.root)
    with exclusive_path(Path(_local_lock_dir(), *_safe(store.root), *folder, f".{name}.lock"), timeout=timeout):
        yield


def _local_lock_dir() -> Path:
    import tempfile

    return Path(tempfile.gettempdir()) / "skiff-locks"


def _safe(root: str) -> list[str]:
    return ["".join(c if c.isalnum() or c in "-_." else "_" for c in root)]
