"""On a cluster, the exit task asks the Kubeflow Pipelines API which step of a failed run failed and why
(:func:`skiff.tracking.runs.kfp_failed_task`): an in-process stand-in of the v2beta1 runs endpoint answers a
run whose ``train-recs-op`` step failed, and the MLflow run (a real SQLite store, read back with
MlflowClient) is FAILED with that step and its error. An endpoint that is closed, slow, answers 404 or
names no failed step leaves the step ``unknown`` with the run's state, and never fails the exit task."""

from __future__ import annotations

import socket
import time

import pytest
from kfp.dsl import PipelineTaskFinalStatus

from components.track.component import track_final_status_op
from skiff.tracking import runs
from tests.unit.test_monitor_schedule import _Pipelines, _Response, kfp_server  # noqa: F401 - the fixture is used by name

KFP_RUN = "9f1c6a2e-5b7d-4c1e-9a51-2f0d1c3b4a77"


def _task(name, state, end, *, task_id=None, parent=None, message=None):
    task = {"run_id": KFP_RUN, "task_id": task_id or name, "display_name": name, "state": state,
            "create_time": "2026-06-01T09:00:00Z", "start_time": "2026-06-01T09:00:01Z"}
    if end:
        task["end_time"] = f"2026-06-01T09:{end}Z"
    if parent:
        task["parent_task_id"] = parent
    if message is not None:
        task["error"] = {"code": 9, "message": message}
    return task


#: a recommender run as KFP's API reports it: the root DAG and the exit handler's group failed after the
#: step, each step has its driver and executor nodes, and the exit task ran last
FAILED_RUN = {
    "run_id": KFP_RUN, "display_name": "recommender-shop", "state": "FAILED",
    "error": {"code": 9, "message": "the run failed"},
    "run_details": {"task_details": [
        _task("recommender", "FAILED", "09:30", task_id="root"),
        _task("root-driver", "SUCCEEDED", "00:05"),
        _task("exit-handler-1", "FAILED", "09:20", task_id="group"),
        _task("ingest-op-driver", "SUCCEEDED", "01:00"),
        _task("ingest-op", "SUCCEEDED", "03:00", parent="group"),
        _task("train-recs-op-driver", "SUCCEEDED", "03:10"),
        _task("train-recs-op", "FAILED", "09:10", task_id="train", parent="group",
              message="MemoryError: the interaction matrix needs 41 GiB"),
        _task("executor", "FAILED", "09:09", parent="train", message="pod exited with code 1"),
        _task("track-final-status-op", "RUNNING", None),
    ]},
}


@pytest.fixture
def where(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "RETRY_WAIT_S", 0.0)
    monkeypatch.setenv("SKIFF_ROOT", str(tmp_path / "root"))
    monkeypatch.delenv("SKIFF_CONFIG", raising=False)
    monkeypatch.delenv("SKIFF_KFP_HOST", raising=False)
    monkeypatch.setenv(runs.KFP_TOKEN_ENV, str(tmp_path / "no-token"))
    return runs.local_store_uri(tmp_path / "root"), str(tmp_path / "root" / "lake")


@pytest.fixture
def requests_seen(kfp_server):  # noqa: F811
    """The stand-in's GET requests, as (path, authorization header)."""
    host, handler = kfp_server
    seen: list[tuple[str, str | None]] = []

    def do_get(self):
        seen.append((self.path, self.headers.get("authorization")))
        _Pipelines.do_GET(self)

    handler.do_GET = do_get
    return host, handler, seen


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exit_task(where, monkeypatch, host, *, state="FAILED", task="exit-handler-1", message="", job="recommender-x"):
    """The exit task's own code, as the pod runs it: the settings name the KFP endpoint."""
    uri, lake = where
    monkeypatch.setenv("SKIFF_KFP_HOST", host)
    status = PipelineTaskFinalStatus(state=state, pipeline_job_resource_name=job, pipeline_task_name=task,
                                     error_code=None, error_message=message)
    track_final_status_op.python_func(status=status, run_id="run-1", pipeline="recommender", lake_uri=lake,
                                      model_name="shop", tracking_uri=uri, kfp_run_id=KFP_RUN)


def _logged(uri):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("shop").experiment_id])
    return run


def test_the_step_kfp_names_failed_is_the_runs_failed_step_with_its_error(where, requests_seen, monkeypatch):
    host, handler, seen = requests_seen
    handler.pipeline_runs[KFP_RUN] = FAILED_RUN
    _exit_task(where, monkeypatch, host, message="")
    assert seen == [(f"/apis/v2beta1/runs/{KFP_RUN}", None)]  # one request, no token on single-user KFP
    run = _logged(where[0])
    t = run.data.tags
    assert run.info.status == "FAILED" and run.info.run_name == "run-1"
    assert t["skiff.failed_step"] == "train-recs-op"
    assert t["skiff.error"] == "MemoryError: the interaction matrix needs 41 GiB"
    assert (t["skiff.final_state"], t["skiff.kfp_run_id"]) == ("FAILED", KFP_RUN)


