"""A served model's monitoring, from the control plane (:mod:`skiff.control_plane`): the serving drift
``skiff monitor run`` stored per version and window, and the model's alerts; ``/metrics``: the latest
drift scores as Prometheus gauges (:mod:`skiff.monitoring.metrics`) for the cluster's Prometheus."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from skiff.api.deps import ApiContext, NameParam, context, require_read
from skiff.api.errors import declare, declare_beside
from skiff.control_plane import Alert, MonitoringResult
from skiff.registry import ModelRegistry

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
    return Response(exposition(results), media_type=PROMETHEUS_TEXT)
