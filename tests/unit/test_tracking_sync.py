"""Runs kept in the lake while the tracking server is unreachable, replayed later with ``skiff tracking sync``:
a closed port keeps the record (nothing fails), a replay to a real SQLite store logs it with every field and
removes it, and a second replay of the same run finds it there instead of logging it twice."""

import json

import pytest

from skiff.cli import main
from skiff.config import Settings
from skiff.tracking import runs
from tests.unit.test_tracking import _closed_port, version  # noqa: F401 - the registered version fixture


def _client(uri):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def _runs_named(client, experiment, name):
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id]) if r.info.run_name == name]


def _cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def test_a_run_kept_while_the_server_is_down_is_replayed_once(version, tmp_path, monkeypatch, capsys):  # noqa: F811
    root = version["tmp"] / "root-sync"
    monkeypatch.setenv("SKIFF_ROOT", str(root))
    monkeypatch.delenv("SKIFF_TRACKING_URI", raising=False)
    down = f"http://127.0.0.1:{_closed_port()}"
    settings = Settings(root=str(root), tracking_uri=down)
    got = runs.track_version(settings, "", registry_uri=version["registry_uri"], name="meters", version=1,
                             run_id="run-7", pipeline="tabular", model_dir=version["tmp"] / "model")
    failed = runs.track_failure(down, run_id="run-8", pipeline="image", model_name="meters", step="train-image",
                                reason="out of memory", settings=settings)
    assert got is None and failed is None
    lake = settings.lake_uri
    assert runs.pending_records(lake) == ["run-7", "run-8"]
    code, listed = _cli(capsys, "tracking", "pending", "--json")
    assert code == 0 and listed["pending"] == ["run-7", "run-8"]

    # the server is still down: both stay kept, the command says so (exit 2)
    code, _ = _cli(capsys, "tracking", "sync", "--tracking-uri", down, "--json")
    assert code == 2 and runs.pending_records(lake) == ["run-7", "run-8"]

    # an unknown run is refused by name
    code, _ = _cli(capsys, "tracking", "sync", "--run", "run-99", "--tracking-uri", down)
    assert code == 2

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, synced = _cli(capsys, "tracking", "sync", "--tracking-uri", store, "--json")
    assert code == 0, synced
    assert [d["run_id"] for d in synced["logged"]] == ["run-7", "run-8"] and synced["failed"] == []
    assert runs.pending_records(lake) == []
    client = _client(store)
    (logged,) = _runs_named(client, "meters", "run-7")
    assert logged.info.status == "FINISHED"
    assert logged.data.params["estimator"] == "logistic_regression"
    assert logged.data.params["hp.C"] in {"0.1", "1.0", "10.0"}
    assert logged.data.metrics["test_roc_auc"] == pytest.approx(0.9)
    assert logged.data.tags[runs.RUN_ID_TAG] == "run-7" and logged.data.tags["skiff.role"] == "champion"
    names = {a.path for a in client.list_artifacts(logged.info.run_id, "evaluation")}
    assert {"evaluation/report.html", "evaluation/roc.png"} <= names
    trials = client.search_runs([logged.info.experiment_id],
                                filter_string=f"tags.`{runs.PARENT_TAG}` = 'run-7'")
    assert len(trials) == 3  # the grid's candidates, nested
    (failed_run,) = _runs_named(client, "meters", "run-8")
    assert failed_run.info.status == "FAILED" and failed_run.data.tags["skiff.failed_step"] == "train-image"

    # the same run kept again (a step retried while the server was down) and replayed: found, not doubled
    record = runs.version_record(version["registry"], "meters", 1, run_id="run-7", pipeline="tabular",
                                 experiment="meters", model_dir=version["tmp"] / "model")
    assert runs.keep_pending(lake, down, record) is not None
    again = runs.sync_pending(lake, store)
    assert again["logged"][0]["mlflow_run_id"] == logged.info.run_id and runs.pending_records(lake) == []
    assert len(_runs_named(client, "meters", "run-7")) == 1
    assert len(client.search_runs([logged.info.experiment_id],
                                  filter_string=f"tags.`{runs.PARENT_TAG}` = 'run-7'")) == 3
    code, empty = _cli(capsys, "tracking", "sync", "--tracking-uri", store, "--json")
    assert code == 0 and empty == {"logged": [], "failed": []}


def test_a_kept_record_round_trips_and_a_foreign_file_is_refused():
    record = runs.RunRecord(run_id="run-1", pipeline="recommender", experiment="shop", params={"k": "10"},
                            metrics=[("ndcg_10", 0.25, 0), ("head_epoch_loss", 1.5, 3)], tags={"a": "b"},
                            artifacts={"evaluation.json": b"{}\x00\xff"},
                            trials=[runs.Trial(name="run-1/trial-0", metrics={"m": 1.0}, tags={runs.TRIAL_TAG: "0"})])
    back = runs.record_from_document(json.loads(json.dumps(runs.record_document(record))))
    assert back == record
    with pytest.raises(ValueError, match="not a pending tracking record"):
        runs.record_from_document({"run": "x"})
