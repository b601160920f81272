"""skiff's local model server: KServe's ModelServer pieces on a loopback uvicorn, with skiff's metrics.

:func:`run_server` loads a registered version into a :class:`~serving.runtime.predictor.SkiffPredictor` (and, with
features, a :class:`~serving.runtime.transformer.FeastTransformer` named after the model, the predictor then being
``<name>-predictor``), registers them with ``kserve.ModelServer`` and serves KServe's own V1 and V2
endpoints, ``/metrics`` and (optionally) gRPC, bound to ``127.0.0.1`` unless told otherwise. What skiff
adds around KServe's endpoints:

- JSON error bodies ``{"error", "message", "detail": {"field", ...}}`` for bad requests (400, naming the
  field), unknown models (404), models not ready (503) and skiff errors (their HTTP status);
- readiness that is false while a model failed to load, and says why;
- the version in readiness and V2 model metadata (``versions``, ``platform``), and version routes
  (``/v2/models/<name>/versions/<v>/...``) that answer 404 for a version not served here;
- a lean V2 infer route: the body validated once into KServe's ``InferenceRequest``, KServe's data
  plane and model call, the answer encoded with orjson (KServe's route re-validates and re-encodes the
  answer through FastAPI's generic encoder); binary-tensor requests use KServe's own decoder;
- Prometheus series ``skiff_requests_total{model, version, status}`` and
  ``skiff_request_duration_seconds{model, version}`` for every predict/infer request, rejected ones too;
- a body-size cap of its own (``serve_max_body_bytes``, 64 MiB by default, above the REST API's): 413
  with a JSON reason;
- V1 bodies with the non-JSON literals ``NaN``/``Infinity`` read as V2 reads them, so one value policy
  (:mod:`serving.runtime.inputs`: NaN is missing, infinity a 400 naming the feature) holds on both protocols;
- no per-request log lines unless ``access_log`` is on;
- no model repository extension (KServe's unauthenticated load/unload by request: 404 on REST,
  UNIMPLEMENTED on gRPC): a server serves one registered version for its life; no explainer (V1
  ``:explain`` is a 404 saying so); routes and methods not served get the same JSON error bodies (404,
  405). tests/security/open_inference_protocol.yaml documents the routes served.

:func:`start_local_server` / :func:`stop_local_server` run ``python -m serving`` (the containers' entry
point, :mod:`serving.runtime.entrypoint`) as a subprocess and wait for its readiness, for code that needs servers side by side (canary rollouts, benchmarks, tests).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from skiff.config import Settings, load_settings
from skiff.errors import SkiffError, UsageError

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI
    from prometheus_client import Counter, Histogram
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from serving.runtime.inputs import ErrorBody

__all__ = [
    "ServerOptions",
    "run_server",
    "serve_models",
    "make_app",
    "build_app",
    "start_local_server",
    "stop_local_server",
    "request_metrics",
    "import_kserve",
    "PREDICTOR_SUFFIX",
    "ServedModel",
    "KServeModelServer",
]

log = logging.getLogger(__name__)

#: With features, the transformer takes the model's name and the predictor this suffix.
PREDICTOR_SUFFIX = "-predictor"
_DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0)
_INFER_PATH = re.compile(r"^/v1/models/([^/:]+):predict$|^/v2/models/([^/]+)(?:/versions/[^/]+)?/infer$")
_metrics: tuple[Counter, Histogram] | None = None
_DEFAULT_MAX_BODY = 64 * 1024 * 1024  # Settings.serve_max_body_bytes' default


class ServedModel(Protocol):
    """What the server reads and sets on a registered ``kserve.Model`` (skiff's predictor and transformer;
    ``load_error``, ``version_label`` and ``aclose`` are read where a model has them)."""

    name: str
    ready: bool
    enable_latency_logging: bool


class ModelLookup(Protocol):
    """KServe's model repository as the request metrics read it: the registered model of a name."""

    def get_model(self, name: str) -> ServedModel | None: ...


class KServeModelServer(Protocol):
    """The part of ``kserve.ModelServer`` the server uses (kserve ships no types): its data plane, the
    repository extension KServe's routes take, and model registration."""

    dataplane: Any  # kserve's DataPlane, here skiff's subclass of it (see _dataplane_class)
    model_repository_extension: Any
    registered_models: ModelLookup

    def register_model(self, model: ServedModel) -> None: ...


