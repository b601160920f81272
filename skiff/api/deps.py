"""What every route depends on: the server's context and the authentication checks."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from skiff.api.auth import Scope, TokenSet
from skiff.config import Settings
from skiff.identifiers import NAME_RE

if TYPE_CHECKING:
    from skiff.api.runs import LocalRuns

__all__ = ["ApiContext", "context", "require_read", "require_admin", "NameParam", "EnvParam"]

_bearer = HTTPBearer(auto_error=False, description="A token whose SHA-256 digest the server was given.")

#: model, dataset and pipeline names in paths: the registry's naming rule (no '/', no '..')
NameParam = Annotated[str, PathParam(pattern=NAME_RE, description="A name: letters, digits, '_' and '-'.")]
EnvParam = Annotated[str, PathParam(pattern=NAME_RE, description="An environment (infra/environments/<env>).")]


@dataclass
class ApiContext:
    """The server's state, built once in :func:`skiff.api.create_app`."""

    settings: Settings
    tokens: TokenSet
    environments: Path
    kfp_client_factory: Callable[..., Any] | None
    runs: LocalRuns
    #: serialises the read-modify-write edits of this server (champion file, environment model files)
    write_lock: threading.Lock = field(default_factory=threading.Lock)


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.skiff  # set once by create_app; starlette's state is untyped
    return ctx


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": "Bearer"})


def _scope(request: Request, creds: HTTPAuthorizationCredentials | None) -> Scope:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise _unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    scope = context(request).tokens.scope_of(creds.credentials)
    if scope is None:
        raise _unauthorized("invalid bearer token")
    return scope


def require_read(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Scope:
    """Any valid token (read or admin)."""
    return _scope(request, creds)


def require_admin(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Scope:
    """An admin token: needed by every change (champion, promote, rollback, pipeline runs)."""
    scope = _scope(request, creds)
    if scope != "admin":
        raise HTTPException(status_code=403, detail="this token is read-only; the request needs an admin token")
    return scope
