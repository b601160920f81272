"""``/pipelines``: list, compile to IR YAML, run locally (kfp.local) or submit to Kubeflow Pipelines.

Parameters are checked before anything starts (unknown parameter or estimator, bad spec: 4xx), exactly
as ``skiff run`` checks them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from skiff.api.deps import ApiContext, NameParam, context, require_admin, require_read
from skiff.api.runs import RunRecord

__all__ = ["router"]

router = APIRouter(prefix="/pipelines", tags=["pipelines"])


class PipelineInfo(BaseModel):
    name: str
    parameters: dict[str, str]


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Pipeline parameters (as `skiff run --param`); `spec` is a dataset spec mapping or the path "
        "of a spec file on the server.")
    host: str | None = Field(default=None, description="Kubeflow Pipelines endpoint: submit there. None: a "
                             "local run on the server (kfp.local), unless the settings name a kfp_host.")
    local: bool = Field(default=False, description="Run locally even when the settings name a kfp_host.")
    experiment: str = Field(default="skiff", description="KFP experiment (with a host).")
    run_name: str | None = Field(default=None, description="KFP run name (with a host).")


class Submitted(BaseModel):
    run_id: str
    host: str
    experiment: str
    pipeline: str


def _known() -> dict[str, dict[str, str]]:
    from pipelines.runner import PIPELINES
    from pipelines.tabular import PARAMETERS

    return {name: (PARAMETERS if name == "tabular" else {}) for name in PIPELINES}


@router.get("", response_model=list[PipelineInfo], dependencies=[Depends(require_read)])
def list_pipelines() -> list[dict[str, Any]]:
    """The pipelines and the parameters a run takes."""
    return [{"name": n, "parameters": p} for n, p in sorted(_known().items())]


@router.post("/{name}/compile", dependencies=[Depends(require_read)],
             response_class=Response, responses={200: {"content": {"application/yaml": {}}}})
def compile_pipeline(name: NameParam) -> Response:
    """The pipeline's KFP IR YAML (what a Kubeflow Pipelines backend runs)."""
    from pipelines import runner

    runner.get_pipeline(name)  # 400 for an unknown pipeline before compiling
    with tempfile.TemporaryDirectory(prefix="skiff-compile-") as tmp:
        text = runner.compile_pipeline(name, Path(tmp) / f"{name}.yaml").read_text()
    return Response(text, media_type="application/yaml")


@router.post("/{name}/runs", status_code=202, response_model=RunRecord | Submitted,
             dependencies=[Depends(require_admin)])
def start_run(name: NameParam, body: RunRequest, ctx: Annotated[ApiContext, Depends(context)]) -> Any:
    """Start a run: submitted to Kubeflow Pipelines with a host, else a local run in the background
    (poll ``GET /pipelines/runs/{run_id}``). Admin."""
    from pipelines import runner
    from skiff.cli.run import pipeline_arguments
    from skiff.errors import UsageError

    if body.local and body.host:
        raise UsageError("give local or host, not both")
    host = None if body.local else (body.host or ctx.settings.kfp_host)
    params = dict(body.params)
    if host:
        args = pipeline_arguments(name, params, ctx.settings, local=False)
        return runner.submit(name, args, host, body.experiment, body.run_name,
                             client_factory=ctx.kfp_client_factory)
    args = pipeline_arguments(name, params, ctx.settings, local=True)
    return ctx.runs.start(name, args)


@router.get("/runs/{run_id}", response_model=RunRecord, dependencies=[Depends(require_read)])
def get_run(run_id: str, ctx: Annotated[ApiContext, Depends(context)]) -> RunRecord:
    """A local run's status, its steps so far, and the run summary when it has finished."""
    return ctx.runs.get(run_id)
