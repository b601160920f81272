"""A served model's monitoring, from the control plane (:mod:`skiff.control_plane`): the serving drift
``skiff monitor run`` stored per version and window, its performance on labeled traffic (with labels posted
here), its resource use, the model's alerts and each window's HTML report; ``/metrics``: the latest drift
and performance as Prometheus gauges (:mod:`skiff.monitoring.metrics`) for the cluster's Prometheus."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from skiff.api.deps import ApiContext, NameParam, context, require_admin, require_read
from skiff.api.errors import declare, declare_beside
from skiff.control_plane import Alert, GroundTruthLabel, MonitoringResult, PerformanceResult
from skiff.errors import EnvironmentMissing
from skiff.registry import ModelRegistry
from skiff.versions import MAX_VERSION

__all__ = ["router"]

router = APIRouter(tags=["monitoring"])

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class Score(BaseModel):
    kind: str = Field(description="feature_drift or prediction_drift.")
    feature: str = Field(description="The feature; 'prediction' for the prediction distribution.")
    metric: str = Field(description="psi, linf (categorical) or js (numeric).")
    value: float
    threshold: float | None
    drifted: bool
    rows: int


class Window(BaseModel):
    version: int
    window_start: str
    window_end: str
    rows: int = Field(description="Logged rows the window's scores were computed on.")
    drifted: list[str] = Field(description="The features (or 'prediction') with a drifted score.")
    computed_at: str
    scores: list[Score]


class ModelMonitoring(BaseModel):
    model: str
    versions: list[int] = Field(description="The versions with stored scores.")
    windows: list[Window] = Field(description="Scored windows, newest first.")
    alerts: list[Alert] = Field(description="The model's alerts, newest first.")


def _windows(results: list[MonitoringResult]) -> list[dict[str, Any]]:
    grouped: dict[tuple[int, str, str], list[MonitoringResult]] = {}
    for r in results:
        grouped.setdefault((r.version, r.window_start, r.window_end), []).append(r)
    out = []
    for (version, start, end), rows in grouped.items():
        out.append({
            "version": version, "window_start": start, "window_end": end, "rows": max(r.rows for r in rows),
            "drifted": sorted({r.feature or "prediction" for r in rows if r.drifted}),
            "computed_at": max(r.computed_at for r in rows),
            "scores": [{"kind": r.kind, "feature": r.feature or "prediction", "metric": r.metric, "value": r.value,
                        "threshold": r.threshold, "drifted": r.drifted, "rows": r.rows} for r in rows],
        })
    return sorted(out, key=lambda w: (w["window_start"], w["version"]), reverse=True)


@router.get("/models/{name}/monitoring", response_model=ModelMonitoring, dependencies=[Depends(require_read)],
            responses=declare(404, 422, 503))
def model_monitoring(
    name: NameParam, ctx: Annotated[ApiContext, Depends(context)],
    version: Annotated[int | None, Query(ge=1, description="Only this version's windows.")] = None,
    windows: Annotated[int, Query(ge=1, le=1000, description="At most this many windows, newest first.")] = 24,
    open_alerts: Annotated[bool, Query(description="Only alerts not resolved yet.")] = False,
) -> dict[str, Any]:
    """Serving drift of a registered model per window and feature (PSI, L-infinity, Jensen-Shannon against
    the training data; the predictions against validation time), with its alerts. 404 when the model is not
    registered; a registered model nobody monitored yet has no windows."""
    registry = ModelRegistry.from_settings(ctx.settings)
    registry.get(name, "latest" if version is None else version)  # NotFoundError: 404
    store = ctx.runs.store
    results = store.monitoring_results(name, version)
    return {"model": name, "versions": sorted({r.version for r in results}),
            "windows": _windows(results)[:windows], "alerts": store.alerts(name, open_only=open_alerts)}


@router.get("/metrics", response_class=Response, dependencies=[Depends(require_read)],
            responses={200: {"content": {PROMETHEUS_TEXT: {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition"},
                       **declare_beside(401, 413, 500, 503)})
def metrics(ctx: Annotated[ApiContext, Depends(context)]) -> Response:
    """The latest monitored window of every model version as Prometheus gauges: ``skiff_drift_score``,
    ``skiff_drift_threshold``, ``skiff_drift_detected`` (labels model, version, feature, metric) and
    ``skiff_drift_window_end_timestamp_seconds``. Scraped with a read token (the chart's PodMonitor)."""
    from skiff.monitoring.metrics import exposition

    store = ctx.runs.store
    results = [r for m in store.monitored_models() for r in store.monitoring_results(m)]
    performance = [r for m in store.performance_models() for r in store.performance_results(m)]
    return Response(exposition(results, performance), media_type=PROMETHEUS_TEXT)


VersionInt = Annotated[int, PathParam(ge=1, le=MAX_VERSION, description="A version number.")]


class VersionDrift(BaseModel):
    model: str
    version: int
    windows: list[Window] = Field(description="Scored windows, newest first.")


class VersionAccuracy(BaseModel):
    model: str
    version: int
    test_metrics: dict[str, float] = Field(description="The version's held-out test metrics (the baseline).")
    windows: list[PerformanceResult] = Field(description="Per window and metric, newest first, each with its "
                                             "95% interval, floor and whether it decayed.")


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200, description="The request id the prediction was "
                            "logged with (the response's id).")
    row: int = Field(default=0, ge=0, le=1_000_000, description="The instance of a batch request (0: the first).")
    label: str | float | int | bool = Field(description="The true outcome (a class label or a number).")


class LabelsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[LabelIn] = Field(min_length=1, max_length=10_000)


class LabelsStored(BaseModel):
    model: str
    inserted: int
    replaced: int = Field(description="Labels of a request id and row that had one (a correction).")


def _version(ctx: ApiContext, name: str, version: int) -> Any:
    return ModelRegistry.from_settings(ctx.settings).get(name, version)  # NotFoundError: 404


@router.get("/models/{name}/versions/{version}/drift", response_model=VersionDrift,
            dependencies=[Depends(require_read)], responses=declare(404, 422, 503))
def version_drift(name: NameParam, version: VersionInt, ctx: Annotated[ApiContext, Depends(context)],
                  windows: Annotated[int, Query(ge=1, le=1000, description="At most this many, newest first.")] = 24,
                  ) -> dict[str, Any]:
    """One version's serving drift per window and feature."""
    _version(ctx, name, version)
    return {"model": name, "version": version,
            "windows": _windows(ctx.runs.store.monitoring_results(name, version))[:windows]}


@router.get("/models/{name}/versions/{version}/accuracy", response_model=VersionAccuracy,
            dependencies=[Depends(require_read)], responses=declare(404, 422, 503))
def version_accuracy(name: NameParam, version: VersionInt, ctx: Annotated[ApiContext, Depends(context)],
                     windows: Annotated[int, Query(ge=1, le=10_000, description="At most this many results, "
                                                   "newest first.")] = 100) -> dict[str, Any]:
    """One version's accuracy / ROC-AUC / RMSE on labeled traffic per window, against its test metrics."""
    mv = _version(ctx, name, version)
    results = ctx.runs.store.performance_results(name, version)
    return {"model": name, "version": version, "test_metrics": dict(mv.metadata.metrics),
            "windows": sorted(results, key=lambda r: (r.window_start, r.metric), reverse=True)[:windows]}


@router.get("/models/{name}/versions/{version}/resources", dependencies=[Depends(require_read)],
            response_model=dict[str, Any], responses=declare(404, 422, 502, 503))
def version_resources(name: NameParam, version: VersionInt, ctx: Annotated[ApiContext, Depends(context)],
                      window_minutes: Annotated[int, Query(ge=1, le=7 * 24 * 60, description="The window to "
                                                           "average over.")] = 60) -> dict[str, Any]:
    """One version's CPU, memory, replicas, request rate and cost per 1,000 predictions
    (:func:`skiff.monitoring.resources.resource_use`: Prometheus on a cluster, the process on a laptop)."""
    _version(ctx, name, version)
    try:
        from skiff.monitoring.resources import resource_use  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise EnvironmentMissing("resource use is not available in this skiff build") from None
    out: dict[str, Any] = resource_use(ctx.settings, name, version, dt.timedelta(minutes=window_minutes))
    return out


@router.get("/models/{name}/alerts", response_model=list[Alert], dependencies=[Depends(require_read)],
            responses=declare(404, 422, 503))
def model_alerts(name: NameParam, ctx: Annotated[ApiContext, Depends(context)],
                 version: Annotated[int | None, Query(ge=1, le=MAX_VERSION, description="Only this version's.")] = None,
                 open_only: Annotated[bool, Query(description="Only alerts not resolved yet.")] = False,
                 ) -> list[Alert]:
    """The model's alerts (drift, accuracy below the floor), newest first."""
    ModelRegistry.from_settings(ctx.settings).get(name, "latest" if version is None else version)
    alerts = ctx.runs.store.alerts(name, open_only=open_only)
    return [a for a in alerts if version is None or a.version == version]


@router.post("/models/{name}/labels", response_model=LabelsStored, dependencies=[Depends(require_admin)],
             responses=declare(400, 403, 404, 422, 503))
def post_labels(name: NameParam, body: LabelsIn, ctx: Annotated[ApiContext, Depends(context)]) -> dict[str, Any]:
    """Ground-truth labels of logged predictions, by request id and row; the next ``skiff monitor run`` joins
    them to the inference log. A label posted again for the same request id and row replaces it. Admin."""
    ModelRegistry.from_settings(ctx.settings).get(name, "latest")
    inserted, replaced = ctx.runs.store.add_labels(
        GroundTruthLabel(model=name, request_id=lab.request_id, row=lab.row, label=str(lab.label), source="api")
        for lab in body.labels)
    return {"model": name, "inserted": inserted, "replaced": replaced}


@router.get("/models/{name}/versions/{version}/reports", response_class=HTMLResponse,
            dependencies=[Depends(require_read)], responses=declare_beside(401, 404, 413, 422, 500, 503))
def version_report(name: NameParam, version: VersionInt, ctx: Annotated[ApiContext, Depends(context)],
                   window_start: Annotated[str | None, Query(
                       pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:00:00\+00:00$",
                       description="The window (its start, e.g. 2026-05-01T10:00:00+00:00); default: the latest.")
                   ] = None) -> HTMLResponse:
    """The self-contained HTML report of one monitored window (drift per feature, predictions, accuracy)."""
    from skiff.errors import NotFoundError
    from skiff.monitoring.report import REPORT_CSP, window_report

    _version(ctx, name, version)
    store = ctx.runs.store
    starts = sorted({r.window_start for r in store.monitoring_results(name, version)}
                    | {p.window_start for p in store.performance_results(name, version)})
    if not starts:
        raise NotFoundError(f"{name} version {version} has no monitored window")
    page = window_report(ctx.settings, name, version, window_start or starts[-1], store=store)
    return HTMLResponse(page, headers={"Content-Security-Policy": REPORT_CSP})
