"""What the control plane stores, as the faces and the monitor exchange it (pydantic, JSON-ready)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RunRecord", "RunStatus", "MonitoringResult", "Alert", "RetrainDecision"]

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
    action: Literal["retrain", "skip"]
    reason: str
    run_id: str | None = None
    details: dict[str, Any] = {}
