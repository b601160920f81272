"""The record of a rollout: its state and every decision with its evidence.

``<root>/rollouts/<env>/<name>.json`` holds one :class:`RolloutState` — the versions, the policy, the
phase, the canary's share and every :class:`Decision` (start, hold, advance, promote, rollback and manual
ones) with both sides' metric values, the thresholds, the step and the time — written atomically through
:class:`skiff.storage.Store`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.rollout.verdict import Check
from skiff.errors import InputError, NotFoundError
from skiff.layout import ROLLOUTS
from skiff.rollout_policy import RolloutPolicy
from skiff.storage import Store

__all__ = ["Decision", "RolloutState", "RolloutStore", "TERMINAL_PHASES"]

TERMINAL_PHASES = ("promoted", "rolled_back", "aborted")


class Decision(BaseModel):
    """One decision of a rollout with its evidence."""

    model_config = ConfigDict(extra="forbid")

    at: str
    ts: float
    step: int = Field(description="Canary percent the decision was taken at.")
    action: Literal["start", "hold", "advance", "promote", "rollback", "manual-promote", "manual-rollback"]
    canary_percent: int = Field(description="Canary percent after the decision.")
    reason: str
    evidence: dict[str, Any] = Field(default_factory=dict, description="Both sides' metrics and the window.")
    checks: list[Check] = Field(default_factory=list)
    thresholds: dict[str, float] = Field(default_factory=dict)
    traffic: dict[str, Any] = Field(default_factory=dict, description="What the actuator observed.")


class RolloutState(BaseModel):
    """The state file of one rollout."""

    model_config = ConfigDict(extra="forbid")

    id: str
    model: str
    env: str
    stable_version: str
    canary_version: str
    phase: Literal["running", "promoted", "rolled_back", "aborted"]
    canary_percent: int = 0
    target: dict[str, Any] = Field(default_factory=dict)
    policy: RolloutPolicy
    started_at: str
    updated_at: str
    finished_at: str | None = None
    reason: str = ""
    decisions: list[Decision] = Field(default_factory=list)


class RolloutStore:
    """``<root>/rollouts/<env>/<name>.json`` on a :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def _parts(env: str, model: str) -> tuple[str, str, str]:
        return (ROLLOUTS, env, f"{model}.json")

    def load(self, env: str, model: str) -> RolloutState | None:
        parts = self._parts(env, model)
        if not self.store.exists(*parts):
            return None
        try:
            return RolloutState.model_validate(self.store.read_json(*parts))
        except ValueError as e:
            raise InputError(f"{self.store.uri(*parts)}: not a valid rollout state: {e}") from e

    def get(self, env: str, model: str) -> RolloutState:
        state = self.load(env, model)
        if state is None:
            raise NotFoundError(f"no rollout of {model!r} in {env!r} ({self.store.uri(*self._parts(env, model))})")
        return state

    def save(self, state: RolloutState) -> str:
        return self.store.write_json(state.model_dump(mode="json"), *self._parts(state.env, state.model))

    @contextlib.contextmanager
    def lock(self, env: str, model: str) -> Iterator[None]:
        """Serialise decisions on one rollout (the controller's steps and manual ones).

        A file lock on local stores; object stores have none, so there run one controller per rollout
        and take manual decisions only when it has stopped.
        """
        if not self.store.is_local:
            yield
            return
        import fcntl

        path = self.store.local_path(ROLLOUTS, env, f".{model}.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
