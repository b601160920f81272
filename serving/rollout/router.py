"""The embedded engine's canary split: a small weighted HTTP router in front of two local model servers.

In a cluster KServe splits traffic between two revisions (``canaryTrafficPercent``); on a laptop this
router does the same job in front of two local KServe ModelServers (the stable and the canary version).
It forwards the Open Inference Protocol requests — V1 ``/v1/models/<name>[:predict]`` and V2
``/v2/models/<name>[/infer|/ready]`` — to one side chosen at random by weight (a seed makes the choice
reproducible), over keep-alive connection pools to both upstreams. It answers health itself
(``/v2/health/live``, ``/v2/health/ready`` = every upstream that gets traffic is ready), exposes its own
``/metrics`` (requests per upstream, version and status; latency; the current split) and an admin API that
answers loopback clients only: ``GET /admin/upstreams``, ``GET|PUT /admin/weights`` (``{"canary_percent": N}``).

Each answer names the side that produced it in ``x-skiff-upstream`` and ``x-skiff-version``. An upstream
that cannot be reached gives a 502 with a JSON body naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from skiff.errors import SourceError, UsageError

__all__ = ["Upstream", "CanaryRouter", "ServerThread", "RouterThread", "serve_router", "free_port"]

log = logging.getLogger(__name__)

# Headers that belong to one hop and are not forwarded.
_HOP_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
})


class Upstream(BaseModel):
    """One side of the split: a model server and the version it serves."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["stable", "canary"]
    url: str = Field(description="Base URL of the model server, e.g. http://127.0.0.1:8081.")
    version: str