def import_kserve() -> None:
    """Import kserve without letting its import-time argument parser read this process's arguments."""
    if "kserve" in sys.modules:
        return
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        import kserve  # noqa: F401
    finally:
        sys.argv = saved


def request_metrics() -> tuple[Counter, Histogram]:
    """The ``skiff_requests_total`` Counter and ``skiff_request_duration_seconds`` Histogram (created once)."""
    global _metrics
    if _metrics is None:
        from prometheus_client import Counter, Histogram

        _metrics = (
            Counter("skiff_requests_total", "Inference requests by model, version and HTTP status.",
                    ["model", "version", "status"]),
            Histogram("skiff_request_duration_seconds", "Inference request latency in seconds.",
                      ["model", "version"], buckets=_DURATION_BUCKETS),
        )
    return _metrics


class RequestMetricsMiddleware:
    """ASGI middleware counting and timing predict/infer requests, whatever their outcome."""

    def __init__(self, app: ASGIApp, registry: ModelLookup) -> None:
        self.app = app
        self.registry = registry
        self.counter, self.histogram = request_metrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        m = _INFER_PATH.match(scope["path"])
        if m is None:
            await self.app(scope, receive, send)
            return
        name = m.group(1) or m.group(2)
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            model = self.registry.get_model(name)
            if model is None:
                label, version = "_unknown", ""
            else:
                label, version = name, getattr(model, "version_label", "")
            self.histogram.labels(label, version).observe(time.perf_counter() - start)
            self.counter.labels(label, version, str(status[0])).inc()


