"""What the control plane stores, as the faces and the monitor exchange it (pydantic, JSON-ready)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RunRecord", "RunStatus", "MonitoringResult", "Alert", "RetrainDecision", "GroundTruthLabel",
           "PerformanceResult"]

RunStatus = Literal["queued", "running", "succeeded", "failed", "gate_failed"]


class RunRecord(BaseModel):
    """A run as the API reports it; ``summary`` is set when it has finished. Times are ISO 8601 UTC."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    pipeline: str
    status: RunStatus
    submitted_at: str
    started_at: str | None = None
    finished_at: str | None = None
    steps: dict[str, str] = {}
    error: str | None = None
    summary: dict[str, Any] | None = None


class MonitoringResult(BaseModel):
    """One score of one window of a model version's traffic."""

    model_config = ConfigDict(extra="forbid")

    model: str
    version: int
    window_start: str
    window_end: str
    kind: Literal["feature_drift", "prediction_drift"]
    feature: str = Field(default="", description="The feature; empty for a whole-window score.")
    metric: Literal["psi", "linf", "js"]
    value: float
    threshold: float | None = None
    drifted: bool
    rows: int
    computed_at: str = ""
    details: dict[str, Any] = {}


class Alert(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int | None = None
    model: str
    version: int | None = None
    kind: str
    severity: Literal["info", "warning", "critical"] = "warning"
    message: str
    value: float | None = None
    threshold: float | None = None
    fired_at: str = ""
    resolved_at: str | None = None
    details: dict[str, Any] = {}


class RetrainDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int | None = None
    model: str
    version: int | None = None
    decided_at: str = ""
    #: ``retrain``/``skip`` (the policy's decision), then the steps of a retrain: ``challenger`` (the run's
    #: registered version and the gate's verdict), ``promote`` (deployed as a canary), ``no_promote`` (the gate
    #: kept the champion), ``failed`` (a step failed; the reason says which)
    action: Literal["retrain", "skip", "challenger", "promote", "no_promote", "failed"]
    reason: str
    run_id: str | None = None
    details: dict[str, Any] = {}


class GroundTruthLabel(BaseModel):
    """A label of one logged prediction (request id and row), posted after the fact."""

    model_config = ConfigDict(extra="forbid")

    model: str
    request_id: str
    row: int = 0
    label: str
    received_at: str = ""
    source: str = "api"


class PerformanceResult(BaseModel):
    """One performance metric of one window of a version's labeled traffic, with its 95% interval."""

    model_config = ConfigDict(extra="forbid")

    model: str
    version: int
    window_start: str
    window_end: str
    metric: Literal["accuracy", "roc_auc", "rmse"]
    value: float
    ci_low: float
    ci_high: float
    baseline: float | None = Field(default=None, description="The version's held-out test value.")
    floor: float | None = Field(default=None, description="The floor (RMSE: ceiling) the window is held to.")
    decayed: bool = Field(description="The whole interval is on the wrong side of the floor.")
    labeled: int = Field(description="Logged rows with a label (the metric's sample).")
    logged: int = Field(description="Logged rows of the window.")
    computed_at: str = ""
    details: dict[str, Any] = {}
