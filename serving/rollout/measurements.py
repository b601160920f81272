"""What a rollout measures: both sides of a canary over a step's window.

Each side (stable, canary) gets its request count, its 5xx answers, its p99 latency from the request
duration histogram and, where delayed labels are fed back, a quality metric. A :class:`MetricsSource`
measures them:

* :class:`PrometheusMetricsSource` asks a Prometheus HTTP API (``/api/v1/query``) with the PromQL below
  (the cluster);
* :class:`ScrapeMetricsSource` scrapes the two local model servers' ``/metrics`` at the start and the end
  of a step and takes the difference (the embedded engine).

A :class:`FeedbackSource` (:class:`FileFeedback`: a JSON-lines file) adds the quality of each side.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx
from pydantic import BaseModel, ConfigDict, Field

from skiff.errors import InputError, SourceError

__all__ = [
    "SideMetrics",
    "Measurement",
    "MetricsSource",
    "ScrapeMetricsSource",
    "PrometheusMetricsSource",
    "FeedbackSource",
    "FileFeedback",
    "histogram_quantile",
    "parse_server_metrics",
    "requests_expr",
    "errors_expr",
    "error_rate_expr",
    "p99_expr",
]

REQUESTS_METRIC = "skiff_requests_total"
DURATION_METRIC = "skiff_request_duration_seconds"


class SideMetrics(BaseModel):
    """What one side (stable or canary) did in a measurement window."""

    model_config = ConfigDict(extra="forbid")

    version: str
    requests: float = 0.0
    errors: float = Field(default=0.0, description="Answers with a 5xx status.")
    p99_seconds: float | None = None
    quality: float | None = None
    labelled: int = 0

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests > 0 else None

    def evidence(self) -> dict[str, Any]:
        return {**self.model_dump(), "error_rate": self.error_rate}


class Measurement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stable: SideMetrics
    canary: SideMetrics
    window_seconds: float
    source: str


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The q-quantile of a cumulative histogram, interpolated like Prometheus' ``histogram_quantile``.

    ``buckets`` are (upper bound, cumulative count) pairs, ``+Inf`` included. None when it is empty.
    """
    bs = sorted((float(le), float(c)) for le, c in buckets)
    if not bs or not math.isinf(bs[-1][0]):
        return None
    total = bs[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for i, (le, count) in enumerate(bs):
        if count >= rank:
            if math.isinf(le):  # in the open-ended bucket: the largest finite bound is the best answer
                return bs[i - 1][0] if i > 0 else None
            if i == 0 and le <= 0:
                return le
            width = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / width if width > 0 else 1.0)
        prev_le, prev_count = le, count
    return bs[-2][0] if len(bs) > 1 else None


@runtime_checkable
class MetricsSource(Protocol):
    """Measures stable and canary over a window that :meth:`begin` starts and :meth:`read` ends."""

    def begin(self) -> None: ...

    def read(self) -> Measurement: ...


class _Snapshot(BaseModel):
    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = Field(default_factory=dict)


def parse_server_metrics(text: str, model: str, version: str, *, source: str = "/metrics") -> _Snapshot:
    """Sum a model server's ``skiff_requests_total`` and duration buckets for one model version."""
    from prometheus_client.parser import text_string_to_metric_families

    snap = _Snapshot()
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as e:
        raise SourceError(f"{source}: not Prometheus text format: {e}") from e
    for fam in families:
        for s in fam.samples:
            if s.labels.get("model") != model or s.labels.get("version") != version:
                continue
            if s.name == REQUESTS_METRIC:
                snap.requests += s.value
                if str(s.labels.get("status", "")).startswith("5"):
                    snap.errors += s.value
            elif s.name == f"{DURATION_METRIC}_bucket":
                le = float(s.labels["le"])
                snap.buckets[le] = snap.buckets.get(le, 0.0) + s.value
    return snap


