"""``/environments``: the GitOps environment files (which version runs where), promotions, rollbacks,
the state of canary rollouts, each model's retrain policy, and predictions through the control plane.
Edits are the same as ``skiff promote``'s (the gate is checked).

``POST /environments/{env}/deployments/{name}/predict`` forwards the request body (a V1 ``instances`` or a
V2 inference request) to the model's server: the environment's ``predict_url`` (a local ``skiff serve``)
or its InferenceService endpoint, with httpx and a timeout. The upstream's JSON answer comes back with its
status when it is 2xx or 4xx (the caller's request was refused: its reason is the server's); an upstream
that cannot be reached or answers 5xx or no JSON is a 502, one that does not answer in time a 504, each with
the JSON error body; never a 500."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from serving.deploy.gitops import EnvironmentConfig, Environments, ModelDeployment, PromotionResult
from serving.rollout.store import RolloutState, RolloutStore
from skiff.api.deps import ApiContext, EnvParam, NameParam, context, require_admin, require_read
from skiff.api.errors import ErrorBody, declare, error_response
from skiff.locks import locks_for
from skiff.monitoring.retrain import RetrainPolicy
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


class RetrainPolicyState(BaseModel):
    env: str
    model: str
    policy: RetrainPolicy | None = Field(description="The policy; None when the model has none here.")


@router.get("/{env}/retrain-policies/{name}", response_model=RetrainPolicyState,
            dependencies=[Depends(require_read)], responses=declare(404, 422))
def get_retrain_policy(env: EnvParam, name: NameParam, ctx: Annotated[ApiContext, Depends(context)]) -> dict[str, Any]:
    """The model's retrain policy in the environment file (``retrain:``); ``policy`` is null without one."""
    return {"env": env, "model": name, "policy": _envs(ctx).environment(env).retrain.get(name)}


@router.put("/{env}/retrain-policies/{name}", response_model=RetrainPolicyState,
            dependencies=[Depends(require_admin)], responses=declare(400, 403, 404, 422))
def put_retrain_policy(env: EnvParam, name: NameParam, body: RetrainPolicy,
                       ctx: Annotated[ApiContext, Depends(context)]) -> dict[str, Any]:
    """Set the model's retrain policy in the environment file (comments kept). Admin."""
    with ctx.write_lock:
        cfg = _envs(ctx).set_retrain_policy(env, name, body)
    return {"env": env, "model": name, "policy": cfg.retrain.get(name)}


@router.delete("/{env}/retrain-policies/{name}", response_model=RetrainPolicyState,
               dependencies=[Depends(require_admin)], responses=declare(403, 404, 422))
def delete_retrain_policy(env: EnvParam, name: NameParam, ctx: Annotated[ApiContext, Depends(context)]
                          ) -> dict[str, Any]:
    """Remove the model's retrain policy from the environment file. Admin."""
    with ctx.write_lock:
        _envs(ctx).set_retrain_policy(env, name, None)
    return {"env": env, "model": name, "policy": None}


def _upstream(ctx: ApiContext, env: str, name: str) -> str:
    from serving.deploy.isvc import isvc_name

    envs = _envs(ctx)
    cfg = envs.environment(env)
    envs.deployment(env, name)  # 404 when the model is not deployed there
    base = cfg.predict_url.rstrip("/") if cfg.predict_url else cfg.endpoint(isvc_name(name))
    return f"{base}/v1/models/{name}:predict"


@router.post("/{env}/deployments/{name}/predict", dependencies=[Depends(require_read)],
             response_model=dict[str, Any],
             responses={**declare(400, 404, 422, 502, 503),
                        504: {"model": ErrorBody, "description": "The model server did not answer in time."}})
async def predict(env: EnvParam, name: NameParam, ctx: Annotated[ApiContext, Depends(context)],
                  body: Annotated[dict[str, Any], Body(description="A V1 request ({\"instances\": [...]}) as the "
                                                       "model server takes it.")],
                  timeout_s: Annotated[float, Query(gt=0, le=120, description="Upstream timeout.")] = 10.0,
                  ) -> JSONResponse:
    """A prediction from the model deployed in ``env``, for clients that only know the control plane."""
    import httpx

    url = _upstream(ctx, env, name)
    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
            answer = await client.post(url, content=json.dumps(body), headers={"content-type": "application/json"})
    except httpx.TimeoutException:
        return error_response(504, f"the model server of {name} in {env} did not answer within {timeout_s:g} s",
                              error="UpstreamTimeout")
    except httpx.HTTPError as e:
        return error_response(502, f"the model server of {name} in {env} could not be reached "
                              f"({type(e).__name__})", error="UpstreamUnavailable")
    try:
        payload = answer.json()
    except ValueError:
        payload = None
    if answer.status_code >= 300 and answer.status_code < 400 or answer.status_code >= 500 \
            or not isinstance(payload, dict):
        return error_response(502, f"the model server of {name} in {env} answered {answer.status_code}"
                              + ("" if isinstance(payload, dict) else " without a JSON object"),
                              error="UpstreamError", detail={"upstream_status": answer.status_code})
    return JSONResponse(payload, status_code=answer.status_code)
