"""Locations that may be URIs: the one place that tells a URI from a local path.

skiff's lake, registry, artifacts and Feast folder are each a local folder or an object-store URI
(``s3://``, ``abfs://``, ``gs://``), and they reach file systems through fsspec (:mod:`skiff.storage`).
``pathlib.Path`` must never see one of them: ``Path("s3://bucket/feast")`` is the local relative
folder ``s3:/bucket/feast`` (the double slash collapses), and ``.resolve()`` then turns it into
``/cwd/s3:/bucket/feast`` — a folder created on the local disk while the cluster's data is elsewhere,
with no error. So code that holds a location calls :func:`absolute` (a URI stays as it is, a local path
becomes absolute) or :func:`local_path` (a :class:`~skiff.errors.StorageError` for a URI), never
``Path()`` itself; ``tests/unit/test_uri.py`` fails on a ``Path()`` call over a location-named value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from skiff.errors import StorageError

__all__ = ["scheme", "is_uri", "is_remote", "absolute", "local_path", "azure_blob_url"]

# RFC 3986 scheme followed by "://"; a Windows drive ("C:\\data") has no "//" after its colon
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# abfs[s]://<container>@<account>.dfs.core.windows.net[/<path>] (fsspec/adlfs's form of an ADLS Gen2 location)
_ABFS = re.compile(r"^abfss?://(?P<container>[^@/]+)@(?P<account>[a-z0-9]+)\.dfs\.(?P<suffix>core\.[^/]+)(?P<path>/.*)?$")


def scheme(location: str | os.PathLike[str]) -> str:
    """The location's URI scheme, lower-case (``"s3"``, ``"abfs"``, ``"file"``); ``""`` for a plain path."""
    m = _SCHEME.match(os.fspath(location))
    return m.group(1).lower() if m else ""


def is_uri(location: str | os.PathLike[str]) -> bool:
    """Whether the location is written as a URI (``scheme://...``), ``file://`` included."""
    return bool(scheme(location))


def is_remote(location: str | os.PathLike[str]) -> bool:
    """Whether the location is on another file system than the local one (any scheme but ``file``)."""
    return scheme(location) not in ("", "file")


def absolute(location: str | os.PathLike[str]) -> str:
    """A URI as it is (trailing ``/`` dropped); a local path absolute, symlinks kept (``os.path.abspath``)."""
    text = os.fspath(location)
    if is_uri(text):
        stripped = text.rstrip("/")
        return text if stripped.endswith(":") else stripped  # "file:///" keeps its slashes
    return os.path.abspath(text)


def local_path(location: str | os.PathLike[str], what: str = "location") -> Path:
    """The local folder or file a location names (``file://`` stripped), absolute.

    A :class:`StorageError` naming ``what`` when the location is remote: the caller needs a local
    folder there (kfp.local's pipeline root, a SQLite file) and must say so rather than make one up.
    """
    text = os.fspath(location)
    if is_remote(text):
        raise StorageError(f"{what} must be a local folder here, got the URI {text!r}", path=text)
    if scheme(text) == "file":
        text = text[len("file://"):]
    return Path(os.path.abspath(text))


def azure_blob_url(location: str) -> str:
    """The ``https://<account>.blob.<suffix>/<container>/<path>`` form of an ``abfs://`` location: the one
    Azure clients outside fsspec take (Feast's Azure registry store, KServe's storage initializer).

    A :class:`StorageError` when ``location`` is not ``abfs[s]://<container>@<account>.dfs.<suffix>/...``.
    """
    m = _ABFS.match(location)
    if m is None:
        raise StorageError(f"not an abfs://<container>@<account>.dfs.core.windows.net location: {location!r}",
                           path=location)
    path = (m.group("path") or "").rstrip("/")
    return f"https://{m.group('account')}.blob.{m.group('suffix')}/{m.group('container')}{path}"

