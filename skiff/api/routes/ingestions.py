"""``/datasets/{name}/ingestions``: start an ingestion of a dataset (its spec's sources, or object-store
sources in their place) in the background, poll it, and list the dataset's ingestions with their counts
and quarantine reasons (the committed runs' manifests in the lake, and the jobs this API started)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from skiff.api.deps import ApiContext, NameParam, context, require_admin, require_read
from skiff.api.errors import declare
from skiff.api.routes._jobs import new_job_id, start_job
from skiff.api.run_specs import RemoteFileSource, resolve_spec
from skiff.control_plane import RunRecord
from skiff.errors import NotFoundError
from skiff.lake import Lake

__all__ = ["router"]

router = APIRouter(prefix="/datasets", tags=["ingestions"])


class IngestionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[RemoteFileSource] | None = Field(
        default=None, max_length=64, description="Sources in place of the spec's: object-store URIs only.")
    ingest_date: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$",
                                    description="Partition date (default: today, UTC).")
    force: bool = Field(default=False, description="Ingest even if this input was ingested already.")
    min_accepted_fraction: float | None = Field(default=None, ge=0, le=1, description="Fail (nothing committed) "
                                                "when a smaller share of the rows is accepted.")


class IngestedRun(BaseModel):
    run_id: str
    ingest_date: str
    status: str
    counts: dict[str, Any] | None
    quarantine_reasons: dict[str, int]
    quarantine_top: list[dict[str, Any]]
    warnings: list[str]
    finished_at: str | None


class Ingestions(BaseModel):
    dataset: str
    jobs: list[RunRecord] = Field(description="Ingestions this API started, newest first (with status).")
    runs: list[IngestedRun] = Field(description="Committed runs in the lake, newest first.")


def _kind(name: str) -> str:
    return f"ingest:{name}"


@router.post("/{name}/ingestions", status_code=202, response_model=RunRecord, dependencies=[Depends(require_admin)],
             responses=declare(400, 403, 404, 409, 422, 503))
def start_ingestion(name: NameParam, body: IngestionRequest, request: Request,
                    ctx: Annotated[ApiContext, Depends(context)]) -> RunRecord:
    """Ingest the dataset in the background (poll ``GET /datasets/{name}/ingestions/{id}``). Admin."""
    from components.ingest.logic import ingest
    from skiff.spec import FileSource

    spec = resolve_spec(name, ctx.settings)  # 404 / 422 before anything is queued
    sources = [FileSource.model_validate(s.model_dump(exclude_none=True)) for s in body.sources] if body.sources \
        else None
    job_id = new_job_id("ingest")
    settings = ctx.settings

    def work() -> dict[str, Any]:
        result = ingest(spec, Lake.from_settings(settings), sources=sources, run_id=job_id,
                        ingest_date=body.ingest_date, force=body.force,
                        min_accepted_fraction=body.min_accepted_fraction)
        return dict(result.summary())

    return start_job(request.app, ctx.runs.store, job_id, _kind(name), work)


@router.get("/{name}/ingestions/{job_id}", response_model=RunRecord, dependencies=[Depends(require_read)],
            responses=declare(404, 422))
def get_ingestion(name: NameParam, job_id: str, ctx: Annotated[ApiContext, Depends(context)]) -> RunRecord:
    """An ingestion's status; its summary (counts, quarantine reasons) once it has finished."""
    rec = ctx.runs.store.get_run(job_id)
    if rec.pipeline != _kind(name):
        raise NotFoundError(f"no ingestion {job_id!r} of dataset {name!r}")
    return rec


@router.get("/{name}/ingestions", response_model=Ingestions, dependencies=[Depends(require_read)],
            responses=declare(404, 422, 503))
def list_ingestions(name: NameParam, ctx: Annotated[ApiContext, Depends(context)]) -> dict[str, Any]:
    """The dataset's ingestions: this API's jobs and every committed run with its counts and quarantine
    reasons. 404 when the dataset has neither a spec nor data."""
    lake = Lake.from_settings(ctx.settings)
    jobs = ctx.runs.store.list_runs(pipeline=_kind(name), limit=100)
    refs = lake.all_runs(name)
    if not jobs and not refs:
        resolve_spec(name, ctx.settings)  # 404 naming the missing spec; a spec without data lists nothing
    runs = []
    for ref in refs:
        try:
            m = lake.manifest(ref)
        except FileNotFoundError:
            continue
        runs.append({"run_id": ref.run_id, "ingest_date": ref.date, "status": m.status,
                     "counts": m.counts.model_dump() if m.counts else None,
                     "quarantine_reasons": dict(m.quarantine_reasons), "quarantine_top": list(m.quarantine_top),
                     "warnings": list(m.warnings), "finished_at": m.finished_at})
    runs.sort(key=lambda r: (r["ingest_date"], r["finished_at"] or ""), reverse=True)
    return {"dataset": name, "jobs": jobs, "runs": runs}
