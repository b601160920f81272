"""The REST API application: models, pipelines, deployments, rollbacks and drift monitoring.

Build it with :func:`create_app` inside an entry point (``skiff api``); nothing is built at import time.
Every route under ``/api/v1`` needs a bearer token (:mod:`skiff.api.auth`); ``/healthz`` does not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI

from skiff import __version__
from skiff.api.auth import TokenSet
from skiff.api.deps import ApiContext
from skiff.api.errors import install_error_handlers
from skiff.api.runs import LocalRuns
from skiff.config import Settings
from skiff.errors import ConfigError

__all__ = ["create_app", "API_PREFIX"]

API_PREFIX = "/api/v1"


def create_app(
    settings: Settings,
    *,
    tokens: TokenSet,
    environments: str | Path = "infra/environments",
    kfp_client_factory: Callable[..., Any] | None = None,
) -> FastAPI:
    """The FastAPI app over ``settings``' lake and registry and the GitOps ``environments`` folder.

    ``tokens`` holds the SHA-256 digests the server accepts (at least one); ``kfp_client_factory``
    replaces ``kfp.Client`` for cluster submissions (called with ``host=``).
    """
    if not tokens:
        raise ConfigError("the REST API needs at least one token digest (admin or read)")
    from skiff.api.routes import deployments, models, monitoring, pipelines

    runs = LocalRuns(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        runs.shutdown()

    app = FastAPI(
        title="skiff",
        version=__version__,
        description="Models, pipelines, deployments, rollbacks and data drift of a skiff platform. "
        "Send `Authorization: Bearer <token>` on every request but /healthz.",
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.skiff = ApiContext(settings=settings, tokens=tokens, environments=Path(environments),
                                 kfp_client_factory=kfp_client_factory, runs=runs)
    install_error_handlers(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: no authentication, no I/O."""
        return {"status": "ok", "version": __version__}

    api = APIRouter(prefix=API_PREFIX)
    for module in (models, pipelines, deployments, monitoring):
        api.include_router(module.router)
    app.include_router(api)
    return app