class BodyLimitMiddleware:
    """ASGI middleware answering 413 with a JSON reason for a body over ``max_bytes``: a declared
    ``Content-Length`` before anything is read, a chunked body as soon as it passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._too_large(send)
            return
        seen = [0]
        started = [False]

        class _TooLarge(Exception):
            pass

        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                started[0] = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started[0]:
                await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        import orjson

        body = orjson.dumps(_error_body(
            "PayloadTooLarge", f"request body over the model server's limit of {self.max_bytes} bytes: send "
            "smaller batches (or raise serve_max_body_bytes)", max_body_bytes=self.max_bytes))
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _json_response(status_code: int, content: Any) -> Response:
    import orjson
    from starlette.responses import Response

    try:
        payload = orjson.dumps(content)
    except TypeError:  # e.g. an integer beyond 64 bits echoed in a detail: still a JSON answer
        import json

        payload = json.dumps(content, default=str).encode()
    return Response(payload, status_code=status_code, media_type="application/json")


def _error_body(error: str, message: str, **detail: Any) -> ErrorBody:
    body: ErrorBody = {"error": error, "message": message}
    detail = {k: v for k, v in detail.items() if v is not None}
    if detail:
        body["detail"] = detail
    return body


def _dataplane_class() -> type[Any]:
    """skiff's subclass of KServe's ``DataPlane`` (made on first use: kserve is imported late)."""
    import json

    import orjson
    from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
    from kserve.errors import InvalidInput, ModelNotReady
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.rest.v2_datamodels import InferenceRequest
    from pydantic import ValidationError

    from serving.runtime.inputs import BadRequest

    def _v2_json(body: bytes) -> Any:
        try:
            return InferenceRequest.model_validate_json(body)
        except ValidationError as e:
            first = e.errors()[0]
            if first.get("type") == "json_invalid":
                raise BadRequest(f"the request body is not valid JSON: {first.get('msg')}", "body") from e
            field = ".".join(str(p) for p in first.get("loc", ())) or "body"
            raise BadRequest(f"{field}: {first.get('msg')}", field) from e

    class SkiffDataPlane(DataPlane):  # type: ignore[misc]  # kserve ships no types: DataPlane is Any here
        """KServe's data plane with readiness that reflects failed loads and metadata with the version."""

        @staticmethod
        def parse_v2_json(body: bytes) -> Any:
            return _v2_json(body)

        async def ready(self) -> bool:
            models: dict[str, ServedModel] = self.model_registry.get_models()
            return all(m.ready for m in models.values()) and bool(await super().ready())

        def not_ready_reasons(self) -> dict[str, str]:
            return {n: getattr(m, "load_error", None) or "not loaded"
                    for n, m in self.model_registry.get_models().items() if not m.ready}

        async def get_model(self, name: str) -> ServedModel:
            model: ServedModel = self.get_model_from_registry(name)
            if not model.ready:  # KServe would call load() again on every request; say why instead
                raise ModelNotReady(name, getattr(model, "load_error", None) or "")
            return model

        def metadata(self) -> dict[str, Any]:
            # the model repository extension (load/unload by request) is not served: see _add_skiff_routes
            return {**super().metadata(), "extensions": []}

        async def model_metadata(self, model_name: str) -> dict[str, Any]:
            meta: dict[str, Any] = await super().model_metadata(model_name)
            model = self.get_model_from_registry(model_name)
            version = getattr(model, "version_label", "")
            meta["versions"] = [version] if version else []
            meta["platform"] = getattr(model, "platform", "") or ""
            return meta

        def _is_image_model(self, kwargs: dict[str, Any]) -> bool:
            """Whether the addressed model is an image classifier (its BYTES inputs are encoded images)."""
            name = kwargs.get("model_name")
            model = self.model_registry.get_model(name) if isinstance(name, str) else None
            return getattr(model, "images", None) is not None

        def decode(self, body: Any, headers: dict[str, str] | None, *args: Any,
                   **kwargs: Any) -> tuple[Any, dict[str, Any]]:
            protocol = kwargs.get("protocol_version", args[0] if args else "v1")
            if (isinstance(body, bytes) and str(protocol).lower() == "v2"
                    and INFERENCE_CONTENT_LENGTH_HEADER in (headers or {}) and self._is_image_model(kwargs)):
                from serving.runtime.images import binary_v2_request

                request = binary_v2_request(body, (headers or {})[INFERENCE_CONTENT_LENGTH_HEADER],
                                            str(kwargs.get("model_name")))
                return request, {}
            if (isinstance(body, bytes) and str(protocol).lower() == "v2"
                    and INFERENCE_CONTENT_LENGTH_HEADER not in (headers or {})):
                body = _v2_json(body)  # JSON sent without a JSON content type (tritonclient does)
            try:
                decoded, attributes = super().decode(body, headers, *args, **kwargs)
                if isinstance(decoded, bytes | str):  # V1 sent without a JSON content type: still JSON
                    try:
                        decoded = orjson.loads(decoded)
                    except orjson.JSONDecodeError as e:
                        raise BadRequest(f"the request body is not valid JSON: {e}", "body") from e
                return decoded, attributes
            except InvalidInput as e:
                if isinstance(e, BadRequest):
                    raise
                if isinstance(body, bytes) and str(protocol).lower() != "v2":
                    # orjson refuses NaN/Infinity and integers beyond 64 bits, which V2's parser reads: read
                    # them here too, so the value policy (serving.runtime.inputs) answers on both protocols
                    try:
                        parsed = json.loads(body)
                    except (ValueError, RecursionError):
                        parsed = None
                    if parsed is not None:
                        again: tuple[Any, dict[str, Any]] = super().decode(parsed, headers, *args, **kwargs)
                        return again
                raise BadRequest(str(e), "body") from e
            except (KeyError, TypeError, ValueError, IndexError) as e:  # malformed binary V2 requests
                raise BadRequest(f"malformed inference request: {type(e).__name__}: {e}", "body") from e

    return SkiffDataPlane


