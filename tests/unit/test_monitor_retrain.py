"""The retrain policy: parsed from the environment file with clear errors, its decision (triggers, cool-down,
the daily maximum), and every step of a retrain recorded in the control plane with its reason."""

from __future__ import annotations

import datetime as dt

import pytest

from serving.deploy.gitops import Environments
from skiff.control_plane import ControlPlane, RetrainDecision
from skiff.errors import ConfigError, SkiffError
from skiff.monitoring.retrain import ChallengerRun, Evidence, RetrainPolicy, carry_out, decide, parse_policies

NOW = dt.datetime(2026, 6, 2, 12, tzinfo=dt.UTC)
DRIFT = Evidence(drift=[("2026-06-02T11:00:00+00:00", 1, ["usage"])])


def _start(hours_ago: float) -> RetrainDecision:
    return RetrainDecision(model="m", action="retrain", reason="x",
                           decided_at=(NOW - dt.timedelta(hours=hours_ago)).isoformat())


def test_decide_retrains_on_drift_decay_or_schedule_and_says_why():
    policy = RetrainPolicy()
    d = decide(policy, "m", DRIFT, [], now=NOW)
    assert d.action == "retrain" and d.reason.startswith("drift: 1 window(s)") and "usage" in d.reason
    d = decide(policy, "m", Evidence(decay=[("2026-06-02T11:00:00+00:00", 1, ["accuracy"])]), [], now=NOW)
    assert d.action == "retrain" and "decay" in d.reason and "accuracy" in d.reason
    assert decide(policy, "m", Evidence(), [], now=NOW).action == "skip"
    scheduled = RetrainPolicy(on=["schedule"], schedule_hours=24)
    assert decide(scheduled, "m", Evidence(), [_start(25)], now=NOW).action == "retrain"
    assert decide(scheduled, "m", Evidence(), [_start(23)], now=NOW).reason.startswith("no trigger")
    # drift that ended before the last start was answered by it
    assert decide(RetrainPolicy(cooldown_hours=0), "m", DRIFT, [_start(0.5)], now=NOW).action == "skip"
    # only features at or above min_drifted_features count
    assert decide(RetrainPolicy(min_drifted_features=2), "m", DRIFT, [], now=NOW).action == "skip"


def test_cool_down_and_the_daily_maximum_hold_a_retrain_back():
    evidence = Evidence(drift=[("2026-06-02T11:59:00+00:00", 1, ["usage"])])
    d = decide(RetrainPolicy(cooldown_hours=6), "m", evidence, [_start(2)], now=NOW)
    assert d.action == "skip" and d.reason.startswith("cool-down until 2026-06-02T16:00:00")
    d = decide(RetrainPolicy(cooldown_hours=1, max_per_day=2), "m", evidence, [_start(1.5), _start(20)], now=NOW)
    assert d.action == "skip" and "maximum of 2" in d.reason
    assert decide(RetrainPolicy(cooldown_hours=1, max_per_day=2), "m", evidence, [_start(1.5), _start(25)],
                  now=NOW).action == "retrain"


def test_policies_come_from_the_environment_file_with_clear_errors(tmp_path):
    env = tmp_path / "dev"
    (env / "models").mkdir(parents=True)
    (env / "environment.yaml").write_text(
        "name: dev\nnamespace: skiff\ningress_domain: example.com\n# retrain policies\n"
        "retrain:\n  churn:\n    on: [drift, schedule]\n    schedule_hours: 24\n    canary_percent: 20\n")
    envs = Environments(tmp_path)
    policy = envs.environment("dev").retrain["churn"]
    assert policy.on == ["drift", "schedule"] and policy.canary_percent == 20
    envs.set_retrain_policy("dev", "fraud", RetrainPolicy(cooldown_hours=1))
    text = (env / "environment.yaml").read_text()
    assert "# retrain policies" in text and "fraud:" in text
    assert envs.environment("dev").retrain["fraud"].cooldown_hours == 1
    envs.set_retrain_policy("dev", "fraud", None)
    assert set(envs.environment("dev").retrain) == {"churn"}
    (env / "environment.yaml").write_text(
        "name: dev\nnamespace: skiff\ningress_domain: example.com\nretrain:\n  churn:\n    on: [sometimes]\n")
    with pytest.raises(ConfigError, match=r"retrain\.churn\.on"):
        envs.environment("dev")
    with pytest.raises(ConfigError, match=r"retrain\.churn\.cooldown_hours"):
        parse_policies({"churn": {"cooldown_hours": -1}}, "env.yaml")
    assert parse_policies({"churn": {"on": ["schedule"]}}, "env.yaml")["churn"].schedule_hours == 168
    with pytest.raises(ConfigError, match="map model names"):
        parse_policies(["churn"], "env.yaml")


class _Actions:
    def __init__(self, run: ChallengerRun | Exception):
        self.run, self.promoted = run, []

    def start_pipeline(self, model, policy, reason):
        if isinstance(self.run, Exception):
            raise self.run
        return self.run

    def promote_canary(self, model, version, percent, reason):
        self.promoted.append((model, version, percent))
        return {"env": "dev", "version": version}


@pytest.mark.parametrize(("run", "actions"), [
    (ChallengerRun("r1", "SUCCESS", version=2, promoted_by_gate=True, gate_reason="auc +0.04"),
     ["retrain", "challenger", "promote"]),
    (ChallengerRun("r1", "SUCCESS", version=2, promoted_by_gate=False, gate_reason="auc -0.01"),
     ["retrain", "challenger", "no_promote"]),
    (ChallengerRun("r1", "FAILURE", error="step train failed"), ["retrain", "failed"]),
    (SkiffError("no spec"), ["retrain", "failed"]),
])
def test_every_step_of_a_retrain_is_recorded_with_its_reason(tmp_path, run, actions):
    store = ControlPlane.open(f"sqlite:///{tmp_path / 'cp.db'}")
    decision = decide(RetrainPolicy(canary_percent=15), "m", DRIFT, [], now=NOW)
    fake = _Actions(run)
    steps = carry_out(store, decision, RetrainPolicy(canary_percent=15), fake)
    assert [s.action for s in steps] == actions
    assert [s.action for s in store.retrain_decisions("m")] == actions[::-1]  # newest first
    assert fake.promoted == ([("m", 2, 15)] if actions[-1] == "promote" else [])
    assert all(s.reason for s in steps)
    if actions[-1] == "promote":
        assert "15% canary in dev" in steps[-1].reason and "won" in steps[1].reason
