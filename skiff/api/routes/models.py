"""``/models``: registered models, their versions and the champion."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from skiff.api.deps import ApiContext, NameParam, context, require_admin, require_read
from skiff.api.errors import declare
from skiff.registry import ChampionEntry, ModelRegistry, ModelVersion
from skiff.versions import VERSION_PATTERN, VersionNumber, parse_version

__all__ = ["router"]

router = APIRouter(prefix="/models", tags=["models"])

#: checked by :func:`skiff.versions.parse_version` (400 naming the rule); the pattern documents it
VersionPath = Annotated[str, PathParam(description="A version number, 'latest' or 'champion'.",
                                       json_schema_extra={"pattern": VERSION_PATTERN})]


class ModelSummary(BaseModel):
    name: str
    versions: list[int]
    latest: int
    champion: int | None


class ChampionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: VersionNumber = Field(description="The version to make the champion.")
    reason: str = Field(min_length=1, max_length=500, description="Why; recorded in the champion history.")


class ChampionChange(BaseModel):
    version: int
    previous: int | None
    reason: str
    at: str


def _registry(ctx: ApiContext) -> ModelRegistry:
    return ModelRegistry.from_settings(ctx.settings)


@router.get("", response_model=list[ModelSummary], dependencies=[Depends(require_read)], responses=declare(503))
def list_models(ctx: Annotated[ApiContext, Depends(context)]) -> list[dict[str, Any]]:
    """Every registered model with its version numbers, latest and champion."""
    reg = _registry(ctx)
    out = []
    for name in reg.models():
        nums = reg.version_numbers(name)
        out.append({"name": name, "versions": nums, "latest": nums[-1], "champion": reg.champion_version(name)})
    return out


@router.get("/{name}/versions", response_model=list[ModelVersion], dependencies=[Depends(require_read)],
            responses=declare(404, 422, 503))
def list_versions(name: NameParam, ctx: Annotated[ApiContext, Depends(context)]) -> list[ModelVersion]:
    """Every version of a model with its metadata (404 when the model has none)."""
    reg = _registry(ctx)
    reg.get(name, "latest")  # NotFoundError when the model has no versions
    return reg.versions(name)


@router.get("/{name}/versions/{version}", response_model=ModelVersion, dependencies=[Depends(require_read)],
            responses=declare(400, 404, 422, 503))
def get_version(name: NameParam, version: VersionPath, ctx: Annotated[ApiContext, Depends(context)]) -> ModelVersion:
    """One version: a number, ``latest`` or ``champion`` (anything else, ``01`` or `` 1 `` too: 400)."""
    return _registry(ctx).get(name, parse_version(version, what="path.version"))


@router.get("/{name}/champion/history", response_model=list[ChampionChange], dependencies=[Depends(require_read)],
            responses=declare(404, 422, 503))
def champion_history(name: NameParam, ctx: Annotated[ApiContext, Depends(context)]) -> list[ChampionEntry]:
    """Every change of champion with its reason."""
    reg = _registry(ctx)
    reg.get(name, "latest")
    return reg.champion_history(name)


@router.post("/{name}/champion", response_model=ChampionChange, dependencies=[Depends(require_admin)],
             responses=declare(400, 403, 404, 409, 422, 503))
def set_champion(name: NameParam, body: ChampionRequest,
                 ctx: Annotated[ApiContext, Depends(context)]) -> ChampionEntry:
    """Make a version the champion by hand (the pipeline's gate does this automatically). Admin."""
    with ctx.write_lock:
        return _registry(ctx).set_champion(name, body.version, body.reason)