def _add_handlers(app: FastAPI) -> None:
    from http import HTTPStatus

    from fastapi.exceptions import RequestValidationError
    from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from serving.runtime.inputs import BadRequest

    async def invalid_input(request: Request, exc: InvalidInput) -> Response:
        body = exc.to_dict() if isinstance(exc, BadRequest) else _error_body("InvalidInput", str(exc), field="body")
        log.debug("400 %s: %s", request.url.path, body["message"])
        return _json_response(400, body)

    async def validation(request: Request, exc: RequestValidationError) -> Response:
        # a V2 body is "InferenceRequest or bytes": the bytes alternative's complaint says nothing useful
        errors = [e for e in exc.errors() if tuple(e.get("loc", ()))[1:2] != ("bytes",)] or exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "InferenceRequest")]
        field = ".".join(loc) or "body"
        if first.get("type") == "json_invalid":
            field = "body"
            message = f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}".rstrip(": ")
        else:
            message = f"{field}: {first.get('msg', 'invalid request')}"
        return _json_response(400, _error_body(
            "InvalidInput", message, field=field,
            errors=[{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg")} for e in errors[:10]]))

    async def not_found(request: Request, exc: ModelNotFound) -> Response:
        name = request.path_params.get("model_name")
        return _json_response(404, _error_body("ModelNotFound", str(exc), model=name))

    async def not_ready(request: Request, exc: ModelNotReady) -> Response:
        return _json_response(503, _error_body("ModelNotReady", str(exc),
                                                                   model=getattr(exc, "model_name", None)))

    async def server_not_ready(request: Request, exc: ServerNotReady) -> Response:
        return _json_response(503, _error_body("ServerNotReady", str(exc)))

    async def skiff_error(request: Request, exc: SkiffError) -> Response:
        if exc.http_status >= 500:
            log.error("%s %s: %s", exc.http_status, request.url.path, exc.message)
        return _json_response(exc.http_status, exc.to_dict())

    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # a route or method this server does not serve: skiff's error body, not Starlette's {"detail"}
        try:
            phrase = HTTPStatus(exc.status_code).phrase
        except ValueError:
            phrase = "HTTP Error"
        message = f"{request.method} {request.url.path}: {exc.detail or phrase}"
        response = _json_response(exc.status_code, _error_body(phrase.title().replace(" ", ""), message))
        response.headers.update(exc.headers or {})
        return response

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unexpected error on %s", request.url.path, exc_info=exc)
        return _json_response(500, _error_body(type(exc).__name__, str(exc)))

    # Starlette types a handler as taking any Exception, though it calls each only with the class it is
    # registered for: the handlers of typed exception classes are ignored for that (arg-type) alone
    app.add_exception_handler(InvalidInput, invalid_input)
    app.add_exception_handler(RequestValidationError, validation)  # type: ignore[arg-type]
    app.add_exception_handler(ModelNotFound, not_found)
    app.add_exception_handler(ModelNotReady, not_ready)
    app.add_exception_handler(ServerNotReady, server_not_ready)
    app.add_exception_handler(SkiffError, skiff_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected)


def _add_skiff_routes(app: FastAPI, dataplane: Any, v2: Any) -> None:
    """Readiness with the version, version-specific V2 routes (404 for a version not served here), and
    the V2 infer route. ``dataplane`` is skiff's KServe data plane, ``v2`` KServe's ``V2Endpoints`` (both
    Any: kserve ships no types).

    The routes are added with ``response_model=None``: their return annotations are for the type checker,
    and FastAPI would otherwise validate and re-encode every answer through a model made from them."""
    import uuid

    import orjson
    from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
    from kserve.errors import ModelNotReady, ServerNotReady
    from kserve.protocol.infer_type import InferRequest
    from starlette.responses import Response

    from skiff.errors import NotFoundError

    def model_version(name: str, version: str | None = None) -> str:
        model = dataplane.get_model_from_registry(name)
        served = getattr(model, "version_label", "")
        if version is not None and version != served:
            raise NotFoundError(f"model {name!r} serves version {served or '?'} here, not {version}",
                                model=name, version=version, served=served)
        return served

    async def ready(model_name: str, model_version_: str | None = None) -> dict[str, Any]:
        version = model_version(model_name, model_version_)
        model: ServedModel = dataplane.get_model_from_registry(model_name)
        if not model.ready:
            raise ModelNotReady(model_name, getattr(model, "load_error", None) or "")
        return {"name": model_name, "ready": True, "version": version}

    async def ready_v(model_name: str, model_version_: str) -> dict[str, Any]:
        return await ready(model_name, model_version_)

    async def metadata_v(model_name: str, model_version_: str) -> dict[str, Any]:
        model_version(model_name, model_version_)
        meta: dict[str, Any] = await v2.model_metadata(model_name)
        return meta

    async def repository(model_name: str) -> NoReturn:
        # KServe's model repository extension loads and unloads models by request, without authentication:
        # one POST would take the served version down. A skiff server serves one registered version for
        # its life (a new version is a new server, rolled out), so these routes answer 404
        raise NotFoundError("this server does not load or unload models by request: it serves one registered "
                            "version; roll out a new version to change it", model=model_name)

    async def explain(model_name: str) -> NoReturn:
        served = model_version(model_name)  # an unknown model is a 404 naming it
        raise NotFoundError(f"model {model_name!r} (version {served or '?'}) has no explainer on this server: "
                            "skiff serves predictions (:predict, /infer)", model=model_name)

    async def infer(request: Request) -> Response:
        """V2 infer: KServe's data plane and model call, with a lean JSON adapter around them.

        KServe's own route validates the body into a pydantic model, converts it, and re-validates and
        re-encodes the answer through FastAPI's generic encoder: several tenths of a millisecond a request.
        Here the body is validated once (``InferenceRequest.model_validate_json``) and the answer goes out
        through orjson; binary-tensor requests take KServe's own decoder.
        """
        model_name = request.path_params["model_name"]
        version = request.path_params.get("model_version_")
        if version is not None:
            model_version(model_name, version)
        if not await dataplane.model_ready(model_name, True):
            raise ModelNotReady(model_name)
        headers = dict(request.headers)
        body = await request.body()
        if INFERENCE_CONTENT_LENGTH_HEADER in headers:
            infer_request, _ = dataplane.decode(body, headers, protocol_version="v2", model_name=model_name)
        else:
            infer_request = InferRequest.from_inference_request(dataplane.parse_v2_json(body), model_name)
        response, response_headers = await dataplane.infer(model_name=model_name, request=infer_request,
                                                           headers=headers)
        response, res_headers = dataplane.encode(model_name=model_name, response=response, headers=headers,
                                                 req_attributes={})
        response_headers.update(res_headers)
        for h in ("content-length", "content-type"):
            response_headers.pop(h, None)
        if isinstance(response, bytes):
            return Response(response, headers=response_headers, media_type="application/octet-stream")
        if isinstance(response, dict) and not response.get("id"):
            response["id"] = uuid.uuid4().hex
        return Response(orjson.dumps(response), headers=response_headers, media_type="application/json")

    async def server_ready() -> dict[str, bool]:
        if not await dataplane.ready():
            reasons = "; ".join(f"{n}: {r}" for n, r in dataplane.not_ready_reasons().items())
            raise ServerNotReady(reasons or None)
        return {"ready": True}

    api_routes: list[tuple[str, Callable[..., Awaitable[object]], str]] = [
        ("/v2/health/ready", server_ready, "GET"),
        ("/v1/models/{model_name}", ready, "GET"),
        ("/v2/models/{model_name}/ready", ready, "GET"),
        ("/v2/models/{model_name}/versions/{model_version_}/ready", ready_v, "GET"),
        ("/v2/models/{model_name}/versions/{model_version_}", metadata_v, "GET"),
        ("/v1/models/{model_name}:explain", explain, "POST"),
        ("/v2/repository/models/{model_name}/load", repository, "POST"),
        ("/v2/repository/models/{model_name}/unload", repository, "POST"),
    ]
    for path, endpoint, method in api_routes:
        app.add_api_route(path, endpoint, methods=[method], response_model=None)
    app.router.add_route("/v2/models/{model_name}/infer", infer, methods=["POST"])
    app.router.add_route("/v2/models/{model_name}/versions/{model_version_}/infer", infer, methods=["POST"])


def build_app(model_server: KServeModelServer, *, access_log: bool = False,
              max_body_bytes: int | None = None) -> FastAPI:
    """A FastAPI app with KServe's V1/V2 endpoints for ``model_server``'s models, plus skiff's additions."""
    from fastapi import FastAPI
    from kserve.protocol.rest.server import metrics_handler
    from kserve.protocol.rest.v1_endpoints import register_v1_endpoints
    from kserve.protocol.rest.v2_endpoints import V2Endpoints, register_v2_endpoints

    dataplane = model_server.dataplane
    ext = model_server.model_repository_extension
    app = FastAPI(title="skiff model server", docs_url=None, redoc_url=None, openapi_url=None)
    _add_skiff_routes(app, dataplane, V2Endpoints(dataplane, ext))
    from serving.runtime.recommender import add_event_routes

    add_event_routes(app, dataplane)  # a recommender's real-time events
    app.add_api_route("/", dataplane.live, methods=["GET"])
    app.add_api_route("/metrics", metrics_handler, methods=["GET"])
    register_v1_endpoints(app, dataplane, ext)
    register_v2_endpoints(app, dataplane, ext)
    _add_handlers(app)
    app.add_middleware(RequestMetricsMiddleware, registry=dataplane.model_registry)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes or _DEFAULT_MAX_BODY)
    if access_log:
        log.info("per-request access logging is on")
    return app


class GrpcServer(Protocol):
    """The part of a ``grpc.aio`` server the model server drives (grpc ships no types)."""

    def add_insecure_port(self, address: str) -> int: ...

    async def start(self) -> None: ...

    async def stop(self, grace: float | None) -> None: ...


def _loopback_grpc(host: str, port: int, model_server: KServeModelServer) -> GrpcServer:
    """KServe's gRPC server bound to ``host`` (KServe's own binds every interface)."""
    import grpc
    from grpc import aio
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
    from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
    from kserve.protocol.grpc.servicer import InferenceServicer

    class Servicer(InferenceServicer):  # type: ignore[misc]  # kserve ships no types: its servicer is Any here
        """KServe's servicer without the model repository extension (as on REST, see _add_skiff_routes)."""

        async def RepositoryModelLoad(self, request: Any, context: Any) -> None:  # noqa: N802 - gRPC's name
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this server does not load models by request")

        async def RepositoryModelUnload(self, request: Any, context: Any) -> None:  # noqa: N802 - gRPC's name
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this server does not unload models by request")

    server: GrpcServer = aio.server(interceptors=(LoggingInterceptor(), ExceptionToStatusInterceptor()))
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        Servicer(model_server.dataplane, model_server.model_repository_extension), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise UsageError(f"cannot bind gRPC to {host}:{port}")
    return server


def make_app(models: Sequence[ServedModel], *, access_log: bool = False,
             max_body_bytes: int | None = None) -> tuple[KServeModelServer, FastAPI]:
    """Register loaded models (ready or not) with a ``kserve.ModelServer``; return it and its ASGI app."""
    import_kserve()
    import warnings

    from fastapi.exceptions import FastAPIDeprecationWarning
    from kserve import ModelServer
    from kserve.predictor_config import PredictorConfig

    ms: KServeModelServer = ModelServer(http_port=0, grpc_port=0, enable_grpc=False, workers=1,
                     enable_latency_logging=access_log, enable_docs_url=False,
                     predictor_config=PredictorConfig(predictor_host=None))
    ms.dataplane = _dataplane_class()(model_registry=ms.registered_models)
    for m in models:
        m.enable_latency_logging = access_log
        ms.register_model(m)
        if not m.ready:
            log.error("model %s is not ready: %s (the server answers 503 until it is restarted)", m.name,
                      getattr(m, "load_error", None) or "not loaded")
    # KServe's endpoints answer with ORJSONResponse, which this FastAPI marks deprecated on every use
    warnings.filterwarnings("ignore", category=FastAPIDeprecationWarning)
    return ms, build_app(ms, access_log=access_log, max_body_bytes=max_body_bytes)


def serve_models(
    models: Sequence[ServedModel],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    grpc_port: int | None = None,
    access_log: bool = False,
    max_workers: int = 4,
    max_body_bytes: int | None = None,
    on_shutdown: Sequence[Callable[[], None]] = (),
) -> None:
    """Serve already loaded ``kserve.Model`` objects until SIGINT/SIGTERM (blocking). ``on_shutdown``
    runs (in a worker thread) once the server stopped taking requests, before the process ends: uvicorn
    re-raises the signal that stopped it as soon as it returns, so nothing after it would run."""
    import_kserve()
    import uvicorn

    ms, app = make_app(models, access_log=access_log, max_body_bytes=max_body_bytes)
    if not access_log:
        logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=access_log, lifespan="off",
                            timeout_keep_alive=65, loop="auto", http="auto")
    class _Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            await super().shutdown(sockets=sockets)
            for hook in on_shutdown:  # e.g. the inference log's writer: what is queued gets written
                await asyncio.to_thread(hook)

    server = _Server(config)

    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=max_workers))
        # everything loaded so far (libraries, the model, Feast's registry) lives as long as the server:
        # keep it out of the collector's full passes, which otherwise stall requests for milliseconds
        gc.collect()
        gc.freeze()
        grpc_server: GrpcServer | None = None
        if grpc_port:
            grpc_server = _loopback_grpc(host, grpc_port, ms)
            await grpc_server.start()
            log.info("gRPC (V2) on %s:%s", host, grpc_port)
        try:
            await server.serve()
        finally:
            if grpc_server is not None:
                await grpc_server.stop(grace=2)
            for m in models:
                closer = getattr(m, "aclose", None)
                if closer is not None:
                    await closer()

    log.info("serving %s on http://%s:%s", ", ".join(f"{m.name} v{getattr(m, 'version_label', '?')}"
                                                     for m in models), host, port)
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(main())


