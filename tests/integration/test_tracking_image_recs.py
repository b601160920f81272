"""The image and recommender pipelines under kfp.local, read back from their MLflow store with MlflowClient.

1. a small image run (a tiny backbone from random weights, two short phases): the run is in
   ``sqlite:///<root>/mlflow.db`` with the training config, spec and data fingerprints, test metrics, each
   phase's per-epoch history, the gate, the report and confusion matrix, and its tags;
2. a small recommender run: the chosen model's parameters, the configuration, every candidate's held-out
   metrics, the gate, ``evaluation.json``;
3. a recommender run with the tracking server on a closed port: the run succeeds, its record is kept in the
   lake, and ``skiff tracking sync`` logs it to a real store once (a second sync logs nothing);
4. a recommender run whose train step raises: the pipeline's exit task marks the MLflow run FAILED (no step
   had logged it), and the run's summary names the step and its error.
"""

import json
import socket

import pytest

from pipelines.definitions import get_pipeline
from pipelines.runner import run_local
from skiff.config import Settings
from skiff.datagen_recs import RECS_SPEC
from skiff.datagen_recs import interactions as generate
from skiff.registry import ModelRegistry
from skiff.spec import DatasetSpec, parse_spec
from skiff.storage import Store
from skiff.tracking import runs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: the image pipeline's small configuration (tests/integration/test_image_pipeline_local.py), shorter still
TRAIN = {"backbone": "TinyConvNet", "weights": "", "image_size": 32, "batch_size": 32, "head_epochs": 2,
         "head_lr": 3e-3, "fine_tune_epochs": 3, "fine_tune_lr": 5e-3, "fine_tune_layers": 100, "patience": 6,
         "threads": 1}
RECS = {"test_days": 7, "als": {"factors": 16, "iterations": 5}, "ann": {"threshold": 100000}}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _only_run(store_uri: str, experiment: str, run_id: str):
    from mlflow import MlflowClient

    client = MlflowClient(store_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} in {store_uri}"
    found = client.search_runs([exp.experiment_id], filter_string=f"tags.`{runs.RUN_ID_TAG}` = '{run_id}'")
    assert len(found) == 1, found
    return client, found[0]


