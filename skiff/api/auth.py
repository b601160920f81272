"""Bearer-token authentication of the REST API.

The server never holds a token in plain text: it is given the SHA-256 hex digests of the tokens it
accepts, from environment variables or a file, and compares the digest of a presented token with each
of them in constant time (:func:`hmac.compare_digest`). Two scopes:

- ``admin``: everything, mutations included (champion, promote, rollback, pipeline runs);
  ``SKIFF_API_TOKENS_SHA256`` (comma-separated digests) or a tokens-file line ``<digest>`` /
  ``<digest> admin``;
- ``read``: reads only; ``SKIFF_API_READ_TOKENS_SHA256`` or a tokens-file line ``<digest> read``.

``skiff api hash-token`` prints the digest of a token read from stdin.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from skiff.errors import ConfigError

__all__ = [
    "ADMIN_ENV",
    "READ_ENV",
    "Scope",
    "TokenSet",
    "hash_token",
    "load_tokens",
]

ADMIN_ENV = "SKIFF_API_TOKENS_SHA256"
READ_ENV = "SKIFF_API_READ_TOKENS_SHA256"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")

Scope = Literal["read", "admin"]


def hash_token(token: str) -> str:
    """The SHA-256 hex digest of a token (surrounding whitespace removed), as the server stores it."""
    token = token.strip()
    if not token:
        raise ConfigError("empty token: give a non-empty token to hash")
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _digest(value: str, origin: str) -> str:
    d = value.strip().lower()
    if not _DIGEST.match(d):
        # never echo the value: it may be a plaintext token pasted by mistake
        raise ConfigError(f"{origin}: expected SHA-256 hex digests (64 hex characters); run "
                          "`skiff api hash-token` to turn a token into one")
    return d


@dataclass(frozen=True)
class TokenSet:
    """The digests the server accepts, by scope."""

    admin: frozenset[str] = field(default_factory=frozenset)
    read: frozenset[str] = field(default_factory=frozenset)

    def __bool__(self) -> bool:
        return bool(self.admin or self.read)

    @classmethod
    def of(cls, admin: list[str] | tuple[str, ...] = (), read: list[str] | tuple[str, ...] = ()) -> TokenSet:
        return cls(admin=frozenset(_digest(d, "admin token digest") for d in admin),
                   read=frozenset(_digest(d, "read token digest") for d in read))

    def scope_of(self, token: str) -> Scope | None:
        """The scope a presented token grants, or None. Every digest is compared (no early exit)."""
        if not token:
            return None
        presented = hashlib.sha256(token.encode("utf-8")).hexdigest()
        is_admin = False
        is_read = False
        for d in self.admin:
            is_admin |= hmac.compare_digest(presented, d)
        for d in self.read:
            is_read |= hmac.compare_digest(presented, d)
        if is_admin:
            return "admin"
        return "read" if is_read else None


def _parse_file(path: Path) -> tuple[list[str], list[str]]:
    if not path.is_file():
        raise ConfigError(f"tokens file not found: {path}")
    admin: list[str] = []
    read: list[str] = []
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        scope = parts[1].lower() if len(parts) > 1 else "admin"
        if len(parts) > 2 or scope not in ("admin", "read"):
            raise ConfigError(f"{path}:{lineno}: expected '<sha256 digest> [admin|read]'")
        (admin if scope == "admin" else read).append(_digest(parts[0], f"{path}:{lineno}"))
    return admin, read


def load_tokens(tokens_file: str | Path | None = None, environ: Mapping[str, str] | None = None) -> TokenSet:
    """Token digests from ``SKIFF_API_TOKENS_SHA256`` / ``SKIFF_API_READ_TOKENS_SHA256`` and a tokens file."""
    env = os.environ if environ is None else environ
    admin = [d for d in env.get(ADMIN_ENV, "").split(",") if d.strip()]
    read = [d for d in env.get(READ_ENV, "").split(",") if d.strip()]
    admin = [_digest(d, ADMIN_ENV) for d in admin]
    read = [_digest(d, READ_ENV) for d in read]
    if tokens_file is not None:
        file_admin, file_read = _parse_file(Path(tokens_file))
        admin += file_admin
        read += file_read
    return TokenSet.of(admin, read)
