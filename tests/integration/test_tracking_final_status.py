"""The final status of a pipeline run, as its exit task records it (:func:`skiff.tracking.runs.track_final_status`),
read back from a real SQLite MLflow store with MlflowClient: a run that succeeded is left alone; one that did
not is marked FAILED, created when no step logged it; a step that recorded its own step and reason keeps them;
an unreachable server keeps the record in the lake (never one a step kept first), and nothing raises."""

import socket

import pytest

from skiff.config import Settings
from skiff.tracking import runs

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def where(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "RETRY_WAIT_S", 0.0)
    settings = Settings(root=str(tmp_path / "root"))
    return settings, runs.local_store_uri(tmp_path / "root"), str(tmp_path / "root" / "lake")


def _runs(uri, experiment):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def _final(where, state, run_id="run-1", **kwargs):
    settings, uri, lake = where
    return runs.track_final_status(uri, state=state, run_id=run_id, pipeline="recommender", model_name="shop",
                                   settings=settings, lake_uri=lake, **kwargs)


@pytest.mark.parametrize("state", ["SUCCEEDED", "COMPLETE", "CACHED"])
def test_a_run_that_succeeded_is_left_alone(where, state):
    assert _final(where, state, task="exit-handler-1") is None
    assert _runs(where[1], "shop") == []


def test_a_failed_run_no_step_logged_is_created_failed_with_the_task_and_error(where):
    mlflow_id = _final(where, "FAILED", task="train-recs-op", error_message="OOMKilled", error_code=9)
    (logged,) = _runs(where[1], "shop")
    assert logged.info.run_id == mlflow_id and logged.info.run_name == "run-1"
    assert logged.info.status == "FAILED"
    t = logged.data.tags
    assert (t["skiff.failed_step"], t["skiff.error"], t["skiff.error_code"]) == ("train-recs-op", "OOMKilled", "9")
    assert t["skiff.final_state"] == "FAILED" and t["skiff.pipeline"] == "recommender"
    assert t[runs.RUN_ID_TAG] == "run-1"


def test_the_exit_handler_group_is_no_step_and_a_missing_error_says_the_state(where):
    _final(where, "CANCELED", task="exit-handler-1", error_message="", error_code=0)
    (logged,) = _runs(where[1], "shop")
    t = logged.data.tags
    assert logged.info.status == "FAILED" and t["skiff.failed_step"] == "unknown"
    assert t["skiff.error"] == "the run ended CANCELED" and "skiff.error_code" not in t


def test_a_step_that_recorded_its_own_failure_keeps_its_step_and_reason(where):
    settings, uri, lake = where
    runs.track_failure(uri, run_id="run-1", pipeline="recommender", model_name="shop", step="validation-blocked",
                       reason="3 blocking anomalies", settings=settings, lake_uri=lake)
    _final(where, "FAILED", task="exit-handler-1", error_message="Task exit-handler-1 failed.")
    (logged,) = _runs(uri, "shop")
    t = logged.data.tags
    assert logged.info.status == "FAILED" and t["skiff.final_state"] == "FAILED"
    assert (t["skiff.failed_step"], t["skiff.error"]) == ("validation-blocked", "3 blocking anomalies")


def test_a_run_logged_finished_that_then_failed_is_failed(where):
    settings, uri, lake = where
    record = runs.RunRecord(run_id="run-1", pipeline="recommender", experiment="shop", tags={"skiff.role": "x"})
    runs.log_run(uri, record)
    assert _runs(uri, "shop")[0].info.status == "FINISHED"
    _final(where, "FAILED", task="track-run-op", error_message="pod evicted")
    (logged,) = _runs(uri, "shop")
    assert logged.info.status == "FAILED" and logged.data.tags["skiff.failed_step"] == "track-run-op"


def test_an_unreachable_server_keeps_the_record_and_never_one_a_step_kept_first(where, tmp_path):
    settings, _, lake = where
    down = f"http://127.0.0.1:{_closed_port()}"
    assert runs.track_final_status(down, state="FAILED", run_id="run-1", pipeline="recommender",
                                   model_name="shop", settings=settings, lake_uri=lake) is None
    assert runs.pending_records(lake) == ["run-1"]
    # a step's own failure, kept while the server was down, is not replaced by the exit task's
    runs.track_failure(down, run_id="run-2", pipeline="recommender", model_name="shop", step="validation-blocked",
                       reason="blocked", settings=settings, lake_uri=lake)
    runs.track_final_status(down, state="FAILED", run_id="run-2", pipeline="recommender", model_name="shop",
                            settings=settings, lake_uri=lake, error_message="Task exit-handler-1 failed.")
    store = runs.local_store_uri(tmp_path / "synced")
    (tmp_path / "synced").mkdir()
    synced = runs.sync_pending(lake, store)
    assert sorted(d["run_id"] for d in synced["logged"]) == ["run-1", "run-2"] and synced["failed"] == []
    by_name = {r.info.run_name: r for r in _runs(store, "shop")}
    assert {r.info.status for r in by_name.values()} == {"FAILED"}
    assert by_name["run-2"].data.tags["skiff.failed_step"] == "validation-blocked"
    assert by_name["run-2"].data.tags["skiff.error"] == "blocked"
    assert by_name["run-1"].data.tags["skiff.error"] == "the run ended FAILED"


def test_a_kept_record_keeps_its_tags_that_never_replace_a_steps(where):
    record = runs.failure_record(run_id="run-1", pipeline="image", experiment="shop", step=None, reason="x")
    record.keep_tags = ["skiff.failed_step", "skiff.error"]
    back = runs.record_from_document(runs.record_document(record))
    assert back.keep_tags == ["skiff.failed_step", "skiff.error"] and back.status == "FAILED"


def test_nothing_raises_and_tracking_off_logs_nothing(where, caplog):
    settings, uri, lake = where
    assert runs.track_final_status("off", state="FAILED", run_id="run-1", pipeline="image", model_name="shop",
                                   settings=settings, lake_uri=lake) is None
    assert runs.track_final_status(uri, state="FAILED", run_id="", pipeline="image", model_name="shop",
                                   settings=settings) is None
    # a run id MLflow cannot be searched by: a warning, no exception, nothing kept
    assert runs.track_final_status(uri, state="FAILED", run_id="bad' or '1", pipeline="image", model_name="shop",
                                   settings=settings, lake_uri=lake) is None
    assert "could not" in caplog.text
    assert _runs(uri, "shop") == []
