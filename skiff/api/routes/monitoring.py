"""``/monitoring``: data drift and anomalies of each validated partition, from the TFDV results the
validate step stores in the lake (``validation/<dataset>/ingest_date=D/result.json`` and ``report.html``,
read through :mod:`skiff.validation`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from skiff.api.deps import ApiContext, NameParam, context, require_read
from skiff.api.errors import declare, declare_beside
from skiff.errors import NotFoundError
from skiff.lake import Lake
from skiff.validation import REPORT_FILE, Anomaly, read_result, validated_dates, validation_parts

__all__ = ["router"]

router = APIRouter(prefix="/monitoring", tags=["monitoring"])

DateQuery = Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$",
                                        description="One partition (YYYY-MM-DD); default: all (drift) or "
                                        "the latest (report).")]


class DriftedFeature(BaseModel):
    feature: str
    measure: str
    value: float
    threshold: float


class PartitionDrift(BaseModel):
    dataset: str
    date: str
    previous_date: str | None
    status: str
    num_examples: int
    drifted: list[DriftedFeature]
    blocking: list[Anomaly]
    warnings: list[Anomaly]
    drift: dict[str, Any]
    notes: list[str]
    report: str


class DatasetDrift(BaseModel):
    dataset: str
    partitions: list[PartitionDrift]


def _chosen(lake: Lake, dataset: str, date: str | None) -> list[str]:
    dates = validated_dates(lake, dataset)
    if not dates:
        raise NotFoundError(f"dataset {dataset!r} has no validation results in {lake.store.uri('validation')}")
    if date is not None:
        if date not in dates:
            raise NotFoundError(f"dataset {dataset!r} has no validation result for {date} (validated: {dates})")
        return [date]
    return dates


@router.get("/datasets/{dataset}/drift", response_model=DatasetDrift, dependencies=[Depends(require_read)],
            responses=declare(404, 422, 503))
def drift(dataset: NameParam, ctx: Annotated[ApiContext, Depends(context)],
          date: DateQuery = None) -> dict[str, Any]:
    """Per validated partition: status, the drifted features with score and threshold, blocking anomalies."""
    lake = Lake.from_settings(ctx.settings)
    out = []
    for d in _chosen(lake, dataset, date):
        r = read_result(lake, dataset, d)
        out.append({
            "dataset": dataset, "date": r.date, "previous_date": r.previous_date, "status": r.status,
            "num_examples": r.num_examples,
            "drifted": [{"feature": f, "measure": x.measure, "value": x.value, "threshold": x.threshold}
                        for f, x in sorted(r.drift.items()) if x.drifted],
            "blocking": r.blocking, "warnings": r.warnings,
            "drift": {f: x.model_dump() for f, x in sorted(r.drift.items())}, "notes": r.notes,
            "report": f"/api/v1/monitoring/datasets/{dataset}/report?date={d}",
        })
    return {"dataset": dataset, "partitions": out}


@router.get("/datasets/{dataset}/report", response_class=HTMLResponse, dependencies=[Depends(require_read)],
            responses=declare_beside(401, 404, 413, 422, 500, 503))
def report(dataset: NameParam, ctx: Annotated[ApiContext, Depends(context)], date: DateQuery = None) -> HTMLResponse:
    """The partition's self-contained HTML validation report (statistics, anomalies, drift)."""
    lake = Lake.from_settings(ctx.settings)
    d = _chosen(lake, dataset, date)[-1]
    parts = validation_parts(dataset, d)
    if not lake.store.exists(*parts, REPORT_FILE):
        raise NotFoundError(f"no report for {dataset!r} {d} in {lake.store.uri(*parts)}")
    return HTMLResponse(lake.store.read_bytes(*parts, REPORT_FILE),
                        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                 "img-src data:; script-src 'unsafe-inline'"})