def test_the_first_failed_step_by_end_time_with_its_executors_error_else_the_runs():
    later = _task("evaluate-recs-op", "FAILED", "09:50", message="later")
    first = _task("train-recs-op", "FAILED", "09:10", task_id="train")
    child = _task("executor", "FAILED", "09:09", parent="train", message="OOMKilled")
    no_end = _task("register-recs-op", "FAILED", None, message="never ended")

    def answer(tasks, error="the run failed"):
        import kfp_server_api as api

        body = {"run_id": KFP_RUN, "state": "FAILED", "error": {"message": error},
                "run_details": {"task_details": tasks}}
        return runs._failed_step(api.ApiClient().deserialize(_Response(body), "V2beta1Run"))

    assert answer([no_end, later, first, child]) == ("train-recs-op", "OOMKilled")
    assert answer([later, first]) == ("train-recs-op", "the run failed")
    assert answer([first], error="") == ("train-recs-op", "")
    assert answer([_task("exit-handler-1", "FAILED", "09:20"), child, _task("root-driver", "FAILED", "00:01")]) is None


def test_kfp_that_is_closed_leaves_the_step_unknown_quickly(where, monkeypatch, caplog):
    closed = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    assert runs.kfp_failed_task(closed, KFP_RUN) is None  # one try, no retries
    assert time.monotonic() - started < runs.KFP_TIMEOUT_S
    _exit_task(where, monkeypatch, closed, state="FAILED")
    t = _logged(where[0]).data.tags
    assert (t["skiff.failed_step"], t["skiff.error"]) == ("unknown", "the run ended FAILED")
    assert "did not say which step" in caplog.text


def test_kfp_that_answers_404_leaves_the_step_unknown(where, requests_seen, monkeypatch, caplog):
    host, _, seen = requests_seen  # no run by that id
    _exit_task(where, monkeypatch, host, state="CANCELED")
    assert len(seen) == 1
    run = _logged(where[0])
    assert run.info.status == "FAILED"
    assert (run.data.tags["skiff.failed_step"], run.data.tags["skiff.error"]) == ("unknown", "the run ended CANCELED")
    assert "ApiException 404" in caplog.text


def test_kfp_that_answers_without_details_leaves_the_step_unknown(where, requests_seen, monkeypatch):
    host, handler, _ = requests_seen
    handler.pipeline_runs[KFP_RUN] = {"run_id": KFP_RUN, "state": "FAILED"}
    _exit_task(where, monkeypatch, host, message="Task exit-handler-1 failed.")
    t = _logged(where[0]).data.tags
    assert (t["skiff.failed_step"], t["skiff.error"]) == ("unknown", "Task exit-handler-1 failed.")


def test_kfp_that_does_not_answer_in_time_is_given_up():
    with socket.socket() as s:  # accepts connections (the backlog) and never answers
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        started = time.monotonic()
        assert runs.kfp_failed_task(f"http://127.0.0.1:{s.getsockname()[1]}", KFP_RUN, timeout=0.5) is None
        assert time.monotonic() - started < 3


def test_the_pods_kfp_token_is_sent_when_it_has_one(where, requests_seen, tmp_path, monkeypatch):
    host, handler, seen = requests_seen
    handler.pipeline_runs[KFP_RUN] = FAILED_RUN
    (tmp_path / "token").write_text("eyJ.kfp-token\n")
    monkeypatch.setenv(runs.KFP_TOKEN_ENV, str(tmp_path / "token"))
    assert runs.kfp_failed_task(host, KFP_RUN) == ("train-recs-op", "MemoryError: the interaction matrix needs 41 GiB")
    assert seen == [(f"/apis/v2beta1/runs/{KFP_RUN}", "Bearer eyJ.kfp-token")]


def test_kfp_is_not_asked_when_it_named_the_step_the_run_succeeded_or_the_run_is_local(
        where, requests_seen, monkeypatch):
    host, handler, seen = requests_seen
    handler.pipeline_runs[KFP_RUN] = FAILED_RUN
    _exit_task(where, monkeypatch, host, state="SUCCEEDED")
    _exit_task(where, monkeypatch, host, job="local-pipeline-exit-handler-1")  # kfp.local: no API knows it
    _exit_task(where, monkeypatch, host, task="ingest-op", message="no rows")
    assert seen == []
    t = _logged(where[0]).data.tags  # the local run's summary fills in a local run's step (pipelines.local_runs)
    assert (t["skiff.failed_step"], t["skiff.error"]) == ("unknown", "the run ended FAILED")
