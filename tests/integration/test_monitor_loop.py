"""The closed loop, end to end on the local engines: a model trained by the tabular pipeline (kfp.local) and
deployed in dev; traffic logged at a 50% sampling rate whose distribution shifts halfway (one feature by
half a standard deviation, and the outcome starts to depend on another feature); labels posted late
through the REST API; ``skiff monitor run --act`` detects the drift and the decay, exports the alert
metrics, applies the retrain policy of dev's environment file: the pipeline runs on the newest data, the
challenger wins the gate and becomes a canary in dev; every step is in the control plane; the logged
counts reconcile with the sampling rate.

The requests are answered by the registered model in this process and logged with the inference-log
writer the model server uses (:class:`skiff.inference_log.InferenceLogWriter`), so the test does not pay a
model server's start-up on top of two pipeline runs."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving.deploy.gitops import Environments
from skiff.api import create_app
from skiff.api.auth import TokenSet, hash_token
from skiff.cli import main
from skiff.config import load_settings
from skiff.control_plane import ControlPlane
from skiff.inference_log import InferenceLogWriter, log_partitions, log_store, model_log_for_version, read_log
from skiff.registry import ModelRegistry

pytestmark = [pytest.mark.integration, pytest.mark.tfdv, pytest.mark.slow]

MODEL = "accounts"
RATE = 0.5
H0 = dt.datetime(2026, 5, 4, 9, tzinfo=dt.UTC)
TOKEN = "loop-admin-token"
SPEC = """\
name: accounts
entity_key: {generated: row}
target: churned
problem_type: binary
positive_class: "yes"
sources:
  - {type: file, path: data/accounts.csv, format: csv}
columns:
  usage: {type: float, required: true, min: 0}
  seats: {type: integer, min: 0}
  plan: {type: category, allowed: [free, pro, team]}
  churned: {type: string, allowed: ["yes", "no"]}
"""
ENV = """\
# dev: where every retrained version lands first
name: dev
namespace: skiff
ingress_domain: dev.example.com
retrain:
  accounts:
    on: [drift, decay]
    cooldown_hours: 6
    canary_percent: 10
    params: {train_config: {estimator: logistic_regression, cv_folds: 3}}
