"""The model server's side of the inference log (:mod:`skiff.inference_log`): which requests it records, how.

:class:`RequestLogged` is mixed into the predictor and the feature transformer. When the server gave a
model a writer (:attr:`RequestLogged.request_log`), each request to it is:

1. sampled first (``Settings.inference_log_sample_rates[model]``, else ``inference_log_sample_rate``; 0,
   the default, logs nothing and the server makes no writer at all) — an unsampled request costs one
   random draw;
2. answered as usual; the model's ``predict`` leaves the checked rows and their scores in a context
   variable of the request's task (:func:`remember`), so nothing is parsed twice;
3. offered to the writer with the version, the latency (the model call: pre-processing, prediction,
   post-processing, in milliseconds), the request id (the V2 answer's ``id``, which is the request's
   ``id`` when it has one; for V1 the ``X-Request-Id`` header, else the ``Ce-Id`` header KServe's
   logger sets, else a new id), the HTTP status and, for a refused request, the error's class and the
   field it names (never the message: it may quote a value of a personal-data column). The labels and
   probabilities are computed from the scores on the writer thread.

The writer's queue is bounded: when it is full the request is dropped and counted, never waited for.
Image classifiers log metadata only — one row per image with the top label and its score, no pixels.
With an in-process predictor the transformer logs (its requests are the model's); a transformer calling
its predictor over HTTP leaves logging to the predictor's server.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from skiff.errors import SkiffError
from skiff.inference_log import (
    InferenceLogWriter,
    LogCounters,
    ModelLog,
    hash_key_from_env,
    log_store,
    model_log_for_version,
)

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from serving.runtime.inputs import RequestRows
    from serving.runtime.predictor import Scores, SkiffPredictor
    from skiff.config import Settings
    from skiff.registry import VersionMetadata

__all__ = ["RequestLogged", "remember", "sample_rate", "build_writer", "request_id", "Scored", "export_metrics"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    """What a model's ``predict`` computed for one request: the checked rows, their scores and the
    predictor that turns scores into labels."""

    batch: RequestRows
    scores: Scores
    predictor: SkiffPredictor


_SCORED: contextvars.ContextVar[Scored | None] = contextvars.ContextVar("skiff_scored", default=None)


def remember(batch: RequestRows, scores: Scores, predictor: SkiffPredictor) -> None:
    """Record a request's rows and scores for the inference log (a context variable: per request task)."""
    _SCORED.set(Scored(batch, scores, predictor))


def sample_rate(settings: Settings, model: str) -> float:
    """The sampling rate of ``model``: its own, else the server's default."""
    return float(settings.inference_log_sample_rates.get(model, settings.inference_log_sample_rate))


#: flavors whose requests are not feature rows (images, user ids): logged as metadata and the top label
_METADATA_ONLY = frozenset({"tensorflow", "recommender"})


def build_writer(settings: Settings, versions: Sequence[VersionMetadata]) -> InferenceLogWriter | None:
    """The writer of the served versions' logs, or None when none of them samples anything."""
    models: dict[str, ModelLog] = {}
    for meta in versions:
        rate = sample_rate(settings, meta.name)
        if rate <= 0 or meta.name in models:
            continue
        if meta.flavor in _METADATA_ONLY or not meta.input_schema:  # no rows: metadata and the top label
            models[meta.name] = ModelLog(meta.name, {}, sample_rate=rate, prediction_type="string")
        else:
            models[meta.name] = model_log_for_version(meta, sample_rate=rate)
    if not models:
        return None
    return InferenceLogWriter(log_store(settings), list(models.values()), hash_key=hash_key_from_env(),
                              queue_size=settings.inference_log_queue_size)


_EXPORTED: list[InferenceLogWriter] = []
_export_lock = threading.Lock()
_REGISTERED: list[bool] = []


def export_metrics(writer: InferenceLogWriter) -> None:
    """Put ``writer``'s counters on the process's Prometheus registry (``/metrics``): one collector for
    every open writer of the process, ``skiff_inference_log_<counter>_total{model}`` and
    ``skiff_inference_log_pending{model}``; a closed writer's series leave with it."""
    from prometheus_client import REGISTRY

    with _export_lock:
        _EXPORTED[:] = [w for w in _EXPORTED if not w.closed] + [writer]
        register = not _REGISTERED
        _REGISTERED.append(True)
    if register:  # outside the lock: registering collects once
        REGISTRY.register(_Merged())


class _Merged:
    """The counters of every open writer as one set of metric families (prometheus_client's Collector)."""

    def collect(self) -> Iterator[Metric]:
        merged = LogCounters()
        with _export_lock:
            writers = [w for w in _EXPORTED if not w.closed]
        for w in writers:
            for model, values in w.counters.snapshot().items():
                for name in LogCounters.FIELDS:
                    merged.add(model, name, values[name])
        yield from merged.collector().collect()


