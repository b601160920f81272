"""The local canary router over real HTTP: weighted split, forwarding, admin API, its own metrics.

Upstreams here are small stand-in model servers (Starlette on uvicorn, on free 127.0.0.1 ports) that
answer the V1/V2 predict and metadata routes and export the same Prometheus series as skiff's model
server (``skiff_requests_total{model, version, status}``, ``skiff_request_duration_seconds``). The
rollout tests import :class:`StandIn` and :class:`Load` from here.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from serving.rollout.router import CanaryRouter, RouterThread, ServerThread, Upstream

pytestmark = pytest.mark.integration

MODEL = "churn"
V1_BODY = {"instances": [{"usage": 3.5, "seats": 4}]}


class StandIn:
    """A stand-in model server for one version: ``ok``, ``error`` (500 on predict) or ``slow``."""

    def __init__(self, model: str, version: str, mode: str = "ok", delay: float = 0.2, port: int = 0) -> None:
        self.model, self.version, self.mode, self.delay = model, version, mode, delay
        self.registry = CollectorRegistry()
        self.requests = Counter("skiff_requests_total", "requests", ["model", "version", "status"],
                                registry=self.registry)
        self.duration = Histogram("skiff_request_duration_seconds", "latency", ["model", "version"],
                                  registry=self.registry,
                                  buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
        self.seen: list[dict] = []
        app = Starlette(routes=[
            Route("/v2/health/ready", lambda r: JSONResponse({"ready": True})),
            Route("/v2/health/live", lambda r: JSONResponse({"live": True})),
            Route("/metrics", self._metrics),
            Route("/v1/models/{rest:path}", self._v1, methods=["GET", "POST"]),
            Route("/v2/models/{rest:path}", self._v2, methods=["GET", "POST"]),
        ])
        self.server = ServerThread(app, port=port)

    async def _metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def _answer(self, request: Request, payload: dict) -> Response:
        import asyncio

        start = time.perf_counter()
        self.seen.append({"path": request.url.path, "query": str(request.query_params),
                          "header": request.headers.get("x-test")})
        if self.mode == "slow":
            await asyncio.sleep(self.delay)
        status = 500 if self.mode == "error" else 200
        body = ({"error": "RuntimeError", "message": "model blew up"} if status == 500 else payload)
        self.duration.labels(self.model, self.version).observe(time.perf_counter() - start)
        self.requests.labels(self.model, self.version, str(status)).inc()
        return JSONResponse(body, status_code=status)

    async def _v1(self, request: Request) -> Response:
        rest = request.path_params["rest"]
        if request.method == "POST" and rest.endswith(":predict"):
            body = await request.json()
            return await self._answer(request, {"predictions": [self.version] * len(body["instances"]),
                                                "model_version": self.version})
        return JSONResponse({"name": rest, "ready": True, "version": self.version, "query": str(request.query_params)})

    async def _v2(self, request: Request) -> Response:
        rest = request.path_params["rest"]
        if request.method == "POST" and rest.endswith("/infer"):
            return await self._answer(request, {"model_name": self.model, "model_version": self.version,
                                                "outputs": [{"name": "label", "shape": [1], "datatype": "INT64",
                                                             "data": [1]}]})
        return JSONResponse({"name": rest, "versions": [self.version], "platform": "stand-in"})

    def __enter__(self) -> StandIn:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url


@dataclass
class Load:
    """A bounded client load: ``threads`` clients, each at most ``rate`` requests per second."""

    url: str
    rate: float = 25.0
    threads: int = 2
    records: list[tuple[float, float, int, str]] = field(default_factory=list)  # (sent, done, status, upstream)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        with httpx.Client(timeout=10.0) as client:
            while not self._stop.is_set():
                sent = time.time()
                try:
                    r = client.post(f"{self.url}/v1/models/{MODEL}:predict", json=V1_BODY)
                    rec = (sent, time.time(), r.status_code, r.headers.get("x-skiff-upstream", ""))
                except httpx.HTTPError:
                    rec = (sent, time.time(), 599, "")
                self.records.append(rec)
                pause = 1.0 / self.rate - (time.time() - sent)
                if pause > 0:
                    self._stop.wait(pause)

    def __enter__(self) -> Load:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(15)


def _router(stable: StandIn, canary: StandIn, percent: int, seed: int | None = 7) -> CanaryRouter:
    return CanaryRouter(MODEL, Upstream(role="stable", url=stable.url, version=stable.version),
                        Upstream(role="canary", url=canary.url, version=canary.version), percent, seed=seed)


def test_split_follows_the_weights_and_is_reproducible_with_a_seed():
    with StandIn(MODEL, "1") as s, StandIn(MODEL, "2") as c:
        sides = []
        for _ in range(2):
            router = _router(s, c, 20, seed=11)
            with RouterThread(router) as rt, httpx.Client() as client:
                got = [client.post(f"{rt.url}/v1/models/{MODEL}:predict", json=V1_BODY) for _ in range(300)]
            assert all(r.status_code == 200 for r in got)
            # the answer comes from the side the header names
            assert all(r.json()["model_version"] == r.headers["x-skiff-version"] for r in got)
            sides.append([r.headers["x-skiff-upstream"] for r in got])
        assert sides[0] == sides[1]  # same seed, same sequence of choices
        share = sides[0].count("canary") / 300
        assert 0.14 <= share <= 0.26, share


def test_forwards_v1_v2_metadata_query_and_headers():
    with StandIn(MODEL, "1") as s, StandIn(MODEL, "2") as c, RouterThread(_router(s, c, 0)) as rt, \
            httpx.Client(base_url=rt.url) as client:
        v2 = client.post(f"/v2/models/{MODEL}/infer", json={"inputs": []}, headers={"x-test": "abc"})
        assert v2.status_code == 200 and v2.json()["outputs"][0]["data"] == [1]
        meta = client.get(f"/v2/models/{MODEL}")
        assert meta.json() == {"name": MODEL, "versions": ["1"], "platform": "stand-in"}
        v1meta = client.get(f"/v1/models/{MODEL}", params={"verbose": "1"})
        assert v1meta.json() == {"name": MODEL, "ready": True, "version": "1", "query": "verbose=1"}
        assert s.seen == [{"path": f"/v2/models/{MODEL}/infer", "query": "", "header": "abc"}]
        assert client.get("/v2/health/live").json() == {"live": True}
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 200 and ready.json()["upstreams"] == {"stable": True}
        assert c.seen == []  # 0 % canary: nothing reached it


def test_admin_weights_change_the_split_and_metrics_count_per_upstream():
    with StandIn(MODEL, "1") as s, StandIn(MODEL, "2", mode="error") as c, \
            RouterThread(_router(s, c, 0)) as rt, httpx.Client(base_url=rt.url) as client:
        assert client.get("/admin/weights").json() == {"canary_percent": 0}
        r = client.put("/admin/weights", json={"canary_percent": 100})
        assert r.json() == {"canary_percent": 100, "previous": 0}
        bad = [client.post(f"/v1/models/{MODEL}:predict", json=V1_BODY) for _ in range(5)]
        assert [b.status_code for b in bad] == [500] * 5
        assert {b.headers["x-skiff-upstream"] for b in bad} == {"canary"}
        client.put("/admin/weights", json={"canary_percent": 0})
        good = [client.post(f"/v1/models/{MODEL}:predict", json=V1_BODY) for _ in range(3)]
        assert [g.status_code for g in good] == [200] * 3
        metrics = client.get("/metrics").text
        assert f'skiff_router_requests_total{{model="{MODEL}",status="500",upstream="canary",version="2"}} 5.0' in metrics
        assert f'skiff_router_requests_total{{model="{MODEL}",status="200",upstream="stable",version="1"}} 3.0' in metrics
        assert f'skiff_router_canary_percent{{model="{MODEL}"}} 0.0' in metrics
        up = client.get("/admin/upstreams").json()
        assert up["canary"] == {"role": "canary", "url": c.url, "version": "2"}
        # bad weights are refused with the field named, and change nothing
        for body in ({"canary_percent": 101}, {"canary_percent": 5, "extra": 1}, {}):
            r = client.put("/admin/weights", json=body)
            assert r.status_code == 400, r.text
            assert "bad weights" in r.json()["message"]
        assert client.get("/admin/weights").json() == {"canary_percent": 0}


def test_admin_api_refuses_non_loopback_clients():
    router = CanaryRouter(MODEL, Upstream(role="stable", url="http://127.0.0.1:9", version="1"),
                          Upstream(role="canary", url="http://127.0.0.1:9", version="2"), 10)
    with TestClient(router.app, client=("10.1.2.3", 5555)) as tc:
        assert tc.put("/admin/weights", json={"canary_percent": 50}).status_code == 403
        assert tc.get("/admin/upstreams").status_code == 403
    assert router.canary_percent == 10


def test_unreachable_upstream_is_a_502_naming_it():
    from serving.rollout.router import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    with StandIn(MODEL, "1") as s:
        router = CanaryRouter(MODEL, Upstream(role="stable", url=s.url, version="1"),
                              Upstream(role="canary", url=dead, version="2"), 100)
        with RouterThread(router) as rt, httpx.Client(base_url=rt.url) as client:
            r = client.post(f"/v1/models/{MODEL}:predict", json=V1_BODY)
            assert r.status_code == 502
            assert r.json()["detail"] == {"upstream": "canary", "version": "2"}
            assert client.get("/v2/health/ready").status_code == 503
