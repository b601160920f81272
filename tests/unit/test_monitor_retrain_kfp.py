"""``skiff monitor run --act --host``: the retrain of a drifted model submitted to Kubeflow Pipelines (a
stand-in of its v2beta1 REST API, whose run plays the pipeline's register step), waited for, the challenger
found by the run's id, a winner promoted as a canary in the environment file; a failed run is recorded as
failed with its state. The monitor's scores and the retrain steps are in the control plane."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.dummy import DummyClassifier

from skiff.cli import main
from skiff.config import Settings
from skiff.control_plane import ControlPlane
from skiff.inference_log import InferenceLogWriter, ModelLog, log_store
from skiff.monitoring.reference import CACHE_FILE, CACHE_PREFIX, reference_from_frame
from skiff.registry import ModelRegistry
from skiff.storage import Store
from tests.unit.test_monitor_schedule import kfp_server  # noqa: F401 - the fixture is used by name

MODEL = "accts"
SCHEMA = {"usage": "float"}
SPEC = {"name": MODEL, "entity_key": {"generated": "row"}, "target": "churned", "problem_type": "binary",
        "sources": [{"type": "file", "path": "data/accts.csv", "format": "csv"}],
        "columns": {"usage": {"type": "float"}, "churned": {"type": "string", "allowed": ["no", "yes"]}}}
ENV = """\
name: dev
namespace: skiff
ingress_domain: dev.example.com
retrain:
  accts:
    on: [drift]
    canary_percent: 15
    params: {train_config: {estimator: logistic_regression, cv_folds: 3}}
"""


@pytest.fixture
def world(tmp_path, monkeypatch):
    root = tmp_path / ".skiff"
    monkeypatch.setenv("SKIFF_ROOT", str(root))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / f"{MODEL}.yaml").write_text(yaml.safe_dump(SPEC))
    envs = tmp_path / "environments"
    (envs / "dev" / "models").mkdir(parents=True)
    (envs / "dev" / "environment.yaml").write_text(ENV)
    (envs / "dev" / "models" / f"{MODEL}.yaml").write_text(f"name: {MODEL}\nversion: 1\n")
    settings = Settings(root=str(root))
    registry = ModelRegistry.from_settings(settings)
    meta = {"problem_type": "binary", "classes": ["no", "yes"], "features": ["usage"], "input_schema": SCHEMA,
            "metrics": {"accuracy": 0.9}, "dataset": {"name": MODEL, "spec": SPEC},
            "gate": {"promote": True, "reason": "first version"}}
    registry.register(MODEL, DummyClassifier().fit([[0], [1]], ["no", "yes"]), meta)
    rng = np.random.default_rng(9)
    ref = reference_from_frame(registry.get(MODEL, 1).metadata, pd.DataFrame({"usage": rng.normal(10, 3, 4000)}))
    Store(settings.artifacts_uri).write_json(ref.to_dict(), CACHE_PREFIX, MODEL, "version=1", CACHE_FILE)
    hour = dt.datetime(2026, 6, 1, 9, tzinfo=dt.UTC)
    with InferenceLogWriter(log_store(settings), [ModelLog(MODEL, SCHEMA)]) as writer:
        for i, usage in enumerate(rng.normal(13, 3, 400)):  # one standard deviation away from training
            writer.offer(MODEL, 1, f"r{i}", [{"usage": float(usage)}], ["no"], probabilities=[0.2],
                         when=hour + dt.timedelta(seconds=i))
        assert writer.flush()
    return settings, registry, envs


def _monitor(capsys, host, envs):
    code = main(["monitor", "run", MODEL, "--min-rows", "100", "--act", "--env", "dev", "--environments", str(envs),
                 "--host", host, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_drifted_model_is_retrained_on_kubeflow_pipelines_and_its_winner_becomes_a_canary(
        world, kfp_server, capsys):  # noqa: F811
    settings, registry, envs = world
    host, state = kfp_server
    sent = []

    def pipeline(body):  # the run's register step: a version recorded with the run's id, the gate's verdict
        sent.append(body)
        run_id = body["runtime_config"]["parameters"]["run_id"]
        registry.register(MODEL, DummyClassifier().fit([[0], [1]], ["no", "yes"]), {
            "problem_type": "binary", "classes": ["no", "yes"], "features": ["usage"], "input_schema": SCHEMA,
            "metrics": {"accuracy": 0.93}, "pipeline_run_id": run_id,
            "gate": {"promote": True, "reason": "accuracy 0.930 beats the champion's 0.900"}})
        return "SUCCEEDED"

    state.on_run = staticmethod(pipeline)
    code, out = _monitor(capsys, host, envs)
    assert code == 1 and out["drifted_windows"] == 1  # drift found: exit 1, and acted on
    assert [s["action"] for s in out["retrain"]] == ["retrain", "challenger", "promote"]
    (body,) = sent
    assert body["service_account"] == "skiff-pipeline" and body["display_name"].startswith(f"retrain-{MODEL}-")
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "skiff-tabular"
    params = body["runtime_config"]["parameters"]
    assert params["model_name"] == MODEL and params["train_config"]["estimator"] == "logistic_regression"
    assert params["lake_uri"] == settings.lake_uri and json.loads(params["spec"])["name"] == MODEL
    challenger = out["retrain"][1]
    assert challenger["version"] == 2 and challenger["run_id"] == "run-1" and "beats" in challenger["reason"]
    assert challenger["details"]["host"] == host and challenger["details"]["run_id"] == params["run_id"]
    deployed = yaml.safe_load((envs / "dev" / "models" / f"{MODEL}.yaml").read_text())
    assert deployed["version"] == 1 and deployed["canary"] == {"version": 2, "percent": 15}
    recorded = ControlPlane.from_settings(settings).retrain_decisions(MODEL)
    assert [d.action for d in recorded] == ["promote", "challenger", "retrain"]  # newest first


def test_a_failed_retrain_run_is_recorded_with_its_state_and_deploys_nothing(world, kfp_server, capsys):  # noqa: F811
    settings, _registry, envs = world
    host, state = kfp_server
    state.on_run = staticmethod(lambda body: "FAILED")
    code, out = _monitor(capsys, host, envs)
    assert code == 1 and [s["action"] for s in out["retrain"]] == ["retrain", "failed"]
    assert "run-1 ended FAILED without a registered version" in out["retrain"][1]["reason"]
    assert "canary" not in yaml.safe_load((envs / "dev" / "models" / f"{MODEL}.yaml").read_text())
    assert main(["monitor", "run", MODEL, "--host", host]) == 2  # --host is the retrain's: it needs --act
    assert "--act" in capsys.readouterr().err
