"""A step's verdict: the canary judged against the stable version within a :class:`RolloutPolicy`.

Once both sides have answered ``min_requests`` in a step, each check (5xx share, p99 latency, quality
where labels are fed back) compares the canary with the stable version within the policy's tolerances:
no check finds the canary worse, the step passes; one does, it fails; too few requests, it waits.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from serving.rollout.measurements import Measurement
from skiff.rollout_policy import RolloutPolicy

__all__ = ["Check", "Verdict", "judge"]


class Check(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["requests", "error_rate", "p99_latency", "quality"]
    status: Literal["pass", "fail", "wait", "skipped"]
    stable: float | None = None
    canary: float | None = None
    limit: float | None = None
    note: str = ""


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["pass", "fail", "wait"]
    checks: list[Check]
    reason: str


def judge(m: Measurement, policy: RolloutPolicy) -> Verdict:
    """Judge a step: wait for enough requests, then pass only if no check finds the canary worse."""
    s, c = m.stable, m.canary
    checks: list[Check] = []
    enough = s.requests >= policy.min_requests and c.requests >= policy.min_requests
    checks.append(Check(name="requests", status="pass" if enough else "wait", stable=s.requests,
                        canary=c.requests, limit=policy.min_requests,
                        note="" if enough else f"waiting for {policy.min_requests} requests on each side"))
    if not enough:
        return Verdict(status="wait", checks=checks, reason=checks[0].note)

    se, ce = s.error_rate or 0.0, c.error_rate or 0.0
    limit = se + policy.max_error_rate_delta
    checks.append(Check(name="error_rate", status="pass" if ce <= limit + 1e-12 else "fail", stable=se,
                        canary=ce, limit=limit,
                        note=f"canary 5xx share {ce:.4f} vs stable {se:.4f} (+{policy.max_error_rate_delta})"))

    if s.p99_seconds is None or c.p99_seconds is None:
        checks.append(Check(name="p99_latency", status="skipped", stable=s.p99_seconds, canary=c.p99_seconds,
                            note="no latency histogram on one side"))
    else:
        limit = s.p99_seconds * policy.max_p99_ratio + policy.p99_slack_seconds
        checks.append(Check(name="p99_latency", status="pass" if c.p99_seconds <= limit else "fail",
                            stable=s.p99_seconds, canary=c.p99_seconds, limit=limit,
                            note=f"canary p99 {c.p99_seconds * 1000:.1f} ms vs stable "
                                 f"{s.p99_seconds * 1000:.1f} ms (x{policy.max_p99_ratio} + "
                                 f"{policy.p99_slack_seconds * 1000:.0f} ms)"))

    if (s.quality is None or c.quality is None or s.labelled < policy.min_labels
            or c.labelled < policy.min_labels):
        checks.append(Check(name="quality", status="skipped", stable=s.quality, canary=c.quality,
                            note=f"fewer than {policy.min_labels} labelled predictions on a side "
                                 f"(stable {s.labelled}, canary {c.labelled})"))
    else:
        limit = s.quality - policy.max_quality_drop
        checks.append(Check(name="quality", status="pass" if c.quality >= limit else "fail",
                            stable=s.quality, canary=c.quality, limit=limit,
                            note=f"canary quality {c.quality:.4f} vs stable {s.quality:.4f} "
                                 f"(-{policy.max_quality_drop})"))

    failed = [ch for ch in checks if ch.status == "fail"]
    if failed:
        return Verdict(status="fail", checks=checks, reason="canary worse: " + "; ".join(ch.note for ch in failed))
    return Verdict(status="pass", checks=checks, reason="canary no worse than stable")