def request_id(body: Any, headers: Mapping[str, str] | None, response: Any = None) -> str:
    """The id a request is logged under: the V2 answer's (or request's) ``id``, else ``X-Request-Id``,
    else ``Ce-Id``, else a new one."""
    for obj in (response, body):
        rid = getattr(obj, "id", None)
        if isinstance(rid, str) and rid:
            return rid
    if isinstance(headers, Mapping):  # REST headers (gRPC metadata may come as pairs: then only the body's id)
        for h in ("x-request-id", "ce-id"):
            v = headers.get(h)
            if v:
                return str(v)[:200]
    return uuid.uuid4().hex


def _status(e: BaseException) -> int:
    from kserve.errors import InvalidInput, ModelNotReady

    if isinstance(e, SkiffError):
        return int(e.http_status)
    if isinstance(e, InvalidInput):
        return 400
    if isinstance(e, ModelNotReady):
        return 503
    return 500


def _error_text(e: BaseException) -> str:
    field = getattr(e, "field", None) or (getattr(e, "detail", None) or {}).get("field")
    return f"{type(e).__name__}: field {field!r}" if field else type(e).__name__


def _image_outputs(response: Any) -> tuple[int, Callable[[], tuple[Sequence[Any], Sequence[float | None] | None]]]:
    """Rows and (lazy) top labels and scores of an image classifier's V1 or V2 answer."""
    if isinstance(response, dict):
        preds = [p if isinstance(p, dict) else {} for p in response.get("predictions") or []]
        return len(preds), lambda: ([p.get("label") for p in preds], [_number(p.get("score")) for p in preds])
    outputs = {o.name: o for o in (getattr(response, "outputs", None) or [])}
    label, scores = outputs.get("label"), outputs.get("top_k_scores")
    if label is None:
        return 0, lambda: ((), None)
    n = int(label.shape[0])

    def read() -> tuple[Sequence[Any], Sequence[float | None] | None]:
        labels = [lab.decode() if isinstance(lab, bytes) else lab for lab in label.data]
        top = None
        if scores is not None and n:
            flat = list(scores.data)
            k = len(flat) // n
            top = [flat[i * k] for i in range(n)] if k else None
        return labels, top

    return n, read


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


class RequestLogged:
    """Mixed into a served ``kserve.Model``: its requests go to :attr:`request_log` (None: not logged).

    The class names the model and version the log is written under with :meth:`log_identity`."""

    request_log: InferenceLogWriter | None = None

    def log_identity(self) -> tuple[str, int | None]:
        return str(getattr(self, "model_name", "")), getattr(self, "version", None)

    async def __call__(self, body: Any, headers: dict[str, str] | None = None, *args: Any, **kwargs: Any) -> Any:
        call = super().__call__  # type: ignore[misc]  # kserve.Model.__call__ (kserve ships no types)
        writer = self.request_log
        if writer is None:
            return await call(body, headers, *args, **kwargs)
        model, version = self.log_identity()
        if version is None or not writer.sampled(model):
            return await call(body, headers, *args, **kwargs)
        _SCORED.set(None)
        start = time.perf_counter()
        try:
            response = await call(body, headers, *args, **kwargs)
        except Exception as e:
            scored = _SCORED.get()
            writer.offer(model, version, request_id(body, headers), latency_ms=(time.perf_counter() - start) * 1e3,
                         status=_status(e), error=_error_text(e), decided=True,
                         columns=scored.batch.columns if scored else None, n=scored.batch.n if scored else None)
            raise
        latency = (time.perf_counter() - start) * 1e3
        answer = response[0] if isinstance(response, tuple) else response  # KServe: (answer, headers)
        rid = request_id(body, headers, answer)
        scored = _SCORED.get()
        if scored is not None:
            writer.offer(model, version, rid, latency_ms=latency, decided=True, columns=scored.batch.columns,
                         n=scored.batch.n, outputs=_tabular_outputs(scored))
        else:  # an image classifier (or a model that left nothing): metadata and what the answer says
            n, outputs = _image_outputs(answer)
            writer.offer(model, version, rid, latency_ms=latency, decided=True, columns={}, n=n, outputs=outputs)
        return response


def _tabular_outputs(scored: Scored) -> Callable[[], tuple[Sequence[Any], Sequence[float | None] | None]]:
    def read() -> tuple[Sequence[Any], Sequence[float | None] | None]:
        p, s = scored.predictor, scored.scores
        if p.problem == "regression":
            return s.regression_values().tolist(), None
        labels = p._labels(s)
        proba = s.probabilities()
        if p.problem == "binary":
            return labels, proba[:, 1].tolist()
        return labels, proba.max(axis=1).tolist()  # multiclass: the predicted label's probability

    return read
