"""The rollout controller on the embedded engine, over real HTTP, with stand-in model servers.

Two stand-in servers (stable and canary version) behind the real canary router; the real controller
scrapes their ``/metrics`` and moves the router's weights through its admin API, while a bounded client
load on 127.0.0.1 sends predictions through the router. A bad canary (errors, or slow answers) must be
rolled back with no more failed requests than its share before the rollback and none after; a good one
must go 10 → 50 → 100 with every decision's evidence recorded.
"""

from __future__ import annotations

import math
import threading
import time

import pytest
from test_router import MODEL, Load, StandIn

from serving.rollout.actuators import RouterActuator
from serving.rollout.canary import local_canary
from serving.rollout.controller import RolloutController, manual_decision
from serving.rollout.measurements import FileFeedback, ScrapeMetricsSource
from serving.rollout.store import RolloutStore
from skiff.rollout_policy import RolloutPolicy
from skiff.storage import Store

pytestmark = pytest.mark.integration

POLICY = dict(steps=[10, 50, 100], min_requests=15, interval=0.5, timeout=30, max_error_rate_delta=0.02,
              max_p99_ratio=2.0, p99_slack_seconds=0.02)


def _launchers(modes: dict[str, str]):
    """launch/stop for local_canary that start stand-ins instead of `python -m serving` processes."""
    started: dict[str, StandIn] = {}

    def launch(name: str, version: str, port: int) -> StandIn:
        s = StandIn(name, version, mode=modes.get(version, "ok"), port=port).__enter__()
        started[version] = s
        return s

    def stop(s: StandIn) -> None:
        s.__exit__()

    return launch, stop, started


def _rollout(tmp_path, modes: dict[str, str], *, feedback=None, **policy_overrides):
    launch, stop, started = _launchers(modes)
    store = RolloutStore(Store(str(tmp_path / "root")))
    with local_canary(MODEL, "1", "2", 0, root=str(tmp_path), seed=3, launch=launch, stop=stop) as lc:
        ctl = RolloutController(
            model=MODEL, env="local", stable_version="1", canary_version="2",
            policy=RolloutPolicy(**{**POLICY, **policy_overrides}),
            metrics=ScrapeMetricsSource(MODEL, (lc.stable_url + "/metrics", "1"), (lc.canary_url + "/metrics", "2"),
                                        feedback=feedback),
            actuator=RouterActuator(lc.url), store=store,
        )
        with Load(lc.url, rate=30, threads=2) as load:
            state = ctl.run()
            time.sleep(1.0)  # keep the load on after the decision: nothing may fail any more
        final_percent = lc.router.canary_percent
    return state, load.records, final_percent, store


def _check_failures_bounded(state, records):
    rollback = next(d for d in state.decisions if d.action == "rollback")
    before = [r for r in records if r[0] < rollback.ts]
    after = [r for r in records if r[0] > rollback.ts]
    failed_before = sum(1 for r in before if r[2] >= 500)
    share = rollback.step / 100
    n = len(before)
    slack = 3 * math.sqrt(n * share * (1 - share)) + 3
    assert failed_before <= share * n + slack, (failed_before, n, share)
    assert len(after) >= 10
    assert [r for r in after if r[2] != 200] == []
    assert {r[3] for r in after} == {"stable"}
    return failed_before


def test_erroring_canary_is_rolled_back_and_failures_stay_within_its_share(tmp_path):
    state, records, final_percent, store = _rollout(tmp_path, {"2": "error"})
    assert state.phase == "rolled_back"
    assert final_percent == 0
    actions = [d.action for d in state.decisions]
    assert actions[0] == "start" and actions[-1] == "rollback"
    rb = state.decisions[-1]
    assert rb.step == 10 and rb.canary_percent == 0
    assert rb.evidence["canary"]["error_rate"] == 1.0
    assert rb.evidence["stable"]["error_rate"] == 0.0
    assert rb.evidence["canary"]["requests"] >= 15
    assert {c.name: c.status for c in rb.checks}["error_rate"] == "fail"
    assert rb.thresholds["max_error_rate_delta"] == 0.02
    assert "5xx share" in state.reason
    failed = _check_failures_bounded(state, records)
    assert failed >= 15  # the canary did get its share before the rollback
    # the state file on disk is what the controller returned
    assert store.get("local", MODEL).model_dump() == state.model_dump()


def test_slow_canary_is_rolled_back_on_p99(tmp_path):
    state, records, final_percent, _ = _rollout(tmp_path, {"2": "slow"})
    assert state.phase == "rolled_back" and final_percent == 0
    rb = state.decisions[-1]
    checks = {c.name: c for c in rb.checks}
    assert checks["p99_latency"].status == "fail"
    assert checks["error_rate"].status == "pass"
    assert rb.evidence["canary"]["p99_seconds"] > 0.15 > rb.evidence["stable"]["p99_seconds"]
    _check_failures_bounded(state, records)


def test_good_canary_is_promoted_step_by_step_with_evidence(tmp_path):
    state, records, final_percent, store = _rollout(tmp_path, {})
    assert state.phase == "promoted" and final_percent == 100
    assert [d.action for d in state.decisions if d.action != "hold"] == ["start", "advance", "promote"]
    start, advance, promote = [d for d in state.decisions if d.action != "hold"]
    assert (start.step, start.canary_percent) == (10, 10)
    assert (advance.step, advance.canary_percent) == (10, 50)
    assert (promote.step, promote.canary_percent) == (50, 100)
    for d in (advance, promote):
        assert d.evidence["stable"]["requests"] >= 15 and d.evidence["canary"]["requests"] >= 15
        assert d.evidence["stable"]["version"] == "1" and d.evidence["canary"]["version"] == "2"
        assert d.evidence["canary"]["error_rate"] == 0.0
        assert d.evidence["canary"]["p99_seconds"] is not None
        assert {c.name: c.status for c in d.checks} == {"requests": "pass", "error_rate": "pass",
                                                         "p99_latency": "pass", "quality": "skipped"}
        assert d.thresholds["min_requests"] == 15
        assert d.traffic["canary_percent"] == d.canary_percent
    # the canary's share grew: at 50 % it saw far more of the load than at 10 %
    assert promote.evidence["canary"]["requests"] > advance.evidence["canary"]["requests"]
    assert all(r[2] == 200 for r in records)
    late = [r for r in records if r[0] > promote.ts]
    assert late and {r[3] for r in late} == {"canary"}


