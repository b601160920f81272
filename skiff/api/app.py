"""The REST API application: models, pipelines, deployments, rollbacks and drift monitoring.

Build it with :func:`create_app` inside an entry point (``skiff api``); nothing is built at import time.
Every route under ``/api/v1`` needs a bearer token (:mod:`skiff.api.auth`), checked by the request
guard before any body byte is read (:mod:`skiff.api.guard`, which also caps bodies); ``/healthz``,
``/openapi.json`` and the docs do not. Swagger UI on ``/docs`` loads its scripts from this server
(fastapi-offline's bundled assets under ``/docs-assets``), never from a CDN, so it works air-gapped;
``docs=False`` turns the page off (the OpenAPI document stays).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi_offline import FastAPIOffline

from skiff import __version__
from skiff.api.auth import TokenSet
from skiff.api.deps import ApiContext
from skiff.api.errors import declare, install_error_handlers
from skiff.api.guard import DEFAULT_MAX_BODY_BYTES, RequestGuard
from skiff.api.runs import LocalRuns
from skiff.config import Settings
from skiff.errors import ConfigError

__all__ = ["create_app", "API_PREFIX", "DOCS_ASSETS"]

API_PREFIX = "/api/v1"
DOCS_ASSETS = "/docs-assets"


def create_app(
    settings: Settings,
    *,
    tokens: TokenSet,
    environments: str | Path = "infra/environments",
    kfp_client_factory: Callable[..., Any] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    docs: bool = True,
) -> FastAPI:
    """The FastAPI app over ``settings``' lake and registry and the GitOps ``environments`` folder.

    ``tokens`` holds the SHA-256 digests the server accepts (at least one); ``kfp_client_factory``
    replaces ``kfp.Client`` for cluster submissions (called with ``host=``); ``max_body_bytes`` caps
    every request body (413 beyond); ``docs`` serves Swagger UI on ``/docs`` from local assets.
    """
    if not tokens:
        raise ConfigError("the REST API needs at least one token digest (admin or read)")
    if max_body_bytes < 1:
        raise ConfigError(f"max_body_bytes must be at least 1, got {max_body_bytes}")
    from skiff.api.routes import (
        deployments,
        evaluations,
        ingestions,
        model_monitoring,
        models,
        monitoring,
        pipelines,
    )

    runs = LocalRuns(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        runs.shutdown()

    options: dict[str, Any] = dict(
        title="skiff",
        version=__version__,
        description="Models, pipelines, deployments, rollbacks and data drift of a skiff platform. "
        "Send `Authorization: Bearer <token>` on every request under /api/v1: without a valid one the "
        f"answer is 401 before the body is read. Request bodies are capped at {max_body_bytes} bytes (413).",
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app = (FastAPIOffline(docs_url="/docs", static_url=DOCS_ASSETS, **options) if docs
           else FastAPI(docs_url=None, **options))
    app.state.skiff = ApiContext(settings=settings, tokens=tokens, environments=Path(environments),
                                 kfp_client_factory=kfp_client_factory, runs=runs)
    install_error_handlers(app)
    app.add_middleware(RequestGuard, tokens=tokens, protected_prefix=API_PREFIX, max_body_bytes=max_body_bytes)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: no authentication, no I/O."""
        return {"status": "ok", "version": __version__}

    # every route under the prefix can answer these; each route declares its own others
    from skiff.api.routes._query import reject_unknown_query

    api = APIRouter(prefix=API_PREFIX, responses=declare(401, 413, 500),
                    dependencies=[Depends(reject_unknown_query)])  # 422 for a query parameter no route declares
    for module in (models, pipelines, deployments, monitoring, model_monitoring, ingestions, evaluations):
        api.include_router(module.router)
    app.include_router(api)
    return app