"""


def _rows(rng: np.random.Generator, n: int, *, shifted: bool) -> pd.DataFrame:
    usage = np.clip(rng.normal(10 + (1.5 if shifted else 0.0), 3, n), 0.1, None)  # +0.5 std
    plan = rng.choice(["free", "pro", "team"], n, p=[.5, .3, .2])
    noise = rng.random(n) < 0.1
    churned = (plan == "free") if shifted else (usage < 9)  # the outcome's cause changes
    churned = np.where(noise, ~churned, churned)
    return pd.DataFrame({"usage": usage.round(3), "seats": rng.poisson(4, n), "plan": plan,
                         "churned": np.where(churned, "yes", "no")})


def _cli(capsys, *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def test_drift_and_decay_start_a_retrain_whose_winner_becomes_a_canary(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKIFF_ROOT", str(tmp_path / ".skiff"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("SKIFF_CONFIG", raising=False)
    monkeypatch.delenv("SKIFF_DATABASE_URL", raising=False)
    rng = np.random.default_rng(5)
    (tmp_path / "data").mkdir()
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets/accounts.yaml").write_text(SPEC)
    _rows(rng, 1500, shifted=False).to_csv(tmp_path / "data/accounts.csv", index=False)

    # 1. version 1 from the pipeline, stable in dev
    code, run = _cli(capsys, "run", "tabular", "--local", "--dataset", "accounts", "--param",
                     'train_config={"estimator": "logistic_regression", "cv_folds": 3}')
    assert code == 0, run
    settings = load_settings()
    registry = ModelRegistry.from_settings(settings)
    v1 = registry.get(MODEL, "latest")
    assert v1.version == 1 and v1.metadata.metrics["accuracy"] > 0.8
    envs_root = tmp_path / "infra/environments"
    (envs_root / "dev/models").mkdir(parents=True)
    (envs_root / "dev/environment.yaml").write_text(ENV)
    Environments(envs_root).promote(registry, "dev", MODEL, 1, reason="first release")

    # 2. two hours of traffic, the second one shifted, logged at 50%
    model = registry.load_model(MODEL, 1)
    features = v1.metadata.features
    pos = list(model.classes_).index("yes")
    truth: dict[str, str] = {}
    writer = InferenceLogWriter(log_store(settings), [model_log_for_version(v1.metadata, sample_rate=RATE)], seed=3)
    offered = 0
    for hour, shifted in ((0, False), (1, True)):
        traffic = _rows(rng, 2000, shifted=shifted)
        preds = model.predict(traffic[features])
        probs = model.predict_proba(traffic[features])[:, pos]
        for i, row in enumerate(traffic[features].to_dict(orient="records")):
            rid = f"req-{hour}-{i}"
            writer.offer(MODEL, 1, rid, [row], [preds[i]], probabilities=[float(probs[i])], latency_ms=0.4,
                         when=H0 + dt.timedelta(hours=hour, seconds=i))
            truth[rid] = traffic["churned"].iloc[i]
            offered += 1
    assert writer.flush()
    writer.close()
    counts = writer.counters.snapshot()[MODEL]
    assert counts["offered"] == offered == counts["unsampled"] + counts["dropped"] + counts["accepted"]
    assert counts["accepted"] == counts["logged"] and counts["dropped"] == 0 and counts["failed"] == 0
    assert abs(counts["logged"] - RATE * offered) < 4 * math.sqrt(offered * RATE * (1 - RATE))
    logs = log_store(settings)
    logged = [read_log(logs, MODEL, v, h) for v, h in log_partitions(logs, MODEL)]
    assert sum(t.num_rows for t in logged) == counts["rows_written"] == counts["logged"]
    assert all(set(t.column("sample_rate").to_pylist()) == {RATE} for t in logged)

    # 3. labels arrive late, for most logged requests, through the REST API
    logged_ids = [rid for t in logged for rid in t.column("request_id").to_pylist()]
    app = create_app(settings, tokens=TokenSet.of(admin=[hash_token(TOKEN)]), environments=envs_root)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(app) as client:
        labels = [{"request_id": rid, "label": truth[rid]} for rid in logged_ids[::5] + logged_ids[1::5]]
        answer = client.post(f"/api/v1/models/{MODEL}/labels", json={"labels": labels}, headers=auth)
        assert answer.status_code == 200 and answer.json()["inserted"] == len(labels)

    # 4. the newest data: the shifted population, with its new outcome
    _rows(rng, 1500, shifted=True).to_csv(tmp_path / "data/accounts.csv", index=False)

    # 5. the monitor sees drift and decay, alerts, and acts
    code, result = _cli(capsys, "monitor", "run", MODEL, "--act", "--env", "dev", "--environments",
                        str(envs_root), "--metrics-file", str(tmp_path / "skiff.prom"), "--report",
                        str(tmp_path / "reports"))
    assert code == 1, result  # a window drifted and decayed: the monitor's exit says so
    first, second = result["windows"]
    assert first["drifted"] == [] and "usage" in second["drifted"], result["windows"]
    perf = {p["window_start"]: {r["metric"]: r for r in p["results"]} for p in result["performance"]}
    before, after = perf[H0.isoformat()], perf[(H0 + dt.timedelta(hours=1)).isoformat()]
    assert not before["accuracy"]["decayed"] and after["accuracy"]["decayed"], perf
    assert after["accuracy"]["ci_high"] < after["accuracy"]["floor"] < before["accuracy"]["ci_low"] + 0.05
    assert {a["kind"] for a in result["alerts"]} == {"drift", "accuracy_below_floor"}
    prom = (tmp_path / "skiff.prom").read_text()
    assert f'skiff_model_performance_below_floor{{metric="accuracy",model="{MODEL}",version="1"}} 1.0' in prom
    assert f'skiff_drift_detected{{feature="usage",metric="psi",model="{MODEL}",version="1"}} 1.0' in prom
    assert len(list((tmp_path / "reports" / MODEL).glob("v1-*.html"))) == 2

    steps = result["retrain"]
    assert [s["action"] for s in steps] == ["retrain", "challenger", "promote"], [s["reason"] for s in steps]
    assert "drift" in steps[0]["reason"] and "decay" in steps[0]["reason"]
    assert "won" in steps[1]["reason"] and steps[1]["version"] == 2
    dep = Environments(envs_root).deployment("dev", MODEL)
    assert dep.version == 1 and dep.canary is not None and (dep.canary.version, dep.canary.percent) == (2, 10)
    assert dep.history[-1].action == "canary" and dep.history[-1].reason.startswith("retrain: drift")
    assert registry.champion_version(MODEL) == 2
    recorded = ControlPlane.from_settings(settings).retrain_decisions(MODEL)
    assert [d.action for d in recorded] == ["promote", "challenger", "retrain"]  # newest first
    assert recorded[1].run_id == steps[1]["run_id"] and all(d.reason for d in recorded)

    # 6. a second monitor run right away: the cool-down holds (and is recorded)
    code, again = _cli(capsys, "monitor", "run", MODEL, "--act", "--env", "dev", "--environments", str(envs_root))
    assert [s["action"] for s in again["retrain"]] == ["skip"]
    assert again["retrain"][0]["reason"].startswith("no trigger") or "cool-down" in again["retrain"][0]["reason"]
    assert again["alerts"] == []  # the windows alerted once