def _events(tmp_path):
    df = generate(400, 200, days=30, seed=7)
    df["timestamp"] = df["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    path = tmp_path / "events.csv"
    df.to_csv(path, index=False)
    return parse_spec({**RECS_SPEC, "sources": [{"type": "file", "path": str(path)}]})


@pytest.mark.timeout(600)
def test_an_image_run_is_in_mlflow_with_its_config_history_gate_and_report(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")
    from skiff.datagen_images import image_set

    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("SKIFF_ROOT", str(tmp_path / "root"))
    monkeypatch.delenv("SKIFF_TRACKING_URI", raising=False)
    image_set(tmp_path / "data", per_class=24, size=32, broken=False)
    settings = Settings(root=str(tmp_path / "root"))
    spec = DatasetSpec.model_validate({"name": "shapes", "entity_key": "path",
                                       "columns": {"path": {"type": "string"}, "label": {"type": "string"}}})
    definition = get_pipeline("image")
    args = definition.arguments(spec, {"data": str(tmp_path / "data"), "train_config": TRAIN}, settings, local=True)
    run = run_local("image", {**args, "run_id": "run-img"}, tmp_path / "runs")
    summary = definition.summarize(run, settings)
    assert summary["status"] == "SUCCESS", summary["error"]
    store = f"sqlite:///{tmp_path / 'root' / 'mlflow.db'}"
    assert summary["tracking"]["uri"] == store
    assert definition.summary_lines(summary)[-1] == f"compare runs: mlflow ui --backend-store-uri {store}"

    meta = ModelRegistry(Store(str(tmp_path / "root" / "models"))).get("shapes", 1).metadata
    client, logged = _only_run(store, "shapes", "run-img")
    assert logged.info.run_name == "run-img" and logged.info.status == "FINISHED"
    p = logged.data.params
    assert (p["backbone"], p["weights"], p["image_size"]) == ("TinyConvNet", "", "32")
    assert (p["head_epochs"], p["fine_tune_epochs"]) == ("2", "3")
    assert p["spec_fingerprint"] == runs.spec_fingerprint(json.loads(args["spec"]))
    assert p["data_fingerprint"] == meta.data_fingerprint and p["dataset.run_id"] == "run-img"
    m = logged.data.metrics
    assert m["test_top1_accuracy"] == pytest.approx(meta.metrics["top1_accuracy"])
    assert m["fine_tune_val_accuracy"] == pytest.approx(meta.extra["phases"]["fine_tune"]["val_accuracy"])
    assert m["gate_promote"] == 1.0 and m["gate_margin"] == 0.0
    # per-epoch history, one point per epoch the phase ran
    history = client.get_metric_history(logged.info.run_id, "head_epoch_val_accuracy")
    assert [h.step for h in history] == list(range(meta.extra["phases"]["head"]["epochs"]))
    assert len(client.get_metric_history(logged.info.run_id, "fine_tune_epoch_loss")) == \
        meta.extra["phases"]["fine_tune"]["epochs"]
    t = logged.data.tags
    assert t["skiff.pipeline"] == "image" and t["skiff.role"] == "champion" and t["skiff.version"]
    assert t["skiff.flavor"] == "tensorflow" and t["skiff.gate_metric"] == "top1_accuracy"
    if meta.code_version.get("git_commit"):
        assert t["mlflow.source.git.commit"] == meta.code_version["git_commit"]
    names = {a.path for a in client.list_artifacts(logged.info.run_id, "evaluation")}
    assert {"evaluation/report.html", "evaluation/confusion_matrix.png", "evaluation/per_class.json"} <= names
    assert "training.json" in {a.path for a in client.list_artifacts(logged.info.run_id)}


@pytest.mark.timeout(600)
def test_a_recommender_run_is_in_mlflow_with_its_model_config_candidates_and_gate(tmp_path, monkeypatch):
    monkeypatch.setenv("SKIFF_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("SKIFF_TRACKING_URI", raising=False)
    settings = Settings(root=str(tmp_path / "root"))
    definition = get_pipeline("recommender")
    spec = _events(tmp_path)
    args = definition.arguments(spec, {"recs_config": RECS}, settings, local=True)
    run = run_local("recommender", {**args, "run_id": "run-recs"}, tmp_path / "runs")
    summary = definition.summarize(run, settings)
    assert summary["status"] == "SUCCESS", summary["error"]
    store = f"sqlite:///{tmp_path / 'root' / 'mlflow.db'}"
    meta = ModelRegistry(Store(str(tmp_path / "root" / "models"))).get("shop_events", 1).metadata
    client, logged = _only_run(store, "shop_events", "run-recs")
    assert logged.info.run_name == "run-recs" and logged.info.status == "FINISHED"
    p = logged.data.params
    assert p["estimator"] == meta.estimator
    assert {k.removeprefix("hp.") for k in p if k.startswith("hp.")} == set(meta.params)
    assert float(p["config.test_days"]) == 7 and p["k"] == str(meta.extra["recs"]["k"])
    assert json.loads(p["config.als"])["factors"] == 16
    assert p["spec_fingerprint"] == runs.spec_fingerprint(json.loads(args["spec"]))
    assert p["data_fingerprint"] == meta.data_fingerprint
    m = logged.data.metrics
    k = meta.extra["recs"]["k"]
    assert m[f"test_ndcg_{k}"] == pytest.approx(meta.metrics[f"ndcg@{k}"])
    for kind in ("popularity", "item_item", "als"):
        assert m[f"{kind}_ndcg_{k}"] == pytest.approx(meta.extra["recs"]["models"][kind][f"ndcg@{k}"])
    assert m["gate_promote"] == 1.0 and m["gate_challenger"] == pytest.approx(meta.gate["challenger"])
    t = logged.data.tags
    assert t["skiff.pipeline"] == "recommender" and t["skiff.role"] == "champion"
    assert t["skiff.gate_metric"] == f"ndcg@{k}"
    assert "skiff.final_state" not in t and "skiff.failed_step" not in t  # the exit task left it alone
    assert {"evaluation.json", "gate.json"} <= {a.path for a in client.list_artifacts(logged.info.run_id)}


@pytest.mark.timeout(600)
def test_a_run_with_the_server_down_succeeds_is_kept_in_the_lake_and_synced_once(tmp_path, monkeypatch, capsys):
    from skiff.cli import main

    down = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("SKIFF_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("SKIFF_TRACKING_URI", down)
    settings = Settings(root=str(tmp_path / "root"))
    definition = get_pipeline("recommender")
    args = definition.arguments(_events(tmp_path), {"recs_config": RECS}, settings, local=True)
    assert args["tracking_uri"] == down
    run = run_local("recommender", {**args, "run_id": "run-down"}, tmp_path / "runs")
    summary = definition.summarize(run, settings)
    assert summary["status"] == "SUCCESS", summary["error"]
    assert summary["registered"]["version"] == 1
    assert runs.pending_records(settings.lake_uri) == ["run-down"]

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for expected in (["run-down"], []):
        assert main(["tracking", "sync", "--tracking-uri", store, "--json"]) == 0
        synced = json.loads(capsys.readouterr().out)
        assert [d["run_id"] for d in synced["logged"]] == expected and synced["failed"] == []
    _, logged = _only_run(store, "shop_events", "run-down")
    assert logged.info.status == "FINISHED" and logged.data.tags["skiff.pipeline"] == "recommender"
    assert logged.data.metrics["gate_promote"] == 1.0
    assert runs.pending_records(settings.lake_uri) == []


@pytest.mark.timeout(600)
def test_a_recommender_run_whose_step_fails_is_failed_in_mlflow_with_the_step_and_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("SKIFF_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("SKIFF_TRACKING_URI", raising=False)
    settings = Settings(root=str(tmp_path / "root"))
    definition = get_pipeline("recommender")
    args = definition.arguments(_events(tmp_path), {"recs_config": RECS}, settings, local=True)
    # a configuration the preflight refuses, given to the pipeline itself: its train step raises
    run = run_local("recommender", {**args, "recs_config": {**RECS, "models": []}, "run_id": "run-fail"},
                    tmp_path / "runs")
    assert run.status == "FAILURE" and run.failed_step == "train-recs-op"
    assert run.steps["track-final-status-op"]["status"] == "SUCCESS"
    assert "register-recs-op" not in run.steps and "track-run-op" not in run.steps
    store = f"sqlite:///{tmp_path / 'root' / 'mlflow.db'}"
    # the exit task alone: kfp.local names the exit handler's group as the failed task, so no step yet
    _, logged = _only_run(store, "shop_events", "run-fail")
    assert logged.info.run_name == "run-fail" and logged.info.status == "FAILED"
    t = logged.data.tags
    assert t["skiff.pipeline"] == "recommender" and t["skiff.final_state"] == "FAILED"
    assert t["skiff.failed_step"] == "unknown" and t["skiff.error"] == "Task exit-handler-1 failed."
    # the summary reads the failed step and its error from the run's log
    summary = definition.summarize(run, settings)
    assert summary["status"] == "FAILURE" and summary["failed_step"] == "train-recs-op"
    _, logged = _only_run(store, "shop_events", "run-fail")
    assert logged.info.status == "FAILED" and logged.data.tags["skiff.failed_step"] == "train-recs-op"
    assert "models needs at least one of popularity, item_item, als" in logged.data.tags["skiff.error"]
    assert runs.pending_records(settings.lake_uri) == []
