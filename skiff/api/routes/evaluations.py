"""``/models/{name}/versions/{version}/evaluations``: evaluate a registered version on a lake partition in
the background (:func:`skiff.monitoring.evaluation.evaluate_partition`), and poll the result."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from skiff.api.deps import ApiContext, NameParam, context, require_admin, require_read
from skiff.api.errors import declare
from skiff.api.routes._jobs import new_job_id, start_job
from skiff.control_plane import RunRecord
from skiff.errors import NotFoundError
from skiff.identifiers import NAME_RE
from skiff.registry import ModelRegistry
from skiff.versions import VERSION_PATTERN, parse_version

__all__ = ["router"]

router = APIRouter(prefix="/models", tags=["evaluations"])

#: checked by :func:`skiff.versions.parse_version` (400 naming the rule), as the models routes do
VersionPath = Annotated[str, PathParam(description="A version number, 'latest' or 'champion'.",
                                       json_schema_extra={"pattern": VERSION_PATTERN})]
DateText = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")]


class EvaluationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str | None = Field(default=None, pattern=NAME_RE, description="The dataset (default: the one the "
                                "version was trained on).")
    partitions: list[DateText] | None = Field(default=None, min_length=1, max_length=366,
                                              description="Ingest dates (YYYY-MM-DD; default: the latest "
                                              "partition).")


@router.post("/{name}/versions/{version}/evaluations", status_code=202, response_model=RunRecord,
             dependencies=[Depends(require_admin)], responses=declare(400, 403, 404, 409, 422, 503))
def start_evaluation(name: NameParam, version: VersionPath, body: EvaluationRequest, request: Request,
                     ctx: Annotated[ApiContext, Depends(context)]) -> RunRecord:
    """Evaluate the version on a partition in the background; the result (metrics beside its test metrics)
    is the summary of ``GET /models/{name}/evaluations/{id}``. Admin."""
    from skiff.monitoring.evaluation import evaluate_partition

    mv = ModelRegistry.from_settings(ctx.settings).get(name, parse_version(version, what="path.version"))
    settings = ctx.settings

    def work() -> dict[str, Any]:
        return evaluate_partition(settings, name, mv.version, dataset=body.dataset, dates=body.partitions)

    return start_job(request.app, ctx.runs.store, new_job_id("evaluate"), f"evaluate:{name}", work)


@router.get("/{name}/evaluations/{job_id}", response_model=RunRecord, dependencies=[Depends(require_read)],
            responses=declare(404, 422))
def get_evaluation(name: NameParam, job_id: str, ctx: Annotated[ApiContext, Depends(context)]) -> RunRecord:
    """An evaluation's status and, once finished, its metrics."""
    rec = ctx.runs.store.get_run(job_id)
    if rec.pipeline != f"evaluate:{name}":
        raise NotFoundError(f"no evaluation {job_id!r} of model {name!r}")
    return rec