def _diff(end: _Snapshot, start: _Snapshot) -> _Snapshot:
    if end.requests < start.requests:  # the server restarted: its counters began again at zero
        return end
    return _Snapshot(
        requests=end.requests - start.requests,
        errors=max(end.errors - start.errors, 0.0),
        buckets={le: max(c - start.buckets.get(le, 0.0), 0.0) for le, c in end.buckets.items()},
    )


class ScrapeMetricsSource:
    """The embedded engine's source: scrape both local servers' ``/metrics`` and difference them."""

    def __init__(
        self,
        model: str,
        stable: tuple[str, str],
        canary: tuple[str, str],
        *,
        client: httpx.Client | None = None,
        feedback: FeedbackSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``stable`` and ``canary`` are (metrics URL, version) pairs."""
        self.model = model
        self.sides = {"stable": stable, "canary": canary}
        self.client = client or httpx.Client(timeout=5.0)
        self.feedback = feedback
        self.clock = clock
        self._start: dict[str, _Snapshot] = {}
        self._t0 = clock()
        self._rollout_t0 = self._t0

    def _scrape(self, role: str) -> _Snapshot:
        url, version = self.sides[role]
        try:
            r = self.client.get(url)
            r.raise_for_status()
        except httpx.HTTPError as e:
            raise SourceError(f"cannot scrape the {role} server's metrics at {url}: {e}") from e
        return parse_server_metrics(r.text, self.model, version, source=url)

    def begin(self) -> None:
        self._start = {role: self._scrape(role) for role in self.sides}
        self._t0 = self.clock()

    def read(self) -> Measurement:
        sides = {}
        for role, (_url, version) in self.sides.items():
            d = _diff(self._scrape(role), self._start.get(role, _Snapshot()))
            p99 = histogram_quantile(0.99, d.buckets.items()) if d.buckets else None
            side = SideMetrics(version=version, requests=d.requests, errors=d.errors, p99_seconds=p99)
            sides[role] = _with_quality(side, self.feedback, self.model, self._rollout_t0)
        return Measurement(stable=sides["stable"], canary=sides["canary"],
                           window_seconds=round(self.clock() - self._t0, 3), source="scrape")


# -- Prometheus ------------------------------------------------------------------------------------------------
def _selector(model: str | None, versions: Iterable[str] | None, extra: str = "") -> str:
    parts = []
    if model is not None:
        parts.append(f'model="{model}"')
    if versions is not None:
        parts.append('version=~"' + "|".join(versions) + '"')
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def requests_expr(window: str, model: str | None = None, versions: Iterable[str] | None = None) -> str:
    """Requests per model version over ``window``."""
    return f"sum by (model, version) (increase({REQUESTS_METRIC}{_selector(model, versions)}[{window}]))"


def errors_expr(window: str, model: str | None = None, versions: Iterable[str] | None = None) -> str:
    """5xx answers per model version over ``window``."""
    sel = _selector(model, versions, 'status=~"5.."')
    return f"sum by (model, version) (increase({REQUESTS_METRIC}{sel}[{window}]))"


def error_rate_expr(window: str, model: str | None = None, versions: Iterable[str] | None = None) -> str:
    """The 5xx share per model version (what the alerts use)."""
    return f"({errors_expr(window, model, versions)}) / ({requests_expr(window, model, versions)})"


def p99_expr(window: str, model: str | None = None, versions: Iterable[str] | None = None) -> str:
    """p99 request latency per model version from the duration histogram."""
    sel = _selector(model, versions)
    return (f"histogram_quantile(0.99, sum by (model, version, le) "
            f"(rate({DURATION_METRIC}_bucket{sel}[{window}])))")


class PrometheusMetricsSource:
    """The cluster's source: instant queries against a Prometheus HTTP API (``/api/v1/query``).

    The window of a step is the time since :meth:`begin`, rounded up to whole seconds (at least
    ``min_window`` so it spans a few scrapes). Both revisions of a KServe canary serve the same model
    name; the ``version`` label the skiff predictor puts on its metrics tells them apart.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        stable_version: str,
        canary_version: str,
        *,
        client: httpx.Client | None = None,
        feedback: FeedbackSource | None = None,
        min_window: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.versions = {"stable": str(stable_version), "canary": str(canary_version)}
        self.client = client or httpx.Client(timeout=10.0)
        self.feedback = feedback
        self.min_window = min_window
        self.clock = clock
        self._t0 = clock()
        self._rollout_t0 = self._t0

    def begin(self) -> None:
        self._t0 = self.clock()

    def query(self, promql: str, at: float) -> dict[str, float | None]:
        """Run one instant query; returns value by ``version`` label (NaN → None)."""
        url = f"{self.base_url}/api/v1/query"
        try:
            r = self.client.get(url, params={"query": promql, "time": f"{at:.3f}"})
            body = r.json()
        except (httpx.HTTPError, ValueError) as e:
            raise SourceError(f"Prometheus query failed at {url}: {e}") from e
        if r.status_code != 200 or body.get("status") != "success":
            raise SourceError(f"Prometheus at {url} answered {r.status_code}: "
                              f"{body.get('errorType', '')} {body.get('error', '')}".strip())
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise SourceError(f"Prometheus at {url}: expected a vector result, got {data.get('resultType')!r}")
        out: dict[str, float | None] = {}
        for item in data.get("result", []):
            version = item.get("metric", {}).get("version")
            try:
                value = float(item["value"][1])
            except (KeyError, IndexError, TypeError, ValueError) as e:
                raise SourceError(f"Prometheus at {url}: malformed sample {item!r}") from e
            out[str(version)] = None if math.isnan(value) else value
        return out

    def read(self) -> Measurement:
        now = self.clock()
        window_s = max(math.ceil(now - self._t0), int(self.min_window))
        window = f"{window_s}s"
        versions = list(self.versions.values())
        reqs = self.query(requests_expr(window, self.model, versions), now)
        errs = self.query(errors_expr(window, self.model, versions), now)
        p99 = self.query(p99_expr(window, self.model, versions), now)
        sides = {}
        for role, v in self.versions.items():
            side = SideMetrics(version=v, requests=reqs.get(v) or 0.0, errors=errs.get(v) or 0.0,
                               p99_seconds=p99.get(v))
            sides[role] = _with_quality(side, self.feedback, self.model, self._rollout_t0)
        return Measurement(stable=sides["stable"], canary=sides["canary"], window_seconds=window_s,
                           source="prometheus")


# -- delayed-label feedback --------------------------------------------------------------------------------
@runtime_checkable
class FeedbackSource(Protocol):
    """Quality of a model version from labels that arrive after the predictions."""

    def quality(self, model: str, version: str, since: float) -> tuple[float, int] | None:
        """(metric value, labelled predictions) for predictions made since ``since`` (epoch seconds),
        or None when there is no feedback for that version."""


class FileFeedback:
    """Feedback from a JSON-lines file; the metric is accuracy.

    Each line: ``{"model": "churn", "version": "4", "prediction": 1, "label": 0, "at": <epoch or ISO time of
    the prediction>}``. Whoever learns the true labels (a batch job, a support tool) appends lines.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def quality(self, model: str, version: str, since: float) -> tuple[float, int] | None:
        if not self.path.is_file():
            return None
        correct = total = 0
        with self.path.open() as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    at = row["at"]
                    ts = float(at) if isinstance(at, int | float) else dt.datetime.fromisoformat(at).timestamp()
                    pred, label = row["prediction"], row["label"]
                    row_model, row_version = row["model"], str(row["version"])
                except (ValueError, KeyError, TypeError) as e:
                    raise InputError(f"{self.path}:{lineno}: bad feedback row ({type(e).__name__}: {e}); "
                                     "expected model, version, prediction, label, at") from e
                if row_model != model or row_version != str(version) or ts < since:
                    continue
                total += 1
                correct += int(pred == label)
        return (correct / total, total) if total else None


def _with_quality(side: SideMetrics, feedback: FeedbackSource | None, model: str, since: float) -> SideMetrics:
    if feedback is None:
        return side
    q = feedback.quality(model, side.version, since)
    if q is None:
        return side
    return side.model_copy(update={"quality": q[0], "labelled": q[1]})
