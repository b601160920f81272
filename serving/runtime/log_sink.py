"""The inference-log sink: KServe's own logger (``spec.predictor.logger``) sends CloudEvents here, and the
sink writes the same Parquet partitions the model server writes in-process (:mod:`skiff.inference_log`).

KServe's logger (its agent, beside the predictor) sends one event per request
(``type: org.kubeflow.serving.inference.request``, the request body as data) and one per answered request
(``org.kubeflow.serving.inference.response``, only for a 200, the answer as data), both with the same
``id`` — the request's ``Ce-Id`` header, else a new UUID — and the extensions ``inferenceservicename``,
``namespace``, ``component``, ``endpoint`` (default or canary) and ``metadata`` (the headers named in
``logger.metadataHeaders``, JSON). Both CloudEvents HTTP content modes are accepted: binary (``ce-*``
headers, the body is the data) and structured (``application/cloudevents+json``), and batches
(``application/cloudevents-batch+json``).

How events become rows:

- the InferenceService name is mapped to the registered model whose :func:`~serving.deploy.isvc.isvc_name`
  it is; the version comes from the answer's ``model_version`` (skiff's predictor always names it) or, for
  a request without an answer, the ``skiff.io/served-version`` annotation passed in the ``annotations``
  extension;
- request and response are paired by the event ``id``; a pair becomes the request's rows: the inputs
  parsed from the request with the version's input schema (:mod:`serving.runtime.inputs`, the predictor's
  own parser, so both paths log the same values), the labels and probabilities from the answer, status
  200. The request id written is the V2 body's ``id``, else the ``X-Request-Id`` metadata header, else
  the event id;
- a half that finds no partner within ``pair_timeout_s`` is written alone: a request without an answer
  (the predictor refused it: KServe logs no answer for a non-200) with status null and the error
  ``no response logged``, an answer without its request (``mode: response``) with empty inputs;
- sampling is decided once per request id, at its first event (``Settings.inference_log_sample_rate``,
  per model ``inference_log_sample_rates``), so the writer's counters count requests, not events.

A malformed event is a 4xx with a JSON reason (400: missing or wrong attributes, data that is not JSON,
an unknown InferenceService; 413: a body over ``serve_max_body_bytes``; 415: a content type that is no
CloudEvent), counted in ``skiff_log_sink_events_total{outcome}`` on ``/metrics`` beside the writer's
counters. On shutdown the pending halves are written and the writer flushed.

Run: ``python -m serving log-sink [--host 0.0.0.0] [--port 8080]``; settings from ``SKIFF_*`` variables
(the root, the sampling rates, ``SKIFF_INFERENCE_LOG_KEY`` for hashed columns).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from skiff.config import Settings, load_settings
from skiff.errors import NotFoundError, SkiffError, UsageError
from skiff.inference_log import (
    InferenceLogWriter,
    ModelLog,
    hash_key_from_env,
    log_store,
    model_log_for_version,
)
from skiff.registry import ModelRegistry, VersionMetadata

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from serving.runtime.inputs import InputSchema

__all__ = ["LogSink", "SinkEvent", "parse_event", "parse_events", "make_sink_app", "main", "REQUEST_TYPE",
           "RESPONSE_TYPE", "VERSION_ANNOTATION"]

log = logging.getLogger(__name__)

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
#: the InferenceService annotation naming the served version (passed to the logger's events)
VERSION_ANNOTATION = "skiff.io/served-version"
_REQUIRED = ("id", "source", "specversion", "type")
_NO_RESPONSE = "no response logged"


class BadEvent(UsageError):
    """A CloudEvent the sink cannot take (HTTP 400)."""

    http_status = 400


@dataclass(frozen=True)
class SinkEvent:
    """One KServe logger event: its attributes and its data (parsed JSON)."""

    id: str
    type: str
    service: str
    data: Any
    time: dt.datetime
    metadata: Mapping[str, Any] = field(default_factory=dict)
    annotations: Mapping[str, Any] = field(default_factory=dict)


def _json_ext(value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    if isinstance(value, str) and value:
        try:
            loaded = json.loads(value)
        except ValueError:
            return {}
        return loaded if isinstance(loaded, Mapping) else {}
    return {}


def _when(value: Any) -> dt.datetime:
    if isinstance(value, str) and value:
        try:
            t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return t if t.tzinfo else t.replace(tzinfo=dt.UTC)
        except ValueError:
            pass
    return dt.datetime.now(dt.UTC)


def _event(attrs: Mapping[str, Any], data: Any) -> SinkEvent:
    missing = [a for a in _REQUIRED if not attrs.get(a)]
    if missing:
        raise BadEvent(f"CloudEvent attribute(s) missing: {', '.join(missing)}", missing=missing)
    if str(attrs["specversion"]) != "1.0":
        raise BadEvent(f"CloudEvents specversion {attrs['specversion']!r} is not served (1.0 is)")
    etype = str(attrs["type"])
    if etype not in (REQUEST_TYPE, RESPONSE_TYPE):
        raise BadEvent(f"event type {etype!r} is not an inference request or response", type=etype)
    service = attrs.get("inferenceservicename")
    if not service or not isinstance(service, str):
        raise BadEvent("CloudEvent extension inferenceservicename missing: the event names no InferenceService")
    if not isinstance(data, dict):
        raise BadEvent("the event's data must be a JSON object (a V1 or V2 request or answer)")
    return SinkEvent(str(attrs["id"])[:200], etype, service, data, _when(attrs.get("time")),
                     _json_ext(attrs.get("metadata")), _json_ext(attrs.get("annotations")))


def _json_data(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise BadEvent(f"the event's data is not JSON: {e}") from None


def _structured(doc: Any) -> SinkEvent:
    if not isinstance(doc, dict):
        raise BadEvent("a structured CloudEvent must be a JSON object")
    if "data_base64" in doc:
        try:
            data = _json_data(base64.b64decode(doc["data_base64"], validate=True))
        except (ValueError, TypeError) as e:
            raise BadEvent(f"data_base64 is not base64 JSON: {e}") from None
    else:
        data = doc.get("data")
        if isinstance(data, str):
            data = _json_data(data.encode())
    return _event(doc, data)


def parse_events(headers: Mapping[str, str], body: bytes) -> list[SinkEvent]:
    """The events of one HTTP request in any CloudEvents content mode (headers lower-cased)."""
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/cloudevents+json":
        return [_structured(_json_data(body))]
    if ctype == "application/cloudevents-batch+json":
        docs = _json_data(body)
        if not isinstance(docs, list):
            raise BadEvent("a CloudEvents batch must be a JSON array")
        return [_structured(d) for d in docs]
    if "ce-id" in headers or "ce-type" in headers or "ce-specversion" in headers:
        if ctype and not (ctype == "application/json" or ctype.endswith("+json")):
            raise BadEvent(f"the event's data must be JSON, not {ctype}")
        attrs = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
        return [_event(attrs, _json_data(body))]
    raise BadEvent("not a CloudEvent: no ce-* headers (binary mode) and no CloudEvents content type "
                   "(structured mode)", unsupported=True)


def parse_event(headers: Mapping[str, str], body: bytes) -> SinkEvent:
    """The single event of a binary- or structured-mode request."""
    events = parse_events(headers, body)
    if len(events) != 1:
        raise BadEvent(f"expected one event, got {len(events)}")
    return events[0]


@dataclass
class _Half:
    event: SinkEvent
    arrived: float
    model: str
    sampled: bool


@dataclass
class _Served:
    meta: VersionMetadata
    schema: InputSchema | None


class LogSink:
    """Pairs request and response events and writes them through one :class:`InferenceLogWriter`.

    ``writer`` is made from ``settings`` (every registered model, at its sampling rate) unless given."""

    def __init__(self, settings: Settings, *, registry: ModelRegistry | None = None,
                 writer: InferenceLogWriter | None = None, pair_timeout_s: float = 30.0,
                 max_pending: int = 10_000) -> None:
        from serving.runtime.request_log import sample_rate

        self.settings = settings
        self.registry = registry or ModelRegistry.from_settings(settings)
        self.pair_timeout_s = pair_timeout_s
        self.max_pending = max_pending
        self._services: dict[str, str] = {}
        self._versions: dict[tuple[str, int], _Served] = {}
        self._pending: OrderedDict[str, _Half] = OrderedDict()
        self._skipped: OrderedDict[str, None] = OrderedDict()  # ids not sampled: their other half is ignored
        self._lock = threading.Lock()
        self.events: dict[str, int] = {"accepted": 0, "malformed": 0, "unknown_service": 0, "paired": 0,
                                       "unpaired": 0, "unsampled": 0}
        if writer is None:
            logs = []
            for name in self.registry.models():
                rate = sample_rate(settings, name)
                if rate > 0:
                    latest = self.registry.get(name, "latest").metadata
                    logs.append(self._model_log(latest, rate))
            writer = InferenceLogWriter(log_store(settings), logs, hash_key=hash_key_from_env(),
                                        queue_size=settings.inference_log_queue_size)
        self.writer = writer

    @staticmethod
    def _model_log(meta: VersionMetadata, rate: float) -> ModelLog:
        if meta.flavor in ("tensorflow", "recommender") or not meta.input_schema:
            return ModelLog(meta.name, {}, sample_rate=rate)
        return model_log_for_version(meta, sample_rate=rate)

    # -- resolution ------------------------------------------------------------------------------------
    def model_of(self, service: str) -> str:
        """The registered model an InferenceService serves (NotFoundError when none)."""
        if service not in self._services:
            for name in self.registry.models():
                # serving.deploy.isvc.isvc_name's rule (the runtime imports no deployment module)
                self._services.setdefault(name.lower().replace("_", "-"), name)
        model = self._services.get(service)
        if model is None or model not in self.writer.models:
            raise NotFoundError(f"InferenceService {service!r} serves no model this sink logs",
                                inferenceservice=service)
        return model

    def _served(self, model: str, version: int) -> _Served:
        key = (model, version)
        if key not in self._versions:
            from serving.runtime.inputs import InputSchema

            meta = self.registry.get(model, version).metadata
            schema = (InputSchema.build(meta.features, meta.input_schema, meta.input_rules)
                      if meta.input_schema and meta.flavor not in ("tensorflow", "recommender") else None)
            self._versions[key] = _Served(meta, schema)
        return self._versions[key]

    # -- events ----------------------------------------------------------------------------------------
    def accept(self, event: SinkEvent) -> None:
        """Take one event: pair it, or keep it until its partner comes (or the pair timeout)."""
        model = self.model_of(event.service)
        ready: list[tuple[_Half | None, _Half | None]] = []
        with self._lock:
            self.events["accepted"] += 1
            if event.id in self._skipped:
                self._skipped.pop(event.id)
                return
            other = self._pending.pop(event.id, None)
            if other is not None and other.event.type != event.type:
                self.events["paired"] += 1
                half = _Half(event, time.monotonic(), model, other.sampled)
                ready.append((other, half) if other.event.type == REQUEST_TYPE else (half, other))
            else:
                if other is not None:  # the same half twice (a retry): the newer one stands
                    sampled = other.sampled
                else:
                    chosen = self.writer.sampled(model)
                    sampled = bool(chosen)
                    if not sampled:
                        self.events["unsampled"] += 1
                        self._skipped[event.id] = None
                        while len(self._skipped) > self.max_pending:
                            self._skipped.popitem(last=False)
                        return
                self._pending[event.id] = _Half(event, time.monotonic(), model, sampled)
                while len(self._pending) > self.max_pending:  # the oldest goes out alone
                    _, old = self._pending.popitem(last=False)
                    ready.append(self._alone(old))
        for request, response in ready:
            self._write(request, response)

    def _alone(self, half: _Half) -> tuple[_Half | None, _Half | None]:
        self.events["unpaired"] += 1
        return (half, None) if half.event.type == REQUEST_TYPE else (None, half)

    def expire(self, now: float | None = None, *, everything: bool = False) -> int:
        """Write the halves that waited longer than the pair timeout (all of them with ``everything``)."""
        now = time.monotonic() if now is None else now
        out = []
        with self._lock:
            while self._pending:
                eid, half = next(iter(self._pending.items()))
                if not everything and now - half.arrived < self.pair_timeout_s:
                    break
                self._pending.pop(eid)
                out.append(self._alone(half))
        for request, response in out:
            self._write(request, response)
        return len(out)

    def _version(self, request: _Half | None, response: _Half | None) -> int | None:
        if response is not None:
            v = response.event.data.get("model_version")
            if isinstance(v, str | int) and str(v).isdigit():
                return int(v)
        for half in (request, response):
            if half is not None:
                v = half.event.annotations.get(VERSION_ANNOTATION)
                if isinstance(v, str | int) and str(v).isdigit():
                    return int(v)
        return None

    def _write(self, request: _Half | None, response: _Half | None) -> None:
        from serving.runtime.inputs import parse_v1, parse_v2

        first = request or response
        assert first is not None
        model = first.model
        version = self._version(request, response)
        if version is None:
            log.warning("log sink: %s event %s names no version (no answer, no %s annotation); not written",
                        first.event.service, first.event.id, VERSION_ANNOTATION)
            self.writer.counters.add(model, "dropped")
            return
        try:
            served = self._served(model, version)
        except SkiffError as e:
            log.warning("log sink: %s version %s: %s; not written", model, version, e.message)
            self.writer.counters.add(model, "dropped")
            return
        rid = _request_id(request, response)
        columns: Mapping[str, Any] | None = None
        n = 0
        error = None if response is not None else _NO_RESPONSE
        if request is not None and served.schema is not None:
            body = request.event.data
            try:
                if "inputs" in body:
                    batch = parse_v2(_infer_request(body, model), served.schema)
                else:
                    batch = parse_v1(body, served.schema)
                columns, n = batch.columns, batch.n
            except Exception as e:  # the predictor refused it too: the row says why, without values
                field_name = getattr(e, "field", None)
                error = f"{type(e).__name__}: field {field_name!r}" if field_name else type(e).__name__
        preds: list[Any] = []
        probs: list[float | None] | None = None
        if response is not None:
            preds, probs = _answers(response.event.data, served.meta)
            if columns is None:
                n = len(preds)
        self.writer.offer(model, version, rid, columns=columns if columns is not None else {}, n=n,
                          predictions=preds, probabilities=probs, status=200 if response is not None else None,
                          error=error, decided=True, when=first.event.time,
                          latency_ms=None)


def _request_id(request: _Half | None, response: _Half | None) -> str:
    for half in (request, response):
        if half is not None:
            rid = half.event.data.get("id")
            if isinstance(rid, str) and rid:
                return rid[:200]
    for half in (request, response):
        if half is not None:
            for k, v in half.event.metadata.items():
                if k.lower() == "x-request-id":
                    value = v[0] if isinstance(v, list) and v else v
                    if isinstance(value, str) and value:
                        return value[:200]
    first = request or response
    assert first is not None
    return first.event.id


def _infer_request(body: dict[str, Any], model: str) -> Any:
    from kserve.protocol.infer_type import InferRequest
    from kserve.protocol.rest.v2_datamodels import InferenceRequest
    from pydantic import ValidationError

    try:
        return InferRequest.from_inference_request(InferenceRequest.model_validate(body), model)
    except ValidationError as e:
        raise BadEvent(f"the logged V2 request is malformed: {e.errors()[0].get('msg')}") from None


def _answers(body: dict[str, Any], meta: VersionMetadata) -> tuple[list[Any], list[float | None] | None]:
    """Labels (or values) and probabilities from skiff's V1 or V2 answer, as the server logs them."""
    if "predictions" in body:
        preds = body.get("predictions") or []
        labels: list[Any] = []
        probs: list[float | None] = []
        for p in preds:
            if isinstance(p, dict):
                labels.append(p.get("label"))
                if "probability" in p:
                    probs.append(p.get("probability"))
                elif isinstance(p.get("probabilities"), dict) and p.get("label") is not None:
                    probs.append(p["probabilities"].get(str(p["label"])))
                else:
                    probs.append(p.get("score"))
            else:
                labels.append(p)
                probs.append(None)
        return labels, (None if all(p is None for p in probs) else probs)
    outputs = {o.get("name"): o for o in body.get("outputs") or [] if isinstance(o, dict)}
    if "value" in outputs:
        return list(outputs["value"].get("data") or []), None
    label = outputs.get("label")
    if label is None:
        return [], None
    labels = list(label.get("data") or [])
    if "probability" in outputs:
        return labels, list(outputs["probability"].get("data") or [])
    if "probabilities" in outputs:
        o = outputs["probabilities"]
        flat = list(o.get("data") or [])
        try:
            classes = [str(c) for c in json.loads((o.get("parameters") or {}).get("classes", "[]"))]
        except ValueError:
            classes = []
        k = len(classes) or (len(flat) // max(1, len(labels)))
        out: list[float | None] = []
        for i, lab in enumerate(labels):
            row = flat[i * k:(i + 1) * k]
            j = classes.index(str(lab)) if str(lab) in classes else None
            out.append(row[j] if j is not None and j < len(row) else (max(row) if row else None))
        return labels, out
    if "top_k_scores" in outputs:
        flat = list(outputs["top_k_scores"].get("data") or [])
        k = len(flat) // max(1, len(labels))
        return labels, [flat[i * k] for i in range(len(labels))] if k else None
    return labels, None


# -- the HTTP face -------------------------------------------------------------------------------------
def make_sink_app(sink: LogSink, *, max_body_bytes: int | None = None, expire_every_s: float = 1.0) -> Starlette:
    """The sink's ASGI app: ``POST /`` takes events; ``GET /healthz``; ``GET /metrics``."""
    from contextlib import asynccontextmanager

    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from serving.runtime.request_log import export_metrics

    limit = max_body_bytes or sink.settings.serve_max_body_bytes

    def reason(status: int, error: str, message: str, **detail: Any) -> JSONResponse:
        body: dict[str, Any] = {"error": error, "message": message}
        if detail:
            body["detail"] = detail
        return JSONResponse(body, status_code=status)

    async def receive(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return reason(413, "PayloadTooLarge", f"event over the sink's limit of {limit} bytes")
        body = await request.body()
        if len(body) > limit:
            return reason(413, "PayloadTooLarge", f"event over the sink's limit of {limit} bytes")
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            events = parse_events(headers, body)
            for event in events:
                sink.accept(event)
        except BadEvent as e:
            sink.events["malformed"] += 1
            status = 415 if e.detail.get("unsupported") else 400
            return reason(status, "BadEvent", e.message)
        except NotFoundError as e:
            sink.events["unknown_service"] += 1
            return reason(400, "UnknownInferenceService", e.message, **e.detail)
        return JSONResponse({"accepted": len(events)}, status_code=202)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": not sink.writer.closed})

    class _Events:
        def collect(self) -> Any:
            family = CounterMetricFamily("skiff_log_sink_events", "CloudEvents taken by the log sink, by outcome",
                                         labels=["outcome"])
            for outcome, n in sorted(sink.events.items()):
                family.add_metric([outcome], n)
            yield family

    events_registry = CollectorRegistry()
    events_registry.register(_Events())

    async def metrics(request: Request) -> Response:
        from starlette.responses import Response as Plain

        return Plain(generate_latest(REGISTRY) + generate_latest(events_registry),
                     media_type="text/plain; version=0.0.4")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        export_metrics(sink.writer)

        async def expire() -> None:
            while True:
                await asyncio.sleep(expire_every_s)
                await asyncio.to_thread(sink.expire)

        task = asyncio.create_task(expire())
        try:
            yield
        finally:
            task.cancel()
            sink.expire(everything=True)  # graceful shutdown: what waits for a partner is written alone
            sink.writer.close()

    return Starlette(routes=[Route("/", receive, methods=["POST"]), Route("/healthz", healthz, methods=["GET"]),
                             Route("/metrics", metrics, methods=["GET"])], lifespan=lifespan)


def main(argv: list[str] | None = None) -> int:
    """``python -m serving log-sink``: serve the sink until SIGINT/SIGTERM."""
    import argparse

    import uvicorn

    ap = argparse.ArgumentParser(prog="python -m serving log-sink", description="skiff's inference-log sink "
                                 "for KServe's logger (CloudEvents in, the inference log's Parquet out).")
    ap.add_argument("--host", default="0.0.0.0", help="Address to bind (default 0.0.0.0: in a pod).")  # noqa: S104
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--root", default=None, help="Root URI (default: settings).")
    ap.add_argument("--pair-timeout", type=float, default=30.0, help="Seconds a half waits for its partner.")
    args = ap.parse_args(argv)
    try:
        settings = load_settings(root=args.root)
        logging.basicConfig(level=getattr(logging, settings.log_level.upper(), logging.INFO),
                            format="%(levelname)s %(name)s: %(message)s")
        sink = LogSink(settings, pair_timeout_s=args.pair_timeout)
        log.info("log sink for %s on %s:%s", sorted(sink.writer.models) or "no model (no sampling rate set)",
                 args.host, args.port)
        uvicorn.run(make_sink_app(sink), host=args.host, port=args.port, log_config=None, access_log=False)
    except SkiffError as e:
        print(f"log-sink: error: {e.message}", flush=True)
        return e.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
