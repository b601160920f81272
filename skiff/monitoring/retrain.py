"""The retrain policy of a model: when serving drift, performance decay or a schedule starts its pipeline on
the newest data, and what happens to the challenger.

The policy lives in a GitOps environment file, per model, under ``retrain:``
(``serving.deploy.gitops.EnvironmentConfig.retrain``; the environment whose file holds it is where a
winning challenger lands as a canary — put it in the lowest environment, e.g. ``dev``)::

    retrain:
      churn:
        pipeline: tabular          # the pipeline to run (on the model's dataset spec)
        on: [drift, decay]         # triggers; add "schedule" with schedule_hours
        min_drifted_features: 1
        schedule_hours: 168        # with the schedule trigger (the default: weekly)
        cooldown_hours: 6          # no second start within this many hours of the last one
        max_per_day: 2             # at most this many starts in any 24 hours
        canary_percent: 10         # the winner's first share of traffic
        labels_dataset: churn-labels  # optional: the ingested labels dataset the decay monitor joins

:func:`decide` is pure: from the monitored windows, the earlier decisions and a clock it returns one
:class:`~skiff.control_plane.RetrainDecision` (``retrain`` with the triggers as its reason, or ``skip``
saying why: no trigger, a cool-down, the daily maximum). :func:`carry_out` then runs the steps through
the :class:`RetrainActions` seam the caller provides (``skiff monitor run --act``: kfp.local and the
GitOps promote code) and records every step in the control plane with its reason: the decision, the
pipeline run (``challenger``: the registered version and the gate's verdict, or ``failed``), and the
promotion (``promote``: the canary; ``no_promote``: the gate kept the champion).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from skiff.control_plane import ControlPlane, RetrainDecision
from skiff.errors import ConfigError, SkiffError

__all__ = ["RetrainPolicy", "Trigger", "Evidence", "RetrainActions", "ChallengerRun", "decide", "carry_out",
           "parse_policies"]

Trigger = Literal["drift", "decay", "schedule"]
_DEFAULT_TRIGGERS: list[Trigger] = ["drift", "decay"]
_YEAR_HOURS = 24 * 366


class RetrainPolicy(BaseModel):
    """When a model is retrained, and how its challenger is deployed (see the module)."""

    model_config = ConfigDict(extra="forbid")

    pipeline: str = Field(default="tabular", description="The pipeline to run (skiff run's names).")
    dataset: str | None = Field(default=None, description="The dataset spec to run it on (default: the one the "
                                "served version was trained on).")
    on: list[Trigger] = Field(default_factory=lambda: _DEFAULT_TRIGGERS.copy(), min_length=1,
                              description="What starts a retrain: drift, decay, schedule.")
    min_drifted_features: int = Field(default=1, ge=1, description="Drifted features (or the predictions) a "
                                      "window needs to count as drift.")
    schedule_hours: float = Field(default=168.0, gt=0, le=_YEAR_HOURS, description="With the schedule trigger: "
                                  "retrain when the last start is this many hours old (default: weekly).")
    cooldown_hours: float = Field(default=6.0, ge=0, le=_YEAR_HOURS,
                                  description="No start within this many hours of the last.")
    max_per_day: int = Field(default=2, ge=1, le=1000, description="At most this many starts in any 24 hours.")
    canary_percent: int = Field(default=10, ge=0, le=100, description="The winner's first share of traffic.")
    labels_dataset: str | None = Field(default=None, description="The ingested labels dataset the decay "
                                       "monitor joins (posted labels are always used).")
    params: dict[str, Any] = Field(default_factory=dict, description="Extra pipeline parameters.")

    @field_validator("params", mode="before")
    @classmethod
    def _plain(cls, v: Any) -> Any:
        # plain JSON values: an environment file read round-trip gives ruamel's mapping types, which the
        # pipeline's parameters refuse; anything not JSON is refused here with the field's name
        try:
            return json.loads(json.dumps(v))
        except (TypeError, ValueError):
            raise ValueError("params must be JSON values (numbers, text, lists, mappings)") from None


def parse_policies(raw: Any, origin: str) -> dict[str, RetrainPolicy]:
    """The ``retrain:`` block of an environment file (model -> policy); a :class:`ConfigError` naming the
    file, the model and the field otherwise."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{origin}: retrain must map model names to policies")
    out = {}
    for model, body in raw.items():
        try:
            out[str(model)] = RetrainPolicy.model_validate(body)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise ConfigError(f"{origin}: retrain.{model}{'.' + where if where else ''}: {first.get('msg')}") from None
    return out


@dataclass(frozen=True)
class Evidence:
    """What the monitor saw, the input of :func:`decide`: drifted windows (end time, version, the drifted
    features) and decayed windows (end time, version, the decayed metrics)."""

    drift: Sequence[tuple[str, int, Sequence[str]]] = ()
    decay: Sequence[tuple[str, int, Sequence[str]]] = ()