@dataclass(frozen=True)
class ServerOptions:
    """What :func:`run_server` serves and how: one registered version, alone or behind its Feast transformer."""

    name: str
    """Registered model name."""
    version: int | str | None = None
    """Version number, 'latest' or 'champion'; None: the champion, else the latest."""
    host: str = "127.0.0.1"
    """Address to bind; 0.0.0.0 exposes the server to the network."""
    port: int = 8080
    """HTTP port."""
    grpc_port: int | None = None
    """Also serve the V2 gRPC protocol on this port (same host); None: REST only."""
    engine: str = "auto"
    """auto: an exact ONNX export when the version has one, else scikit-learn; sklearn: always the pipeline."""
    access_log: bool = False
    """Log a line per request (off: no per-request log lines)."""
    with_features: bool = False
    """Serve a Feast transformer named after the model in front of the predictor: it takes entity keys (or a
    recommender's request, adding the users' recent items)."""
    predictor_host: str | None = None
    """With features: call the predictor at ``host:port`` over HTTP; None: in-process (``<name>-predictor``)."""
    feature_timeout_s: float = 2.0
    """With features: seconds a Feast online lookup may take."""
    feature_server_url: str | None = None
    """With features: read features from this Feast feature server; None: the online store in-process."""
    feature_service: str | None = None
    """With features: the feature service the version must have been trained on (checked at load)."""
    served_name: str | None = None
    """With features: the name requests use when it differs from the registered one (a KServe
    InferenceService's name)."""

    def __post_init__(self) -> None:
        if self.predictor_host and not self.with_features:
            raise UsageError("--predictor-host is for the feature transformer: add --with-features")


