"""The canary rollout controller: metric-gated promotion step by step, automatic rollback.

A rollout moves a new (canary) version through traffic steps (10 → 50 → 100 by default). At each step it
measures both sides over the step's window — the share of 5xx answers, the p99 latency from the request
duration histogram, and, where delayed labels are fed back, a quality metric — and, once both sides have
seen ``min_requests``, compares the canary with the stable version within the tolerances of a
:class:`RolloutPolicy`. No worse: the next step. Worse, a measurement that fails, an actuator that fails,
or a step that waits longer than ``timeout`` for its requests: the canary goes back to 0 % (the stable
version serves everything again) and the rollout ends as ``rolled_back``.

Two seams make the same controller run on a laptop and in a cluster:

* a :class:`MetricsSource` — :class:`PrometheusMetricsSource` asks a Prometheus HTTP API
  (``/api/v1/query``) with the PromQL below; :class:`ScrapeMetricsSource` scrapes the two local model
  servers' ``/metrics`` at the start and the end of a step and takes the difference;
* a :class:`TrafficActuator` — :class:`KServeActuator` patches the InferenceService's
  ``canaryTrafficPercent`` through the Kubernetes API and waits for the new generation's
  ``status.components.predictor.traffic``; :class:`RouterActuator` sets the local canary router's weights.

Every decision (start, hold, advance, promote, rollback, and manual ones) is recorded with its evidence —
both sides' metric values, the thresholds, the step, the time — in ``<root>/rollouts/<env>/<name>.json``,
written atomically through :class:`skiff.storage.Store`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from skiff.errors import ConflictError, InputError, NotFoundError, SkiffError, SourceError, UsageError
from skiff.storage import Store

__all__ = [
    "RolloutPolicy",
    "SideMetrics",
    "Measurement",
    "Check",
    "Verdict",
    "Decision",
    "RolloutState",
    "RolloutStore",
    "MetricsSource",
    "ScrapeMetricsSource",
    "PrometheusMetricsSource",
    "FeedbackSource",
    "FileFeedback",
    "TrafficActuator",
    "RouterActuator",
    "KServeActuator",
    "RolloutController",
    "evaluate",
    "histogram_quantile",
    "requests_expr",
    "errors_expr",
    "error_rate_expr",
    "p99_expr",
    "manual_decision",
    "actuator_from_target",
    "TERMINAL_PHASES",
]

log = logging.getLogger(__name__)

REQUESTS_METRIC = "skiff_requests_total"
DURATION_METRIC = "skiff_request_duration_seconds"
TERMINAL_PHASES = ("promoted", "rolled_back", "aborted")


# -- policy ------------------------------------------------------------------------------------------------
class RolloutPolicy(BaseModel):
    """How a canary earns its traffic."""

    model_config = ConfigDict(extra="forbid")

    steps: list[int] = Field(
        default_factory=lambda: [10, 50, 100],
        description="Canary traffic percentages, increasing, ending at 100 (full promotion).",
    )
    min_requests: int = Field(
        default=200, ge=1,
        description="Requests each side must have answered in a step before it is judged. The p99 of fewer "
        "than 100 requests is their maximum (one cold request decides it): keep this in the hundreds.",
    )
    max_error_rate_delta: float = Field(
        default=0.01, ge=0, le=1,
        description="Largest allowed excess of the canary's 5xx share over the stable one's (0.01 = 1 point).",
    )
    max_p99_ratio: float = Field(default=1.5, gt=0, description="Largest allowed canary p99 / stable p99.")
    p99_slack_seconds: float = Field(
        default=0.01, ge=0,
        description="Absolute p99 slack: a canary p99 up to ratio × stable p99 + this is not worse "
        "(sub-bucket noise on fast models).",
    )
    max_quality_drop: float = Field(
        default=0.02, ge=0, description="Largest allowed drop of the quality metric (e.g. accuracy)."
    )
    min_labels: int = Field(
        default=50, ge=1, description="Labelled feedback rows each side needs before quality is compared."
    )
    interval: float = Field(default=30.0, gt=0, description="Seconds between two measurements.")
    timeout: float = Field(
        default=900.0, gt=0,
        description="Seconds one step may wait for min_requests; past it the canary is rolled back.",
    )

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("at least one step")
        if any(not 0 < s <= 100 for s in v):
            raise ValueError(f"steps must be between 1 and 100, got {v}")
        if any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError(f"steps must increase, got {v}")
        if v[-1] != 100:
            raise ValueError(f"the last step must be 100 (full promotion), got {v}")
        return v

    def thresholds(self) -> dict[str, float]:
        return {
            "min_requests": self.min_requests,
            "max_error_rate_delta": self.max_error_rate_delta,
            "max_p99_ratio": self.max_p99_ratio,
            "p99_slack_seconds": self.p99_slack_seconds,
            "max_quality_drop": self.max_quality_drop,
            "min_labels": self.min_labels,
        }


# -- measurements ------------------------------------------------------------------------------------------
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


# -- judging ---------------------------------------------------------------------------------------------------
class Check(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["requests", "error_rate", "p99_latency", "quality"]
    status: Literal["pass", "fail", "wait", "skipped"]
    stable: float | None = None
    canary: float | None = None
    limit: float | None = None
    note: str = ""


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["pass", "fail", "wait"]
    checks: list[Check]
    reason: str


def evaluate(m: Measurement, policy: RolloutPolicy) -> Verdict:
    """Judge a step: wait for enough requests, then pass only if no check finds the canary worse."""
    s, c = m.stable, m.canary
    checks: list[Check] = []
    enough = s.requests >= policy.min_requests and c.requests >= policy.min_requests
    checks.append(Check(name="requests", status="pass" if enough else "wait", stable=s.requests,
                        canary=c.requests, limit=policy.min_requests,
                        note="" if enough else f"waiting for {policy.min_requests} requests on each side"))
    if not enough:
        return Verdict(status="wait", checks=checks, reason=checks[0].note)

    se, ce = s.error_rate or 0.0, c.error_rate or 0.0
    limit = se + policy.max_error_rate_delta
    checks.append(Check(name="error_rate", status="pass" if ce <= limit + 1e-12 else "fail", stable=se,
                        canary=ce, limit=limit,
                        note=f"canary 5xx share {ce:.4f} vs stable {se:.4f} (+{policy.max_error_rate_delta})"))

    if s.p99_seconds is None or c.p99_seconds is None:
        checks.append(Check(name="p99_latency", status="skipped", stable=s.p99_seconds, canary=c.p99_seconds,
                            note="no latency histogram on one side"))
    else:
        limit = s.p99_seconds * policy.max_p99_ratio + policy.p99_slack_seconds
        checks.append(Check(name="p99_latency", status="pass" if c.p99_seconds <= limit else "fail",
                            stable=s.p99_seconds, canary=c.p99_seconds, limit=limit,
                            note=f"canary p99 {c.p99_seconds * 1000:.1f} ms vs stable "
                                 f"{s.p99_seconds * 1000:.1f} ms (x{policy.max_p99_ratio} + "
                                 f"{policy.p99_slack_seconds * 1000:.0f} ms)"))

    if (s.quality is None or c.quality is None or s.labelled < policy.min_labels
            or c.labelled < policy.min_labels):
        checks.append(Check(name="quality", status="skipped", stable=s.quality, canary=c.quality,
                            note=f"fewer than {policy.min_labels} labelled predictions on a side "
                                 f"(stable {s.labelled}, canary {c.labelled})"))
    else:
        limit = s.quality - policy.max_quality_drop
        checks.append(Check(name="quality", status="pass" if c.quality >= limit else "fail",
                            stable=s.quality, canary=c.quality, limit=limit,
                            note=f"canary quality {c.quality:.4f} vs stable {s.quality:.4f} "
                                 f"(-{policy.max_quality_drop})"))

    failed = [ch for ch in checks if ch.status == "fail"]
    if failed:
        return Verdict(status="fail", checks=checks, reason="canary worse: " + "; ".join(ch.note for ch in failed))
    return Verdict(status="pass", checks=checks, reason="canary no worse than stable")


# -- traffic -----------------------------------------------------------------------------------------------
@runtime_checkable
class TrafficActuator(Protocol):
    """Moves traffic between the stable and the canary version."""

    def set_canary_percent(self, percent: int) -> dict[str, Any]:
        """Give the canary ``percent`` of the requests (0 = rollback, 100 = full promotion); returns what
        was observed (the evidence that the split took effect)."""

    def check_canary(self, stable_version: str, canary_version: str) -> None:
        """Raise unless the target serves these two versions as stable and canary."""

    def describe(self) -> dict[str, Any]:
        """Enough to rebuild the actuator later (stored in the rollout state)."""


class RouterActuator:
    """Sets the weights of the local canary router through its loopback admin endpoint."""

    def __init__(self, base_url: str, *, client: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client or httpx.Client(timeout=10.0)

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        try:
            r = self.client.request(method, url, **kw)
        except httpx.HTTPError as e:
            raise SourceError(f"canary router unreachable at {url}: {e}") from e
        if r.status_code != 200:
            raise SourceError(f"canary router at {url} answered {r.status_code}: {r.text[:300]}")
        return r.json()

    def upstreams(self) -> dict[str, Any]:
        return self._call("GET", "/admin/upstreams")

    def set_canary_percent(self, percent: int) -> dict[str, Any]:
        out = self._call("PUT", "/admin/weights", json={"canary_percent": percent})
        if out.get("canary_percent") != percent:
            raise SourceError(f"canary router kept {out.get('canary_percent')}% instead of {percent}%")
        return out

    def check_canary(self, stable_version: str, canary_version: str) -> None:
        up = self.upstreams()
        seen = (str(up["stable"]["version"]), str(up["canary"]["version"]))
        if seen != (str(stable_version), str(canary_version)):
            raise ConflictError(f"the router at {self.base_url} serves stable {seen[0]} / canary {seen[1]}, "
                                f"not {stable_version} / {canary_version}")

    def describe(self) -> dict[str, Any]:
        return {"kind": "router", "url": self.base_url}


KSERVE_GROUP = "serving.kserve.io"
KSERVE_VERSION = "v1beta1"
KSERVE_PLURAL = "inferenceservices"


class KServeActuator:
    """Patches ``spec.predictor.canaryTrafficPercent`` of an InferenceService (Knative mode).

    ``api`` is a ``kubernetes.client.CustomObjectsApi`` (or anything with its
    ``get_namespaced_custom_object`` / ``patch_namespaced_custom_object``). After each patch it waits until
    ``status.observedGeneration`` reaches the patched generation and the latest revision's share in
    ``status.components.predictor.traffic`` equals the requested percent. 100 % removes the field
    (KServe promotes the latest revision); 0 % sends everything back to the last rolled-out revision.
    """

    def __init__(self, api: Any, name: str, namespace: str, *, timeout: float = 300.0, poll: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.api, self.name, self.namespace = api, name, namespace
        self.timeout, self.poll, self.clock, self.sleep = timeout, poll, clock, sleep

    def _get(self) -> dict[str, Any]:
        try:
            return self.api.get_namespaced_custom_object(KSERVE_GROUP, KSERVE_VERSION, self.namespace,
                                                         KSERVE_PLURAL, self.name)
        except Exception as e:  # kubernetes ApiException, urllib3 errors
            raise SourceError(f"cannot read InferenceService {self.namespace}/{self.name}: {e}") from e

    @staticmethod
    def patch_body(percent: int) -> dict[str, Any]:
        return {"spec": {"predictor": {"canaryTrafficPercent": None if percent >= 100 else percent}}}

    def set_canary_percent(self, percent: int) -> dict[str, Any]:
        try:
            patched = self.api.patch_namespaced_custom_object(KSERVE_GROUP, KSERVE_VERSION, self.namespace,
                                                              KSERVE_PLURAL, self.name, self.patch_body(percent))
        except Exception as e:
            raise SourceError(f"cannot patch InferenceService {self.namespace}/{self.name}: {e}") from e
        generation = int((patched.get("metadata") or {}).get("generation") or 0)
        deadline = self.clock() + self.timeout
        while True:
            obj = self._get()
            status = obj.get("status") or {}
            traffic = ((status.get("components") or {}).get("predictor") or {}).get("traffic") or []
            latest = sum(int(t.get("percent") or 0) for t in traffic if t.get("latestRevision"))
            if int(status.get("observedGeneration") or 0) >= generation and traffic and latest == percent:
                return {"generation": generation, "traffic": traffic}
            if self.clock() >= deadline:
                raise SourceError(
                    f"InferenceService {self.namespace}/{self.name} did not reach {percent}% on its latest "
                    f"revision within {self.timeout:.0f}s (generation {generation}, observed "
                    f"{status.get('observedGeneration')}, traffic {traffic})"
                )
            self.sleep(self.poll)

    def check_canary(self, stable_version: str, canary_version: str) -> None:
        obj = self._get()
        labels = (obj.get("metadata") or {}).get("labels") or {}
        served = labels.get("skiff.io/version")
        if served != str(canary_version):
            raise ConflictError(
                f"InferenceService {self.namespace}/{self.name} serves version {served} in its latest spec, "
                f"not the canary {canary_version}: record the canary with `skiff promote NAME --version "
                f"{canary_version} --env ENV --canary-percent 0` and let Argo CD sync it first"
            )

    def describe(self) -> dict[str, Any]:
        return {"kind": "kserve", "name": self.name, "namespace": self.namespace}


# -- state -----------------------------------------------------------------------------------------------------
class Decision(BaseModel):
    """One decision of a rollout with its evidence."""

    model_config = ConfigDict(extra="forbid")

    at: str
    ts: float
    step: int = Field(description="Canary percent the decision was taken at.")
    action: Literal["start", "hold", "advance", "promote", "rollback", "manual-promote", "manual-rollback"]
    canary_percent: int = Field(description="Canary percent after the decision.")
    reason: str
    evidence: dict[str, Any] = Field(default_factory=dict, description="Both sides' metrics and the window.")
    checks: list[Check] = Field(default_factory=list)
    thresholds: dict[str, float] = Field(default_factory=dict)
    traffic: dict[str, Any] = Field(default_factory=dict, description="What the actuator observed.")


class RolloutState(BaseModel):
    """The state file of one rollout."""

    model_config = ConfigDict(extra="forbid")

    id: str
    model: str
    env: str
    stable_version: str
    canary_version: str
    phase: Literal["running", "promoted", "rolled_back", "aborted"]
    canary_percent: int = 0
    target: dict[str, Any] = Field(default_factory=dict)
    policy: RolloutPolicy
    started_at: str
    updated_at: str
    finished_at: str | None = None
    reason: str = ""
    decisions: list[Decision] = Field(default_factory=list)


class RolloutStore:
    """``<root>/rollouts/<env>/<name>.json`` on a :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def _parts(env: str, model: str) -> tuple[str, str, str]:
        return ("rollouts", env, f"{model}.json")

    def load(self, env: str, model: str) -> RolloutState | None:
        parts = self._parts(env, model)
        if not self.store.exists(*parts):
            return None
        try:
            return RolloutState.model_validate(self.store.read_json(*parts))
        except ValueError as e:
            raise InputError(f"{self.store.uri(*parts)}: not a valid rollout state: {e}") from e

    def get(self, env: str, model: str) -> RolloutState:
        state = self.load(env, model)
        if state is None:
            raise NotFoundError(f"no rollout of {model!r} in {env!r} ({self.store.uri(*self._parts(env, model))})")
        return state

    def save(self, state: RolloutState) -> str:
        return self.store.write_json(state.model_dump(mode="json"), *self._parts(state.env, state.model))

    @contextlib.contextmanager
    def lock(self, env: str, model: str) -> Iterator[None]:
        """Serialise decisions on one rollout (the controller's steps and manual ones).

        A file lock on local stores; object stores have none, so there run one controller per rollout
        and take manual decisions only when it has stopped.
        """
        if not self.store.is_local:
            yield
            return
        import fcntl

        path = self.store.local_path("rollouts", env, f".{model}.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


class _Superseded(Exception):
    """A manual decision ended the rollout while the controller was running."""


class RolloutController:
    """Runs one rollout to its end (promoted or rolled back) and records every decision."""

    def __init__(
        self,
        *,
        model: str,
        env: str,
        stable_version: int | str,
        canary_version: int | str,
        policy: RolloutPolicy,
        metrics: MetricsSource,
        actuator: TrafficActuator,
        store: RolloutStore,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        replace: bool = False,
    ) -> None:
        if str(stable_version) == str(canary_version):
            raise UsageError(f"the canary version {canary_version} is the stable version")
        self.model, self.env = model, env
        self.stable_version, self.canary_version = str(stable_version), str(canary_version)
        self.policy, self.metrics, self.actuator, self.store = policy, metrics, actuator, store
        self.clock, self.sleep, self.replace = clock, sleep, replace
        self.state: RolloutState | None = None

    # -- recording ----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _decision(self) -> Iterator[None]:
        """One decision: under the rollout's lock, stop if a manual decision ended the rollout meanwhile,
        else act (move traffic), record, and save."""
        assert self.state is not None
        with self.store.lock(self.env, self.model):
            on_disk = self.store.load(self.env, self.model)
            if (on_disk is not None and on_disk.id == self.state.id and on_disk.phase in TERMINAL_PHASES
                    and self.state.phase == "running"):
                self.state = on_disk
                raise _Superseded
            yield
            self.state.updated_at = _iso(self.clock())
            self.store.save(self.state)

    def _record(self, action: str, step: int, reason: str, *, measurement: Measurement | None = None,
                verdict: Verdict | None = None, traffic: dict[str, Any] | None = None) -> Decision:
        assert self.state is not None
        now = self.clock()
        evidence: dict[str, Any] = {}
        if measurement is not None:
            evidence = {"stable": measurement.stable.evidence(), "canary": measurement.canary.evidence(),
                        "window_seconds": measurement.window_seconds, "source": measurement.source}
        d = Decision(at=_iso(now), ts=now, step=step, action=action, canary_percent=self.state.canary_percent,
                     reason=reason, evidence=evidence, checks=verdict.checks if verdict else [],
                     thresholds=self.policy.thresholds(), traffic=traffic or {})
        self.state.decisions.append(d)
        log.info("rollout %s/%s: %s at %s%% — %s", self.env, self.model, action, step, reason)
        return d

    def _finish(self, phase: str, reason: str) -> None:
        assert self.state is not None
        self.state.phase = phase
        self.state.reason = reason
        self.state.finished_at = _iso(self.clock())

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self) -> RolloutState:
        previous = self.store.load(self.env, self.model)
        if previous is not None and previous.phase == "running" and not self.replace:
            raise ConflictError(
                f"a rollout of {self.model} in {self.env} is running already (canary {previous.canary_version} "
                f"at {previous.canary_percent}%): end it with `skiff rollout rollback {self.model}` or "
                "`skiff rollout promote`, or start with --replace"
            )
        self.actuator.check_canary(self.stable_version, self.canary_version)
        now = self.clock()
        self.state = RolloutState(
            id=uuid.uuid4().hex[:12], model=self.model, env=self.env, stable_version=self.stable_version,
            canary_version=self.canary_version, phase="running", canary_percent=0,
            target=self.actuator.describe(), policy=self.policy, started_at=_iso(now), updated_at=_iso(now),
        )
        try:
            return self._run()
        except _Superseded:
            log.info("rollout %s/%s ended by a manual decision", self.env, self.model)
            return self.state
        except BaseException as e:
            if self.state.phase == "running":
                with contextlib.suppress(_Superseded, SkiffError):
                    self._rollback(self.state.canary_percent, f"controller failed: {type(e).__name__}: {e}")
            raise

    def _rollback(self, step: int, reason: str, **kw: Any) -> RolloutState:
        assert self.state is not None
        with self._decision():
            try:
                traffic = self.actuator.set_canary_percent(0)
            except SkiffError as e:
                self._record("rollback", step, f"{reason}; setting the canary to 0% FAILED: {e.message}", **kw)
                self._finish("aborted", f"{reason}; rollback failed: {e.message}")
                failure = e
            else:
                failure = None
                self.state.canary_percent = 0
                self._record("rollback", step, reason, traffic=traffic, **kw)
                self._finish("rolled_back", reason)
        if failure is not None:
            raise failure
        return self.state

    def _set(self, percent: int) -> dict[str, Any]:
        traffic = self.actuator.set_canary_percent(percent)
        assert self.state is not None
        self.state.canary_percent = percent
        return traffic

    def _run(self) -> RolloutState:
        assert self.state is not None
        policy = self.policy
        with self._decision():
            pass  # the rollout is on record before any traffic moves
        step_index = 0
        step = policy.steps[0]
        if step >= 100:  # a single-step policy: straight to full promotion
            with self._decision():
                traffic = self._set(100)
                self._record("promote", 100, "single-step policy: full promotion", traffic=traffic)
                self._finish("promoted", "single-step policy")
            return self.state
        self.metrics.begin()
        try:
            with self._decision():
                traffic = self._set(step)
                self._record("start", step, f"canary {self.canary_version} gets {step}% next to stable "
                             f"{self.stable_version}", traffic=traffic)
        except SkiffError as e:
            return self._rollback(step, f"could not start the canary at {step}%: {e.message}")
        step_started = self.clock()
        while True:
            self.sleep(policy.interval)
            try:
                m = self.metrics.read()
            except SkiffError as e:
                return self._rollback(step, f"metrics unavailable: {e.message}")
            verdict = evaluate(m, policy)
            waited = self.clock() - step_started
            if verdict.status == "wait":
                if waited > policy.timeout:
                    return self._rollback(step, f"timed out after {waited:.0f}s at {step}%: {verdict.reason}",
                                          measurement=m, verdict=verdict)
                with self._decision():
                    self._record("hold", step, verdict.reason, measurement=m, verdict=verdict)
                continue
            if verdict.status == "fail":
                return self._rollback(step, verdict.reason, measurement=m, verdict=verdict)
            nxt = policy.steps[step_index + 1]
            try:
                with self._decision():
                    if nxt < 100:
                        self.metrics.begin()
                    traffic = self._set(nxt)
                    if nxt >= 100:
                        self._record("promote", step, f"{verdict.reason} at {step}%: promoted to 100%",
                                     measurement=m, verdict=verdict, traffic=traffic)
                        self._finish("promoted", f"canary {self.canary_version} passed every step")
                    else:
                        self._record("advance", step, f"{verdict.reason} at {step}%: moving to {nxt}%",
                                     measurement=m, verdict=verdict, traffic=traffic)
            except SkiffError as e:
                return self._rollback(step, f"could not move to {nxt}%: {e.message}", measurement=m,
                                      verdict=verdict)
            if nxt >= 100:
                return self.state
            step_index, step, step_started = step_index + 1, nxt, self.clock()