def _ts(iso: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(iso)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def decide(policy: RetrainPolicy, model: str, evidence: Evidence, history: Sequence[RetrainDecision], *,
           now: dt.datetime, version: int | None = None) -> RetrainDecision:
    """Whether to retrain ``model`` now. Only windows that ended after the last start count (a start already
    answered the evidence before it); ``history`` is the model's earlier decisions (any order)."""
    starts = sorted((_ts(d.decided_at) for d in history if d.action == "retrain" and d.decided_at), reverse=True)
    last = starts[0] if starts else None
    triggers: list[str] = []
    details: dict[str, Any] = {"policy": policy.model_dump(), "last_start": last.isoformat() if last else None}
    if "drift" in policy.on:
        hits = [(end, v, feats) for end, v, feats in evidence.drift
                if len(feats) >= policy.min_drifted_features and (last is None or _ts(end) > last)]
        if hits:
            end, v, feats = hits[-1]
            triggers.append(f"drift: {len(hits)} window(s), latest ending {end} (version {v}: {', '.join(feats)})")
            details["drift_windows"] = len(hits)
    if "decay" in policy.on:
        hits = [(end, v, m) for end, v, m in evidence.decay if m and (last is None or _ts(end) > last)]
        if hits:
            end, v, metrics = hits[-1]
            triggers.append(f"decay: {len(hits)} window(s) below the floor, latest ending {end} "
                            f"(version {v}: {', '.join(metrics)})")
            details["decay_windows"] = len(hits)
    due = last is None or now - last >= dt.timedelta(hours=policy.schedule_hours)
    if "schedule" in policy.on and due:
        triggers.append(f"schedule: every {policy.schedule_hours:g} h, last start "
                        f"{last.isoformat() if last else 'never'}")
    details["triggers"] = triggers
    stamp = now.astimezone(dt.UTC).isoformat(timespec="seconds")
    if not triggers:
        return RetrainDecision(model=model, version=version, decided_at=stamp, action="skip",
                               reason="no trigger: no drifted or decayed window since the last start"
                               + (", schedule not due" if "schedule" in policy.on else ""), details=details)
    if last is not None and now - last < dt.timedelta(hours=policy.cooldown_hours):
        until = (last + dt.timedelta(hours=policy.cooldown_hours)).isoformat(timespec="seconds")
        return RetrainDecision(model=model, version=version, decided_at=stamp, action="skip",
                               reason=f"cool-down until {until} ({'; '.join(triggers)})", details=details)
    recent = [s for s in starts if now - s < dt.timedelta(hours=24)]
    if len(recent) >= policy.max_per_day:
        return RetrainDecision(model=model, version=version, decided_at=stamp, action="skip",
                               reason=f"maximum of {policy.max_per_day} start(s) in 24 h reached "
                               f"({'; '.join(triggers)})", details=details)
    return RetrainDecision(model=model, version=version, decided_at=stamp, action="retrain",
                           reason="; ".join(triggers), details=details)


@dataclass
class ChallengerRun:
    """What a retrain pipeline run produced."""

    run_id: str
    status: str
    version: int | None = None
    #: the champion/challenger gate's verdict on ``version``
    promoted_by_gate: bool = False
    gate_reason: str = ""
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class RetrainActions(Protocol):
    """The two effects of a retrain, provided by the caller (a face wires the pipeline runner and the
    GitOps promote code; tests wire whatever they check)."""

    def start_pipeline(self, model: str, policy: RetrainPolicy, reason: str) -> ChallengerRun: ...

    def promote_canary(self, model: str, version: int, percent: int, reason: str) -> dict[str, Any]: ...


def carry_out(store: ControlPlane, decision: RetrainDecision, policy: RetrainPolicy,
              actions: RetrainActions) -> list[RetrainDecision]:
    """Record ``decision`` and, when it is a retrain, run the pipeline and promote a winner as a canary;
    every step is recorded with its reason. Returns the recorded steps, in order."""
    steps = [store.add_retrain_decision(decision)]
    if decision.action != "retrain":
        return steps
    model = decision.model
    try:
        run = actions.start_pipeline(model, policy, decision.reason)
    except SkiffError as e:
        steps.append(store.add_retrain_decision(RetrainDecision(
            model=model, version=decision.version, action="failed", reason=f"the pipeline did not start: {e.message}",
            details={"decision": steps[0].id})))
        return steps
    run_details = {"decision": steps[0].id, "status": run.status, **run.details}
    if run.version is None:
        steps.append(store.add_retrain_decision(RetrainDecision(
            model=model, version=decision.version, action="failed", run_id=run.run_id,
            reason=f"pipeline run {run.run_id} ended {run.status} without a registered version"
            + (f": {run.error.splitlines()[0]}" if run.error else ""), details=run_details)))
        return steps
    verdict = "won" if run.promoted_by_gate else "lost"
    steps.append(store.add_retrain_decision(RetrainDecision(
        model=model, version=run.version, action="challenger", run_id=run.run_id,
        reason=f"version {run.version} {verdict} the champion/challenger gate: {run.gate_reason}",
        details=run_details)))
    if not run.promoted_by_gate:
        steps.append(store.add_retrain_decision(RetrainDecision(
            model=model, version=run.version, action="no_promote", run_id=run.run_id,
            reason="the gate kept the champion; nothing deployed", details={"decision": steps[0].id})))
        return steps
    try:
        result = actions.promote_canary(model, run.version, policy.canary_percent,
                                        f"retrain: {decision.reason}"[:500])
    except SkiffError as e:
        steps.append(store.add_retrain_decision(RetrainDecision(
            model=model, version=run.version, action="failed", run_id=run.run_id,
            reason=f"the canary of version {run.version} was not deployed: {e.message}",
            details={"decision": steps[0].id})))
        return steps
    steps.append(store.add_retrain_decision(RetrainDecision(
        model=model, version=run.version, action="promote", run_id=run.run_id,
        reason=f"version {run.version} deployed as a {policy.canary_percent}% canary"
        + (f" in {result['env']}" if result.get("env") else ""), details={"decision": steps[0].id, **result})))
    return steps