def run_server(options: ServerOptions, *, settings: Settings | None = None) -> None:
    """Load the version ``options`` name and serve it until SIGINT/SIGTERM (blocking).

    With features a Feast transformer named after the model (or ``served_name``) takes entity keys (a
    recommender's request for a recommender version); it
    calls the predictor in-process (registered as ``<name>-predictor``) or, with ``predictor_host``, over
    HTTP (the predictor there being ``name``).
    """
    import_kserve()
    from serving.runtime.predictor import SkiffPredictor

    settings = settings or load_settings()
    o = options
    models: list[ServedModel] = []
    if o.with_features:
        from serving.runtime.transformer import FeastTransformer, TransformerOptions

        predictor = None
        if not o.predictor_host:
            predictor = SkiffPredictor(f"{o.name}{PREDICTOR_SUFFIX}", model_name=o.name, version=o.version,
                                       settings=settings, engine=o.engine)
            predictor.load()
            models.append(predictor)
        transformer = FeastTransformer(
            o.served_name or o.name,
            TransformerOptions(model_name=o.name, version=o.version, predictor_host=o.predictor_host,
                               timeout_s=o.feature_timeout_s, feature_server_url=o.feature_server_url,
                               feature_service=o.feature_service),
            settings=settings, predictor=predictor)
        transformer.load()
        models.insert(0, transformer)
    else:
        predictor = SkiffPredictor(o.name, version=o.version, settings=settings, engine=o.engine)
        predictor.load()
        models.append(predictor)
    writer = _inference_log(models[0], predictor, settings)
    def close_log() -> None:  # graceful shutdown: what is queued is written before the process ends
        if writer is not None and not writer.closed:
            writer.close()
            log.info("inference log closed: %s", writer.counters.snapshot())

    try:
        serve_models(models, host=o.host, port=o.port, grpc_port=o.grpc_port, access_log=o.access_log,
                     max_workers=max(4, settings.max_threads + 2), max_body_bytes=settings.serve_max_body_bytes,
                     on_shutdown=[close_log])
    finally:
        close_log()