def test_quality_drop_from_delayed_labels_rolls_back(tmp_path):
    fb = tmp_path / "feedback.jsonl"
    now = time.time() + 1  # labels for predictions made during the rollout
    rows = [{"model": MODEL, "version": "1", "prediction": 1, "label": 1, "at": now}] * 60
    rows += [{"model": MODEL, "version": "2", "prediction": 1, "label": int(i % 2 == 0), "at": now}
             for i in range(60)]
    import json

    fb.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    state, _, final_percent, _ = _rollout(tmp_path, {}, feedback=FileFeedback(fb), min_labels=50)
    assert state.phase == "rolled_back" and final_percent == 0
    rb = state.decisions[-1]
    q = {c.name: c for c in rb.checks}["quality"]
    assert q.status == "fail" and q.stable == 1.0 and q.canary == 0.5
    assert rb.evidence["canary"]["labelled"] == 60


def test_manual_rollback_ends_a_running_rollout(tmp_path):
    launch, stop, _ = _launchers({})
    store = RolloutStore(Store(str(tmp_path / "root")))
    with local_canary(MODEL, "1", "2", 0, root=str(tmp_path), launch=launch, stop=stop) as lc:
        ctl = RolloutController(
            model=MODEL, env="local", stable_version="1", canary_version="2",
            policy=RolloutPolicy(**{**POLICY, "min_requests": 10_000, "timeout": 60}),  # never enough traffic
            metrics=ScrapeMetricsSource(MODEL, (lc.stable_url + "/metrics", "1"), (lc.canary_url + "/metrics", "2")),
            actuator=RouterActuator(lc.url), store=store,
        )
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("state", ctl.run()))
        t.start()
        deadline = time.time() + 20
        while lc.router.canary_percent != 10 and time.time() < deadline:
            time.sleep(0.05)
        assert lc.router.canary_percent == 10
        manual = manual_decision(store, "local", MODEL, "rollback", RouterActuator(lc.url), "operator saw errors")
        t.join(20)
        assert not t.is_alive()
        assert lc.router.canary_percent == 0
    assert manual.phase == "rolled_back"
    final = store.get("local", MODEL)
    assert final.phase == "rolled_back" and final.decisions[-1].action == "manual-rollback"
    assert final.decisions[-1].reason == "operator saw errors"
    assert out["state"].phase == "rolled_back"


def test_cli_rollout_with_env_records_the_outcome_in_the_model_file(skiff_env, monkeypatch, capsys):
    """`skiff rollout start NAME --env dev --local --router URL` takes the versions from the model file,
    and writes the promotion back into it (comments kept); status and manual decisions read the state."""
    import json

    from serving.rollout.router import CanaryRouter, RouterThread, Upstream
    from skiff.cli import main

    envs = skiff_env / "environments"
    (envs / "dev/models").mkdir(parents=True)
    (envs / "dev/environment.yaml").write_text(
        "name: dev\nnamespace: skiff\ningress_domain: dev.example.com\n"
        "rollout: {steps: [10, 50, 100], min_requests: 15, interval: 0.5, timeout: 30}\n")
    (envs / "dev/models/churn.yaml").write_text(
        "# churn in dev\nname: churn\nversion: 1  # stable\ncanary: {version: 2, percent: 0}\nhistory: []\n")
    monkeypatch.setenv("SKIFF_ENVIRONMENTS", str(envs))
    with StandIn(MODEL, "1") as s, StandIn(MODEL, "2") as c:
        router = CanaryRouter(MODEL, Upstream(role="stable", url=s.url, version="1"),
                              Upstream(role="canary", url=c.url, version="2"), 0, seed=1)
        rt = RouterThread(router).start()
        with Load(rt.url, rate=30, threads=2):
            assert main(["rollout", "start", MODEL, "--env", "dev", "--local", "--router", rt.url, "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["phase"] == "promoted" and out["env"] == "dev"
        assert out["recorded_in"].endswith("dev/models/churn.yaml")
        assert router.canary_percent == 100
        text = (envs / "dev/models/churn.yaml").read_text()
        assert "# churn in dev" in text and "# stable" in text and "canary" not in text.split("history")[0]
        from serving.deploy.gitops import Environments

        dep = Environments(envs).deployment("dev", MODEL)
        assert dep.version == 2 and dep.history[-1].action == "canary-promoted"
        assert main(["rollout", "status", MODEL, "--env", "dev", "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert [d["action"] for d in status["decisions"] if d["action"] != "hold"] == ["start", "advance", "promote"]
        # a manual rollback afterwards moves the router back and is recorded as such
        assert main(["rollout", "rollback", MODEL, "--env", "dev", "--reason", "pager"]) == 0
        assert router.canary_percent == 0
        rt.stop()
        st = RolloutStore(Store(str(skiff_env / ".skiff"))).get("dev", MODEL)
        assert st.phase == "rolled_back" and st.decisions[-1].action == "manual-rollback"
        assert st.decisions[-1].reason == "pager" and st.decisions[-1].step == 100
