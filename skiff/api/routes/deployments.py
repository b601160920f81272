"""``/environments``: the GitOps environment files (which version runs where), promotions, rollbacks,
and the state of canary rollouts. Edits are the same as ``skiff promote``'s (the gate is checked)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from serving.deploy.gitops import EnvironmentConfig, Environments, ModelDeployment, PromotionResult
from serving.rollout.store import RolloutState, RolloutStore
from skiff.api.deps import ApiContext, EnvParam, NameParam, context, require_admin, require_read
from skiff.api.errors import declare
from skiff.locks import locks_for
from skiff.registry import ModelRegistry
from skiff.storage import Store
from skiff.versions import VersionRef

__all__ = ["router"]

router = APIRouter(prefix="/environments", tags=["deployments"])


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: VersionRef = Field(description="A version number (an integer, or ASCII digits without sign, spaces "
                                "or leading zeros), 'latest' or 'champion'.")
    canary_percent: int | None = Field(default=None, ge=0, le=100,
                                       description="Deploy as a canary with this share of traffic.")
    force: bool = Field(default=False, description="Deploy a version whose gate did not pass (needs a reason).")
    reason: str | None = Field(default=None, max_length=500, description="Why; recorded in the history.")


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500, description="Why; recorded in the history.")


def _envs(ctx: ApiContext) -> Environments:
    return Environments(ctx.environments, locks=locks_for(ctx.settings))  # the registry's kind of lock


@router.get("", response_model=list[EnvironmentConfig], dependencies=[Depends(require_read)])
def list_environments(ctx: Annotated[ApiContext, Depends(context)]) -> list[EnvironmentConfig]:
    """Every environment (``<environments>/<env>/environment.yaml``)."""
    envs = _envs(ctx)
    return [envs.environment(n) for n in envs.names()]


@router.get("/{env}/deployments", response_model=list[ModelDeployment], dependencies=[Depends(require_read)],
            responses=declare(404, 422))
def list_deployments(env: EnvParam, ctx: Annotated[ApiContext, Depends(context)]) -> list[ModelDeployment]:
    """What runs in an environment: each model's stable version, canary and history."""
    return _envs(ctx).deployments(env)


@router.get("/{env}/deployments/{name}", response_model=ModelDeployment, dependencies=[Depends(require_read)],
            responses=declare(404, 422))
def get_deployment(env: EnvParam, name: NameParam, ctx: Annotated[ApiContext, Depends(context)]) -> ModelDeployment:
    return _envs(ctx).deployment(env, name)


@router.post("/{env}/deployments/{name}/promote", response_model=PromotionResult,
             dependencies=[Depends(require_admin)], responses=declare(400, 403, 404, 422, 503))
def promote(env: EnvParam, name: NameParam, body: PromoteRequest,
            ctx: Annotated[ApiContext, Depends(context)]) -> PromotionResult:
    """Run a version (or a canary of it) in an environment; 422 when its gate did not pass and no force."""
    with ctx.write_lock:
        result: PromotionResult = _envs(ctx).promote(
            ModelRegistry.from_settings(ctx.settings), env, name, body.version,
            canary_percent=body.canary_percent, force=body.force, reason=body.reason)
        return result


@router.post("/{env}/deployments/{name}/rollback", response_model=PromotionResult,
             dependencies=[Depends(require_admin)], responses=declare(400, 403, 404, 422, 503))
def rollback(env: EnvParam, name: NameParam, body: RollbackRequest,
             ctx: Annotated[ApiContext, Depends(context)]) -> PromotionResult:
    """Run the version that ran before the current one (from the model file's history)."""
    with ctx.write_lock:
        result: PromotionResult = _envs(ctx).rollback(ModelRegistry.from_settings(ctx.settings), env, name,
                                                      reason=body.reason)
        return result


@router.get("/{env}/rollouts/{name}", response_model=RolloutState, dependencies=[Depends(require_read)],
            responses=declare(404, 422, 503))
def rollout_state(env: EnvParam, name: NameParam, ctx: Annotated[ApiContext, Depends(context)]) -> RolloutState:
    """A canary rollout's phase and every decision with its evidence (``skiff rollout status``)."""
    return RolloutStore(Store(ctx.settings.root, ctx.settings.storage_options)).get(env, name)
