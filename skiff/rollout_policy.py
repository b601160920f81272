"""The canary rollout policy: how a new model version earns its traffic.

One contract read in several places: the ``rollout:`` block of a GitOps environment file
(``serving.deploy.gitops.EnvironmentConfig``), ``skiff rollout start --policy FILE`` and its flags, the
Helm chart's ``rollout.policy`` values, and the rollout controller and its verdicts
(``serving.rollout``), which record it in every rollout state. It lives in the core so that the
deployment files and the controller share it without depending on each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from skiff.errors import UsageError

__all__ = ["RolloutPolicy"]


class RolloutPolicy(BaseModel):
    """How a canary earns its traffic."""

    model_config = ConfigDict(extra="forbid")

    steps: list[int] = Field(
        default_factory=lambda: [10, 50, 100],
        description="Canary traffic percentages, increasing, ending at 100 (full promotion).",
    )
    min_requests: int = Field(
        default=200, ge=1,
        description="Requests each side must have answered in a step before it is judged. The p99 of fewer "
        "than 100 requests is their maximum (one cold request decides it): keep this in the hundreds.",
    )
    max_error_rate_delta: float = Field(
        default=0.01, ge=0, le=1,
        description="Largest allowed excess of the canary's 5xx share over the stable one's (0.01 = 1 point).",
    )
    max_p99_ratio: float = Field(default=1.5, gt=0, description="Largest allowed canary p99 / stable p99.")
    p99_slack_seconds: float = Field(
        default=0.01, ge=0,
        description="Absolute p99 slack: a canary p99 up to ratio × stable p99 + this is not worse "
        "(sub-bucket noise on fast models).",
    )
    max_quality_drop: float = Field(
        default=0.02, ge=0, description="Largest allowed drop of the quality metric (e.g. accuracy)."
    )
    min_labels: int = Field(
        default=50, ge=1, description="Labelled feedback rows each side needs before quality is compared."
    )
    interval: float = Field(default=30.0, gt=0, description="Seconds between two measurements.")
    timeout: float = Field(
        default=900.0, gt=0,
        description="Seconds one step may wait for min_requests; past it the canary is rolled back.",
    )

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("at least one step")
        if any(not 0 < s <= 100 for s in v):
            raise ValueError(f"steps must be between 1 and 100, got {v}")
        if any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError(f"steps must increase, got {v}")
        if v[-1] != 100:
            raise ValueError(f"the last step must be 100 (full promotion), got {v}")
        return v

    def with_overrides(self, overrides: Mapping[str, Any] | None = None, **flags: Any) -> RolloutPolicy:
        """This policy with a policy file's fields over it, then the flags that were given (``None``: not
        given) — the order ``skiff rollout start --policy FILE --steps ...`` applies them in."""
        data = self.model_dump()
        data.update(overrides or {})
        data.update({k: v for k, v in flags.items() if v is not None})
        try:
            return RolloutPolicy.model_validate(data)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'policy'}: {err['msg']}" for err in e.errors())
            raise UsageError(f"invalid rollout policy: {problems}") from e

    def thresholds(self) -> dict[str, float]:
        return {
            "min_requests": self.min_requests,
            "max_error_rate_delta": self.max_error_rate_delta,
            "max_p99_ratio": self.max_p99_ratio,
            "p99_slack_seconds": self.p99_slack_seconds,
            "max_quality_drop": self.max_quality_drop,
            "min_labels": self.min_labels,
        }
