"""``/pipelines``: list, compile to IR YAML, run locally (kfp.local) or submit to Kubeflow Pipelines.

Parameters are checked before anything starts (unknown parameter or estimator, bad spec: 4xx), exactly
as ``skiff run`` checks them. A run names its spec (a dataset or a registered version), never a server
path (:mod:`skiff.api.run_specs`).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from skiff.api.deps import ApiContext, NameParam, context, require_admin, require_read
from skiff.api.errors import declare, declare_beside
from skiff.api.run_specs import RegisteredSpec, RemoteFileSource, resolve_spec
from skiff.api.runs import RunRecord
from skiff.control_plane import RunStatus
from skiff.identifiers import NAME_RE

__all__ = ["router"]

router = APIRouter(prefix="/pipelines", tags=["pipelines"])


class PipelineInfo(BaseModel):
    name: str
    parameters: dict[str, str]


class TabularParams(BaseModel):
    """Parameters of a ``tabular`` run (as ``skiff run --param``), minus what the server's settings give."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    spec: Annotated[str, Field(pattern=NAME_RE)] | RegisteredSpec = Field(
        description="A dataset name (its spec is <datasets_dir>/<name>.yaml on the server) or a registered "
        "version {model, version} (the spec it was trained on). Server paths and inline specs are refused.")
    sources: list[RemoteFileSource] | None = Field(
        default=None, max_length=64, description="Sources in place of the spec's: object-store URIs only.")
    model_name: str | None = Field(default=None, pattern=NAME_RE, description="Registered model name "
                                   "(default: the dataset name).")
    train_config: dict[str, Any] | None = Field(
        default=None, description="Training config: estimator, params, pca, cv_folds, search, imbalance, "
        "threshold_metric … (checked against the problem type before anything runs: 400).")
    estimator: str | None = Field(default=None, max_length=64, description="Shortcut for train_config.estimator.")
    metric: str | None = Field(default=None, max_length=64, description="Gate metric (default: the training "
                               "scoring metric).")
    margin: float | None = Field(default=None, ge=0, description="How much the challenger must beat the "
                                 "champion by on the gate metric.")
    drift_threshold: float | None = Field(default=None, ge=0, le=1, description="Default drift threshold.")
    feature_thresholds: dict[str, Annotated[float, Field(ge=0, le=1)]] | None = Field(
        default=None, description="Per-feature drift thresholds {column: value}.")
    warn_only: bool | None = Field(default=None, description="Validation never blocks.")
    ingest_date: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$",
                                    description="Partition date to ingest into (default: today).")
    lake_run: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$",
                                 description="A committed lake run id to validate and train on alone (default: "
                                             "the current spec's runs); nothing is ingested, so no sources.")

    @field_validator("spec", mode="before")
    @classmethod
    def _named(cls, v: Any) -> Any:
        # one clear message instead of one per union member; a path never reaches the disk
        if isinstance(v, str) and not re.fullmatch(NAME_RE, v):
            raise ValueError("a dataset name (letters, digits, '_' and '-', starting with a letter; its spec is "
                             "<datasets_dir>/<name>.yaml on the server) or {\"model\": NAME, \"version\": V}; "
                             "server paths are not accepted")
        if not isinstance(v, str | dict):
            raise ValueError("a dataset name or {\"model\": NAME, \"version\": V}")
        return v


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: TabularParams = Field(description="Pipeline parameters.")
    host: str | None = Field(default=None, pattern=r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[!-~]*)?$",
                             max_length=2048, description="Kubeflow Pipelines endpoint: submit there. None: the settings' "
                             "kfp_host, else a local run on the server (kfp.local).")
    experiment: str = Field(default="skiff", min_length=1, max_length=128, description="KFP experiment "
                            "(with a host).")
    run_name: str | None = Field(default=None, min_length=1, max_length=128, description="KFP run name "
                                 "(with a host).")


class Submitted(BaseModel):
    run_id: str
    host: str
    experiment: str
    pipeline: str


@router.get("", response_model=list[PipelineInfo], dependencies=[Depends(require_read)])
def list_pipelines() -> list[dict[str, Any]]:
    """The pipelines and the parameters a run takes."""
    from pipelines.definitions import PIPELINES

    return [{"name": d.name, "parameters": d.help()} for _, d in sorted(PIPELINES.items())]


@router.post("/{name}/compile", dependencies=[Depends(require_read)], response_class=Response,
             responses={200: {"content": {"application/yaml": {"schema": {"type": "string"}}},
                              "description": "KFP IR YAML."}, **declare_beside(401, 404, 413, 422, 500)})
def compile_pipeline(name: NameParam) -> Response:
    """The pipeline's KFP IR YAML (what a Kubeflow Pipelines backend runs)."""
    from pipelines import runner
    from pipelines.definitions import get_pipeline

    get_pipeline(name)  # 404 for an unknown pipeline before compiling
    with tempfile.TemporaryDirectory(prefix="skiff-compile-") as tmp:
        text = runner.compile_pipeline(name, Path(tmp) / f"{name}.yaml").read_text()
    return Response(text, media_type="application/yaml")


@router.post("/{name}/runs", status_code=202, response_model=RunRecord | Submitted,
             dependencies=[Depends(require_admin)], responses=declare(400, 403, 404, 409, 422, 502, 503))
def start_run(name: NameParam, body: RunRequest, ctx: Annotated[ApiContext, Depends(context)]) -> Any:
    """Start a run: submitted to Kubeflow Pipelines with a host, else a local run in the background
    (poll ``GET /pipelines/runs/{run_id}``). Admin."""
    from pipelines import runner
    from pipelines.definitions import get_pipeline

    definition = get_pipeline(name)
    params = body.params.model_dump(mode="json", exclude_none=True, exclude={"spec"})
    spec = resolve_spec(body.params.spec, ctx.settings)
    host = body.host or ctx.settings.kfp_host
    args = definition.arguments(spec, params, ctx.settings, local=not host)
    if host:
        return runner.submit(name, args, host, body.experiment, body.run_name,
                             client_factory=ctx.kfp_client_factory, target=runner.RunTarget.from_settings(ctx.settings))
    return ctx.runs.start(name, args)


@router.get("/runs/{run_id}", response_model=RunRecord, dependencies=[Depends(require_read)],
            responses=declare(404, 422))
def get_run(run_id: str, ctx: Annotated[ApiContext, Depends(context)]) -> RunRecord:
    """A local run's status, its steps so far, and the run summary when it has finished."""
    return ctx.runs.get(run_id)


@router.get("/runs", response_model=list[RunRecord], dependencies=[Depends(require_read)],
            responses=declare(422))
def list_runs(ctx: Annotated[ApiContext, Depends(context)],
              pipeline: Annotated[str | None, Query(pattern=NAME_RE, description="Only this pipeline's runs.")] = None,
              status: Annotated[RunStatus | None, Query(description="Only runs in this state.")] = None,
              limit: Annotated[int, Query(ge=1, le=1000, description="At most this many, newest first.")] = 100,
              ) -> list[RunRecord]:
    """The runs the control plane recorded (every API replica over one database sees the same), newest first."""
    return ctx.runs.list(pipeline=pipeline, status=status, limit=limit)