def _inference_log(entry: ServedModel, predictor: Any, settings: Settings) -> Any:
    """The inference-log writer of the model requests enter by (serving.runtime.request_log), its counters
    on ``/metrics``; None when the version is not sampled, not loaded, or scored by a remote predictor."""
    from serving.runtime.request_log import build_writer, export_metrics

    meta = getattr(predictor, "metadata", None)
    if predictor is None or meta is None or not hasattr(entry, "request_log"):
        return None
    writer = build_writer(settings, [meta])
    if writer is None:
        return None
    entry.request_log = writer
    export_metrics(writer)
    log.info("inference log of %s: a share of %s of requests, to %s", meta.name,
             writer.models[meta.name].sample_rate, writer.store.root)
    return writer


# -- subprocess helpers ------------------------------------------------------------------------------
def _get(url: str, timeout: float = 1.0) -> httpx.Response | None:
    import httpx

    try:
        return httpx.get(url, timeout=timeout)
    except httpx.HTTPError:
        return None


def start_local_server(
    name: str,
    version: int | str | None,
    port: int,
    *,
    root: str | Path,
    with_features: bool = False,
    extra_env: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    engine: str = "auto",
    access_log: bool = False,
    predictor_host: str | None = None,
    grpc_port: int | None = None,
    timeout_s: float = 90.0,
    require_ready: bool = True,
    log_path: str | Path | None = None,
) -> subprocess.Popen[bytes]:
    """Run ``python -m serving predictor NAME --root ROOT ...`` (``transformer --model NAME`` with features)
    and wait until ``/v2/health/ready`` answers 200.

    The server's output goes to ``log_path`` (default a temporary file), kept on the returned process as
    ``proc.log_path``. Numeric libraries are capped to one thread unless ``extra_env`` says otherwise.
    With ``require_ready=False`` it returns once the server is live, ready or not (a model that failed
    to load). Raises :class:`~skiff.errors.SkiffError` with the log's tail when the server exits or
    does not become ready in ``timeout_s``.
    """
    root = str(root) if "://" in str(root) else str(Path(root).resolve())
    # the containers' entry point (serving.runtime.entrypoint), not skiff's CLI
    if with_features:
        args = [sys.executable, "-m", "serving", "transformer", "--model", name]
        if predictor_host:
            args += ["--predictor_host", predictor_host]
    elif predictor_host:
        raise UsageError("predictor_host is for the feature transformer: add with_features")
    else:
        args = [sys.executable, "-m", "serving", "predictor", name]
    args += ["--root", root, "--port", str(port), "--host", host, "--engine", engine]
    if version is not None:
        args += ["--version", str(version)]
    if access_log:
        args.append("--access-log")
    if grpc_port:
        args += ["--grpc-port", str(grpc_port)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           **(extra_env or {})}
    if log_path is None:
        fd, tmp = tempfile.mkstemp(prefix=f"skiff-serve-{name}-{port}-", suffix=".log")
        os.close(fd)
        log_path = tmp
    log_path = Path(log_path)
    out = open(log_path, "wb")  # noqa: SIM115 - the child writes to it for its whole life
    try:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=str(Path(__file__).resolve().parents[2]), start_new_session=True)
    finally:
        out.close()
    proc.log_path = log_path  # type: ignore[attr-defined]
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SkiffError(f"model server for {name} exited with code {proc.returncode}: {_tail(log_path)}",
                             log=str(log_path))
        r = _get(f"{base}/v2/health/ready")
        if r is not None:
            if r.status_code == 200 or not require_ready:
                return proc
            if r.status_code == 503:  # listening only after loading: a model failed to load; say why now
                stop_local_server(proc)
                raise SkiffError(f"model server for {name} is not ready: {r.text}", log=str(log_path))
        time.sleep(0.2)
    stop_local_server(proc)
    raise SkiffError(f"model server for {name} not ready after {timeout_s:.0f}s: {_tail(log_path)}",
                     log=str(log_path))


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_local_server(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> int | None:
    """Stop a server started by :func:`start_local_server` (SIGTERM, then SIGKILL); return its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)
    return proc.returncode
