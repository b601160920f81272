"""Storage through fsspec: the same calls for a local folder, ``s3://`` and ``abfs://``.

Writes that must never be seen half-done (a lake partition, a model version) go through
:meth:`Store.atomic_dir`: the content is staged, then published in one step. On a local file system
that step is a directory rename (atomic, and it refuses to replace an existing directory, which is
what makes model versions immutable and concurrent registrations safe). Object stores have no
rename: the files are uploaded under the final prefix and a commit marker (``_COMMITTED``) is written
last; readers treat a folder without its marker as absent (:meth:`Store.is_committed`).

A local staging folder (``.staging-*`` beside its target) records its owner (``.owner.json``: pid,
host, start) until it is published. A writer killed with ``kill -9`` leaves it behind;
:meth:`Store.clean_abandoned_staging` removes those whose owner process is gone (same host) or that are
older than :data:`STAGING_MAX_AGE_S` (a writer on another host), and the next writer calls it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol

import fsspec
from fsspec.implementations.local import LocalFileSystem

from skiff.errors import ConflictError, StorageError

__all__ = ["Store", "FileSystem", "COMMIT_MARKER", "STAGING_MAX_AGE_S", "join_uri"]

COMMIT_MARKER = "_COMMITTED"
STAGING_PREFIX = ".staging-"
OWNER_FILE = ".owner.json"
#: A staging folder older than this is abandoned whoever owns it (no write takes a day; a host's pids
#: cannot be checked from another host).
STAGING_MAX_AGE_S = 24 * 3600.0


class FileSystem(Protocol):
    """The part of an fsspec file system the core calls (fsspec ships no types: this is its contract here)."""

    def exists(self, path: str) -> bool: ...
    def ls(self, path: str, detail: bool = ...) -> list[str]: ...
    def open(self, path: str, mode: str = ...) -> IO[Any]: ...
    def put_file(self, lpath: str, rpath: str) -> None: ...
    def rm(self, path: str, recursive: bool = ...) -> None: ...
    def _strip_protocol(self, path: str) -> str: ...


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's live process
        return True
    return True


def join_uri(base: str, *parts: str) -> str:
    """Join URI parts with '/', whatever the scheme."""
    out = base.rstrip("/")
    for p in parts:
        p = str(p).strip("/")
        if p:
            out = f"{out}/{p}"
    return out


class Store:
    """A root URI and its file system. Paths given to methods are relative to the root."""

    def __init__(self, root: str, storage_options: dict[str, Any] | None = None) -> None:
        self.root = str(root).rstrip("/") or "/"
        self.fs: FileSystem
        self._root_path: str
        try:
            self.fs, self._root_path = fsspec.core.url_to_fs(self.root, **(storage_options or {}))
        except (ImportError, ValueError) as e:
            raise StorageError(f"cannot open storage {self.root!r}: {e}") from e
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if self.is_local:
            self._root_path = os.path.abspath(self._root_path)

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    # -- paths -------------------------------------------------------------------------------------
    def uri(self, *parts: str) -> str:
        """The full URI of a relative path (what other tools, e.g. KServe storageUri, take)."""
        return join_uri(self.root if not self.is_local else self._root_path, *parts)

    def _p(self, *parts: str) -> str:
        return join_uri(self._root_path, *parts)

    def child(self, *parts: str) -> Store:
        sub = Store.__new__(Store)
        sub.fs, sub.is_local = self.fs, self.is_local
        sub.root = join_uri(self.root, *parts)
        sub._root_path = self._p(*parts)
        return sub

    # -- reads ---------------------------------------------------------------------------------------
    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self._p(*parts))

    def is_committed(self, *parts: str) -> bool:
        """A folder written by :meth:`atomic_dir` is complete (always true after a local rename)."""
        return self.fs.exists(self._p(*parts, COMMIT_MARKER))

    def listdir(self, *parts: str) -> list[str]:
        """Names directly under a folder, sorted; [] when the folder does not exist."""
        path = self._p(*parts)
        if not self.fs.exists(path):
            return []
        names = [e.rstrip("/").rsplit("/", 1)[-1] for e in self.fs.ls(path, detail=False)]
        return sorted(n for n in names if n)

    def open(self, *parts: str, mode: str = "rb") -> IO[Any]:
        try:
            return self.fs.open(self._p(*parts), mode)
        except FileNotFoundError:
            raise
        except OSError as e:
            raise StorageError(f"cannot open {self.uri(*parts)}: {e}") from e

    def read_bytes(self, *parts: str) -> bytes:
        with self.open(*parts, mode="rb") as f:
            data: bytes = f.read()
            return data

    def read_text(self, *parts: str) -> str:
        return self.read_bytes(*parts).decode("utf-8")

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.read_bytes(*parts))

    def local_path(self, *parts: str) -> Path:
        """The local path of a file (local stores only)."""
        if not self.is_local:
            raise StorageError(f"{self.root} is not a local folder")
        return Path(self._p(*parts))

    # -- writes ----------------------------------------------------------------------------------------
    def write_bytes(self, data: bytes, *parts: str) -> str:
        """Write a file so readers see the old content or the new one, never a partial file."""
        path = self._p(*parts)
        if self.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        else:  # object stores make a single PUT visible atomically
            with self.fs.open(path, "wb") as f:
                f.write(data)
        return self.uri(*parts)

    def write_text(self, text: str, *parts: str) -> str:
        return self.write_bytes(text.encode("utf-8"), *parts)

    def write_json(self, obj: Any, *parts: str) -> str:
        return self.write_bytes(json.dumps(obj, indent=2, sort_keys=True, default=str).encode(), *parts)

    def delete(self, *parts: str) -> None:
        path = self._p(*parts)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    @contextlib.contextmanager
    def atomic_dir(self, *parts: str) -> Iterator[Path]:
        """Stage a folder locally and publish it under ``parts`` in one step.

        Yields a local staging folder to fill. On success the folder appears at its final place whole;
        on an exception nothing appears. Raises :class:`ConflictError` when the target exists already.
        """
        final = self._p(*parts)
        if self.exists(*parts):
            raise ConflictError(f"{self.uri(*parts)} exists already", path=self.uri(*parts))
        if self.is_local:
            parent = os.path.dirname(final)
            os.makedirs(parent, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{uuid.uuid4().hex[:8]}-", dir=parent))
            (staging / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                          "started": time.time()}))
        else:
            staging = Path(tempfile.mkdtemp(prefix="skiff-staging-"))
        try:
            yield staging
            (staging / COMMIT_MARKER).write_text("")
            if self.is_local:
                (staging / OWNER_FILE).unlink(missing_ok=True)
                try:
                    os.rename(staging, final)
                except OSError as e:  # ENOTEMPTY / EEXIST: somebody published first
                    raise ConflictError(f"{self.uri(*parts)} exists already", path=self.uri(*parts)) from e
            else:
                files = sorted(p for p in staging.rglob("*") if p.is_file() and p.name != COMMIT_MARKER)
                for f in files:
                    self.fs.put_file(str(f), join_uri(final, f.relative_to(staging).as_posix()))
                self.fs.put_file(str(staging / COMMIT_MARKER), join_uri(final, COMMIT_MARKER))
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def clean_abandoned_staging(self, *parts: str, depth: int = 0,
                                max_age_s: float = STAGING_MAX_AGE_S) -> list[str]:
        """Remove abandoned ``.staging-*`` folders under ``parts`` (``depth`` levels of subfolders below
        it too); returns their URIs. Abandoned: the owner process is gone (same host), or the folder is
        older than ``max_age_s``. Local stores only (object-store staging lives in the writer's temp)."""
        if not self.is_local:
            return []
        base = Path(self._p(*parts))
        folders = [base]
        for _ in range(depth):
            folders = [c for f in folders if f.is_dir() for c in f.iterdir()
                       if c.is_dir() and not c.name.startswith(".")]
        removed = []
        now = time.time()
        for folder in folders:
            if not folder.is_dir():
                continue
            for cand in folder.iterdir():
                if not (cand.name.startswith(STAGING_PREFIX) and cand.is_dir()):
                    continue
                if self._staging_live(cand, now, max_age_s):
                    continue
                shutil.rmtree(cand, ignore_errors=True)
                if not cand.exists():
                    removed.append(str(cand))
        return removed

    @staticmethod
    def _staging_live(folder: Path, now: float, max_age_s: float) -> bool:
        try:
            age = now - folder.stat().st_mtime
        except FileNotFoundError:  # published or removed meanwhile: nothing to clean
            return True
        try:
            owner = json.loads((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):  # no owner record yet, publishing now, or an older skiff: age decides
            return age <= max_age_s
        if age > max_age_s or now - float(owner.get("started", now)) > max_age_s:
            return False
        if owner.get("host") == socket.gethostname():
            return _pid_alive(int(owner.get("pid", -1)))
        return True  # another host's writer, still young: it may be running