class _Weights(BaseModel):
    model_config = ConfigDict(extra="forbid")

    canary_percent: int = Field(ge=0, le=100)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (for servers that bind by number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class CanaryRouter:
    """The router's state and its ASGI app (:attr:`app`)."""

    def __init__(
        self,
        model: str,
        stable: Upstream,
        canary: Upstream,
        canary_percent: int,
        *,
        seed: int | None = None,
        timeout: float = 30.0,
        max_connections: int = 64,
    ) -> None:
        if not 0 <= canary_percent <= 100:
            raise UsageError(f"canary percent must be between 0 and 100, got {canary_percent}")
        self.model = model
        self.upstreams = {"stable": stable, "canary": canary}
        self.canary_percent = canary_percent
        self._rng = random.Random(seed)
        self._timeout = timeout
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._clients: dict[str, httpx.AsyncClient] = {}
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "skiff_router_requests_total", "Requests forwarded by the canary router.",
            ["model", "upstream", "version", "status"], registry=self.registry,
        )
        self._latency = Histogram(
            "skiff_router_request_duration_seconds", "Time to answer a forwarded request, upstream included.",
            ["model", "upstream", "version"], registry=self.registry,
        )
        self._split = Gauge("skiff_router_canary_percent", "Share of requests sent to the canary.", ["model"],
                            registry=self.registry)
        self._split.labels(model).set(canary_percent)
        self.app = Starlette(
            routes=[
                Route("/v2/health/live", self._live, methods=["GET"]),
                Route("/v2/health/ready", self._ready, methods=["GET"]),
                Route("/metrics", self._metrics, methods=["GET"]),
                Route("/admin/upstreams", self._admin_upstreams, methods=["GET"]),
                Route("/admin/weights", self._admin_weights, methods=["GET", "PUT", "POST"]),
                Route("/v1/{rest:path}", self._forward, methods=["GET", "POST"]),
                Route("/v2/{rest:path}", self._forward, methods=["GET", "POST"]),
            ],
            lifespan=self._lifespan,
        )

    # -- lifecycle ----------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._clients = {
            role: httpx.AsyncClient(base_url=u.url, timeout=self._timeout, limits=self._limits)
            for role, u in self.upstreams.items()
        }
        try:
            yield
        finally:
            await asyncio.gather(*(c.aclose() for c in self._clients.values()))
            self._clients = {}

    # -- routing ------------------------------------------------------------------------------------------
    def set_canary_percent(self, percent: int) -> int:
        if not 0 <= percent <= 100:
            raise UsageError(f"canary percent must be between 0 and 100, got {percent}")
        previous, self.canary_percent = self.canary_percent, percent
        self._split.labels(self.model).set(percent)
        log.info("canary router for %s: canary %s%% (was %s%%)", self.model, percent, previous)
        return previous

    def choose(self) -> str:
        """The side the next request goes to."""
        return "canary" if self._rng.random() * 100 < self.canary_percent else "stable"

    async def _forward(self, request: Request) -> Response:
        role = self.choose()
        up = self.upstreams[role]
        client = self._clients[role]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        body = await request.body()
        started = time.perf_counter()
        try:
            r = await client.request(request.method, request.url.path, params=list(request.query_params.multi_items()),
                                     content=body, headers=headers)
        except httpx.HTTPError as e:
            self._count(role, up, 502, started)
            return JSONResponse(
                {"error": "UpstreamUnavailable", "message": f"the {role} model server did not answer: "
                 f"{type(e).__name__}", "detail": {"upstream": role, "version": up.version}},
                status_code=502, headers=self._tag(role, up),
            )
        self._count(role, up, r.status_code, started)
        out_headers = {k: v for k, v in r.headers.items() if k.lower() not in _HOP_HEADERS
                       and k.lower() != "content-encoding"}
        out_headers.update(self._tag(role, up))
        return Response(r.content, status_code=r.status_code, headers=out_headers)

    @staticmethod
    def _tag(role: str, up: Upstream) -> dict[str, str]:
        return {"x-skiff-upstream": role, "x-skiff-version": up.version}

    def _count(self, role: str, up: Upstream, status: int, started: float) -> None:
        self._requests.labels(self.model, role, up.version, str(status)).inc()
        self._latency.labels(self.model, role, up.version).observe(time.perf_counter() - started)

    # -- own endpoints ------------------------------------------------------------------------------------
    async def _live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def _ready(self, request: Request) -> Response:
        wanted = [r for r in self.upstreams if (self.canary_percent if r == "canary" else 100 - self.canary_percent)]

        async def probe(role: str) -> bool:
            try:
                r = await self._clients[role].get("/v2/health/ready", timeout=2.0)
                return r.status_code == 200
            except httpx.HTTPError:
                return False

        results = dict(zip(wanted, await asyncio.gather(*(probe(r) for r in wanted)), strict=True))
        ready = all(results.values())
        return JSONResponse({"ready": ready, "upstreams": results}, status_code=200 if ready else 503)

    async def _metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    def _admin_allowed(self, request: Request) -> JSONResponse | None:
        host = request.client.host if request.client else None
        if _is_loopback(host):
            return None
        return JSONResponse({"error": "Forbidden", "message": "the admin API answers loopback clients only"},
                            status_code=403)

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "canary_percent": self.canary_percent,
                **{role: u.model_dump() for role, u in self.upstreams.items()}}

    async def _admin_upstreams(self, request: Request) -> Response:
        return self._admin_allowed(request) or JSONResponse(self.describe())

    async def _admin_weights(self, request: Request) -> Response:
        denied = self._admin_allowed(request)
        if denied:
            return denied
        if request.method == "GET":
            return JSONResponse({"canary_percent": self.canary_percent})
        try:
            w = _Weights.model_validate_json(await request.body())
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors())
            return JSONResponse({"error": "UsageError", "message": f"bad weights: {problems}"}, status_code=400)
        previous = self.set_canary_percent(w.canary_percent)
        return JSONResponse({"canary_percent": self.canary_percent, "previous": previous})


def _config(app: Any, host: str, port: int) -> Any:
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                          timeout_keep_alive=30)


def serve_router(router: CanaryRouter, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the router in the foreground until interrupted (SIGINT/SIGTERM)."""
    import uvicorn

    uvicorn.Server(_config(router.app, host, port)).run()


class ServerThread:
    """An ASGI app served by uvicorn on a background thread, on a socket bound before it starts
    (port 0 picks a free one without a race)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.app = app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError as e:
            self._sock.close()
            raise SourceError(f"cannot listen on {host}:{port}: {e}") from e
        self.host, self.port = host, self._sock.getsockname()[1]
        self._server = uvicorn.Server(_config(app, host, self.port))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=f"asgi-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise SourceError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RouterThread(ServerThread):
    """The canary router on a background thread (for the rollout command and tests)."""

    def __init__(self, router: CanaryRouter, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(router.app, host, port)
        self.router = router