def manual_decision(store: RolloutStore, env: str, model: str, action: Literal["promote", "rollback"],
                    actuator: TrafficActuator, reason: str, clock: Callable[[], float] = time.time) -> RolloutState:
    """``skiff rollout promote|rollback``: end a rollout by hand, recorded like the controller's decisions."""
    with store.lock(env, model):
        state = store.get(env, model)
        if state.phase == "promoted" and action == "promote":
            raise ConflictError(f"the rollout of {model} in {env} is promoted already")
        percent = 100 if action == "promote" else 0
        step = state.canary_percent
        traffic = actuator.set_canary_percent(percent)
        now = clock()
        state.canary_percent = percent
        state.decisions.append(Decision(
            at=_iso(now), ts=now, step=step, action=f"manual-{action}", canary_percent=percent, reason=reason,
            thresholds=state.policy.thresholds(), traffic=traffic,
        ))
        state.phase = "promoted" if action == "promote" else "rolled_back"
        state.reason = f"manual {action}: {reason}"
        state.finished_at = state.updated_at = _iso(now)
        store.save(state)
    return state


def actuator_from_target(target: Mapping[str, Any], *, kube_api: Any = None) -> TrafficActuator:
    """Rebuild the actuator a rollout state names (for manual decisions)."""
    kind = target.get("kind")
    if kind == "router":
        return RouterActuator(target["url"])
    if kind == "kserve":
        if kube_api is None:
            raise UsageError("a Kubernetes API client is needed to change an InferenceService")
        return KServeActuator(kube_api, target["name"], target["namespace"])
    raise InputError(f"unknown rollout target {dict(target)!r}")
