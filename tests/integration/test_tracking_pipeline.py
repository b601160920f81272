"""The tabular pipeline under kfp.local, read back from its MLflow store with MlflowClient.

One module-scoped sequence of three runs through the CLI (each costs ~40 s of step overhead here):
1. a grid search over a churn export: the run is in ``sqlite:///<root>/mlflow.db`` with its params,
   per-fold CV, test metrics, threshold, gate, charts, model card, validation link and tags, and each
   candidate as a nested run; the summary prints the ``mlflow ui`` command;
2. a drifted partition: validation blocks, and the MLflow run is FAILED at ``validation-blocked`` with
   the reason;
3. the same export with the tracking URI on a closed port: the run still succeeds and registers.
"""

import json
import socket
from pathlib import Path

import pytest

from skiff import datagen
from skiff.cli import main
from skiff.registry import ModelRegistry
from skiff.storage import Store
from tests.conftest import REPO
from tests.integration.test_pipeline_local import _Capture

pytestmark = [pytest.mark.integration, pytest.mark.tfdv, pytest.mark.slow]

SEARCH = {"estimator": "logistic_regression", "cv_folds": 3,
          "search": {"method": "grid", "space": {"C": [0.1, 1.0]}}}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(capsys, *params: str) -> tuple[int, dict]:
    argv = ["run", "tabular", "--local", "--json"]
    for p in params:
        argv += ["--param", p]
    code = main(argv)
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    work = tmp_path_factory.mktemp("tracked")
    root = work / ".skiff"
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    mp.setenv("SKIFF_ROOT", str(root))
    mp.setenv("OMP_NUM_THREADS", "1")
    mp.delenv("SKIFF_TRACKING_URI", raising=False)
    datagen.dirty(datagen.churn(n=600, seed=3), seed=3).to_csv(work / "churn.csv", index=False)
    drifted = datagen.churn(n=600, seed=4)
    drifted["MonthlyCharges"] = drifted["MonthlyCharges"] * 3 + 40
    drifted["TotalCharges"] = drifted["TotalCharges"] * 3
    datagen.dirty(drifted, seed=4).to_csv(work / "drifted.csv", index=False)
    spec = f"spec={REPO / 'examples' / 'churn.yaml'}"
    results = {"root": root}
    capsys = _Capture()
    with capsys:
        results["search"] = _run(capsys, spec, f"train_config={json.dumps(SEARCH)}",
                                 f'sources=["{work / "churn.csv"}"]', "ingest_date=2026-01-01")
        results["blocked"] = _run(capsys, spec, f"train_config={json.dumps(SEARCH)}",
                                  f'sources=["{work / "drifted.csv"}"]', "ingest_date=2026-01-02")
        mp.setenv("SKIFF_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
        results["unreachable"] = _run(capsys, spec, 'train_config={"estimator": "logistic_regression", '
                                      '"cv_folds": 3}', f'sources=["{work / "churn.csv"}"]',
                                      "ingest_date=2026-01-01")
    results["registry"] = ModelRegistry(Store(str(root / "models")))
    yield results
    mp.undo()


def _client(tracked):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{tracked['root'] / 'mlflow.db'}")


def _run_of(client, run_id: str):
    experiment = client.get_experiment_by_name("churn")
    found = client.search_runs([experiment.experiment_id], f"tags.`skiff.run_id` = '{run_id}'")
    assert len(found) == 1, f"one MLflow run for {run_id}, found {len(found)}"
    return found[0]


def test_a_local_run_is_in_the_mlflow_store_with_every_field(tracked, tmp_path):
    code, summary = tracked["search"]
    assert code == 0, summary.get("error")
    uri = f"sqlite:///{tracked['root'] / 'mlflow.db'}"
    assert summary["tracking"] == {"uri": uri, "ui": f"mlflow ui --backend-store-uri {uri}"}
    client = _client(tracked)
    run = _run_of(client, summary["run_id"])
    mv = tracked["registry"].get("churn", summary["registered"]["version"])
    assert run.info.run_name == summary["run_id"] and run.info.status == "FINISHED"
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    assert p["estimator"] == "logistic_regression" and json.loads(p["search.space"]) == {"C": [0.1, 1.0]}
    assert float(p["hp.C"]) == mv.metadata.params["C"]
    assert p["data_fingerprint"] == mv.metadata.data_fingerprint and p["spec_fingerprint"].startswith("sha256:")
    assert json.loads(p["dataset.partitions"]) == mv.metadata.dataset["partitions"]
    assert json.loads(p["dataset.lake_runs"]) == [f"2026-01-01/{summary['ingest']['run_id']}"]
    assert sorted(x.step for x in client.get_metric_history(run.info.run_id, "cv_roc_auc")) == [1, 2, 3]
    assert {"cv_roc_auc_mean", "cv_roc_auc_std", "threshold", "gate_promote"} <= set(m)
    assert m["test_roc_auc"] == pytest.approx(mv.metadata.metrics["roc_auc"]) and m["gate_promote"] == 1.0
    assert t["skiff.pipeline"] == "tabular" and t["skiff.role"] == "champion"
    assert t["skiff.version"] == mv.metadata.code_version["skiff"]
    assert t["skiff.validation_status"] == "passed" and t["skiff.validation_report"].endswith("/report.html")
    assert t["skiff.validation_report"] == summary["validation"]["report_uri"]
    charts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/report.html", "evaluation/roc.png", "evaluation/pr.png",
            "evaluation/confusion_matrix.png"} <= charts
    assert {"MODEL_CARD.md", "validation.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    children = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    assert sorted(c.data.params["hp.C"] for c in children) == ["0.1", "1.0"]
    assert all(c.info.status == "FINISHED" and "mean_roc_auc" in c.data.metrics for c in children)


def test_a_blocked_run_is_marked_failed_with_the_step_and_reason(tracked):
    code, summary = tracked["blocked"]
    # kfp.local reports the gate's failing Else branch as FAILURE (tests/integration/test_pipeline_local.py)
    assert code == 1 and summary["status"] in ("GATE_FAILED", "FAILURE") and summary["gate_failed"] is True
    run = _run_of(_client(tracked), summary["run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["skiff.failed_step"] == "validation-blocked"
    assert "MonthlyCharges" in run.data.tags["skiff.error"]


def test_an_unreachable_tracking_server_does_not_fail_the_pipeline(tracked):
    code, summary = tracked["unreachable"]
    assert code == 0 and summary["status"] == "SUCCESS", summary.get("error")
    assert summary["registered"]["version"] == 2
    assert summary["tracking"]["uri"].startswith("http://127.0.0.1:")
    log = Path(summary["log_file"]).read_text(encoding="utf-8")
    assert "experiment tracking: could not log run" in log
