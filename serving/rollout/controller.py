"""The canary rollout controller: metric-gated promotion step by step, automatic rollback.

A rollout moves a new (canary) version through traffic steps (10 → 50 → 100 by default). At each step it
measures both sides over the step's window (:mod:`serving.rollout.measurements`) and, once both sides have
seen ``min_requests``, judges the canary against the stable version within the tolerances of a
:class:`~skiff.rollout_policy.RolloutPolicy` (:mod:`serving.rollout.verdict`). No worse: the next step.
Worse, a measurement that fails, an actuator that fails, or a step that waits longer than ``timeout``
for its requests: the canary goes back to 0 % (the stable version serves everything again) and the
rollout ends as ``rolled_back``.

Two seams make the same controller run on a laptop and in a cluster: a
:class:`~serving.rollout.measurements.MetricsSource` (Prometheus, or scraping the local servers) and a
:class:`~serving.rollout.actuators.TrafficActuator` (KServe's ``canaryTrafficPercent``, or the local
canary router).

Every decision (start, hold, advance, promote, rollback, and manual ones) is recorded with its evidence
in the rollout's state file (:mod:`serving.rollout.store`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Literal

from serving.rollout.actuators import TrafficActuator
from serving.rollout.measurements import Measurement, MetricsSource
from serving.rollout.store import TERMINAL_PHASES, Decision, RolloutState, RolloutStore
from serving.rollout.verdict import Verdict, judge
from skiff.errors import ConflictError, SkiffError, UsageError
from skiff.rollout_policy import RolloutPolicy

__all__ = ["RolloutController", "manual_decision"]

log = logging.getLogger(__name__)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


class _Superseded(Exception):
    """A manual decision ended the rollout while the controller was running."""


class RolloutController:
    """Runs one rollout to its end (promoted or rolled back) and records every decision."""

    def __init__(
        self,
        *,
        model: str,
        env: str,
        stable_version: int | str,
        canary_version: int | str,
        policy: RolloutPolicy,
        metrics: MetricsSource,
        actuator: TrafficActuator,
        store: RolloutStore,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        replace: bool = False,
    ) -> None:
        if str(stable_version) == str(canary_version):
            raise UsageError(f"the canary version {canary_version} is the stable version")
        self.model, self.env = model, env
        self.stable_version, self.canary_version = str(stable_version), str(canary_version)
        self.policy, self.metrics, self.actuator, self.store = policy, metrics, actuator, store
        self.clock, self.sleep, self.replace = clock, sleep, replace
        self.state: RolloutState | None = None

    # -- recording ----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _decision(self) -> Iterator[None]:
        """One decision: under the rollout's lock, stop if a manual decision ended the rollout meanwhile,
        else act (move traffic), record, and save."""
        assert self.state is not None
        with self.store.lock(self.env, self.model):
            on_disk = self.store.load(self.env, self.model)
            if (on_disk is not None and on_disk.id == self.state.id and on_disk.phase in TERMINAL_PHASES
                    and self.state.phase == "running"):
                self.state = on_disk
                raise _Superseded
            yield
            self.state.updated_at = _iso(self.clock())
            self.store.save(self.state)

    def _record(self, action: str, step: int, reason: str, *, measurement: Measurement | None = None,
                verdict: Verdict | None = None, traffic: dict[str, Any] | None = None) -> Decision:
        assert self.state is not None
        now = self.clock()
        evidence: dict[str, Any] = {}
        if measurement is not None:
            evidence = {"stable": measurement.stable.evidence(), "canary": measurement.canary.evidence(),
                        "window_seconds": measurement.window_seconds, "source": measurement.source}
        d = Decision(at=_iso(now), ts=now, step=step, action=action, canary_percent=self.state.canary_percent,
                     reason=reason, evidence=evidence, checks=verdict.checks if verdict else [],
                     thresholds=self.policy.thresholds(), traffic=traffic or {})
        self.state.decisions.append(d)
        log.info("rollout %s/%s: %s at %s%% — %s", self.env, self.model, action, step, reason)
        return d

    def _finish(self, phase: str, reason: str) -> None:
        assert self.state is not None
        self.state.phase = phase
        self.state.reason = reason
        self.state.finished_at = _iso(self.clock())

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self) -> RolloutState:
        previous = self.store.load(self.env, self.model)
        if previous is not None and previous.phase == "running" and not self.replace:
            raise ConflictError(
                f"a rollout of {self.model} in {self.env} is running already (canary {previous.canary_version} "
                f"at {previous.canary_percent}%): end it with `skiff rollout rollback {self.model}` or "
                "`skiff rollout promote`, or start with --replace"
            )
        self.actuator.check_canary(self.stable_version, self.canary_version)
        now = self.clock()
        self.state = RolloutState(
            id=uuid.uuid4().hex[:12], model=self.model, env=self.env, stable_version=self.stable_version,
            canary_version=self.canary_version, phase="running", canary_percent=0,
            target=self.actuator.describe(), policy=self.policy, started_at=_iso(now), updated_at=_iso(now),
        )
        try:
            return self._run()
        except _Superseded:
            log.info("rollout %s/%s ended by a manual decision", self.env, self.model)
            return self.state
        except BaseException as e:
            if self.state.phase == "running":
                with contextlib.suppress(_Superseded, SkiffError):
                    self._rollback(self.state.canary_percent, f"controller failed: {type(e).__name__}: {e}")
            raise

    def _rollback(self, step: int, reason: str, **kw: Any) -> RolloutState:
        assert self.state is not None
        with self._decision():
            try:
                traffic = self.actuator.set_canary_percent(0)
            except SkiffError as e:
                self._record("rollback", step, f"{reason}; setting the canary to 0% FAILED: {e.message}", **kw)
                self._finish("aborted", f"{reason}; rollback failed: {e.message}")
                failure = e
            else:
                failure = None
                self.state.canary_percent = 0
                self._record("rollback", step, reason, traffic=traffic, **kw)
                self._finish("rolled_back", reason)
        if failure is not None:
            raise failure
        return self.state

    def _set(self, percent: int) -> dict[str, Any]:
        traffic = self.actuator.set_canary_percent(percent)
        assert self.state is not None
        self.state.canary_percent = percent
        return traffic

    def _run(self) -> RolloutState:
        assert self.state is not None
        policy = self.policy
        with self._decision():
            pass  # the rollout is on record before any traffic moves
        step_index = 0
        step = policy.steps[0]
        if step >= 100:  # a single-step policy: straight to full promotion
            with self._decision():
                traffic = self._set(100)
                self._record("promote", 100, "single-step policy: full promotion", traffic=traffic)
                self._finish("promoted", "single-step policy")
            return self.state
        self.metrics.begin()
        try:
            with self._decision():
                traffic = self._set(step)
                self._record("start", step, f"canary {self.canary_version} gets {step}% next to stable "
                             f"{self.stable_version}", traffic=traffic)
        except SkiffError as e:
            return self._rollback(step, f"could not start the canary at {step}%: {e.message}")
        step_started = self.clock()
        while True:
            self.sleep(policy.interval)
            try:
                m = self.metrics.read()
            except SkiffError as e:
                return self._rollback(step, f"metrics unavailable: {e.message}")
            verdict = judge(m, policy)
            waited = self.clock() - step_started
            if verdict.status == "wait":
                if waited > policy.timeout:
                    return self._rollback(step, f"timed out after {waited:.0f}s at {step}%: {verdict.reason}",
                                          measurement=m, verdict=verdict)
                with self._decision():
                    self._record("hold", step, verdict.reason, measurement=m, verdict=verdict)
                continue
            if verdict.status == "fail":
                return self._rollback(step, verdict.reason, measurement=m, verdict=verdict)
            nxt = policy.steps[step_index + 1]
            try:
                with self._decision():
                    if nxt < 100:
                        self.metrics.begin()
                    traffic = self._set(nxt)
                    if nxt >= 100:
                        self._record("promote", step, f"{verdict.reason} at {step}%: promoted to 100%",
                                     measurement=m, verdict=verdict, traffic=traffic)
                        self._finish("promoted", f"canary {self.canary_version} passed every step")
                    else:
                        self._record("advance", step, f"{verdict.reason} at {step}%: moving to {nxt}%",
                                     measurement=m, verdict=verdict, traffic=traffic)
            except SkiffError as e:
                return self._rollback(step, f"could not move to {nxt}%: {e.message}", measurement=m,
                                      verdict=verdict)
            if nxt >= 100:
                return self.state
            step_index, step, step_started = step_index + 1, nxt, self.clock()


def manual_decision(store: RolloutStore, env: str, model: str, action: Literal["promote", "rollback"],
                    actuator: TrafficActuator, reason: str, clock: Callable[[], float] = time.time) -> RolloutState:
    """``skiff rollout promote|rollback``: end a rollout by hand, recorded like the controller's decisions."""
    with store.lock(env, model):
        state = store.get(env, model)
        if state.phase == "promoted" and action == "promote":
            raise ConflictError(f"the rollout of {model} in {env} is promoted already")
        percent = 100 if action == "promote" else 0
        step = state.canary_percent
        traffic = actuator.set_canary_percent(percent)
        now = clock()
        state.canary_percent = percent
        state.decisions.append(Decision(
            at=_iso(now), ts=now, step=step, action=f"manual-{action}", canary_percent=percent, reason=reason,
            thresholds=state.policy.thresholds(), traffic=traffic,
        ))
        state.phase = "promoted" if action == "promote" else "rolled_back"
        state.reason = f"manual {action}: {reason}"
        state.finished_at = state.updated_at = _iso(now)
        store.save(state)
    return state
