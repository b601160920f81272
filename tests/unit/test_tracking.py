"""Experiment tracking without KFP: where runs go, a registered version's run read back from a real MLflow
SQLite store, a failed run, an unreachable server, and the MLflow model export predicting what skiff serves."""

import json
import logging
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.register.artifacts import StepArtifacts, register_step
from components.train.logic import parse_config, train
from skiff.config import Settings
from skiff.modeling import save_model
from skiff.registry import ModelRegistry
from skiff.spec import parse_spec
from skiff.spec_text import spec_to_text
from skiff.storage import Store
from skiff.tracking import runs
from skiff.tracking.export import export_version, register_export, signature_types

SPEC = parse_spec({
    "name": "meters", "entity_key": "id", "target": "y", "problem_type": "binary", "positive_class": "yes",
    "columns": {"id": {"type": "string"}, "a": {"type": "float", "min": 0, "max": 10},
                "n": {"type": "integer", "missing": "reject"}, "plan": {"type": "category", "allowed": ["basic", "pro"]},
                "flag": {"type": "boolean"}, "y": {"type": "category"}},
})
CONFIG = {"estimator": "logistic_regression", "cv_folds": 3,
          "search": {"method": "grid", "space": {"C": [0.1, 1.0, 10.0]}}}
FEATURES = ["a", "n", "plan", "flag"]
# a chart as the evaluation report embeds it (components.evaluate.logic.report)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
REPORT = ('<html><h1>meters</h1><figure><img alt="roc" src="data:image/png;base64,'
          + __import__("base64").b64encode(PNG).decode() + '"><figcaption>roc</figcaption></figure></html>')


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def version(tmp_path_factory):
    """A searched model registered by the register step (version 1 of meters, the champion)."""
    tmp = tmp_path_factory.mktemp("tracking")
    rng = np.random.default_rng(3)
    n = 240
    df = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "a": rng.uniform(0, 10, n), "n": rng.integers(0, 5, n),
                       "plan": rng.choice(["basic", "pro"], n), "flag": rng.random(n) > 0.5})
    df["y"] = np.where(df["a"] + rng.normal(0, 2, n) > 5, "yes", "no")
    r = train(df, SPEC, CONFIG)
    # what the train component writes: the result's metadata and the config
    save_model(tmp / "model", r.pipeline, {**r.metadata(), "config": parse_config(CONFIG).model_dump(mode="json")},
               r.cv_table, r.search_table)
    r.test_df.to_parquet(tmp / "test.parquet", index=False)
    r.train_df.to_parquet(tmp / "training.parquet", index=False)
    (tmp / "report.html").write_text(REPORT)
    (tmp / "stats.pb").write_bytes(b"\x0a\x00")
    stats_uri = f"file://{tmp}/lake/validation/meters/date=2026-01-02/stats.pb"
    gate = {"metric": "roc_auc", "promote": True, "reason": "no champion yet", "margin": 0.0, "challenger": 0.9}
    artifacts = StepArtifacts(model=tmp / "model", test_data=tmp / "test.parquet",
                              training_data=tmp / "training.parquet", report=tmp / "report.html",
                              statistics=tmp / "stats.pb", report_metadata={"gate": gate},
                              partitions=["2026-01-02"], statistics_uri=stats_uri)
    registry_uri = str(tmp / "models")
    register_step(artifacts, spec_to_text(SPEC), registry_uri=registry_uri, model_name="",
                  feature_service="meters_v1", test_metrics={"roc_auc": 0.9, "f1": 0.8}, promote=True,
                  reason="no champion yet", gate_metric="", margin=0.0, pipeline_run_id="run-1")
    return {"tmp": tmp, "registry_uri": registry_uri, "result": r, "stats_uri": stats_uri,
            "registry": ModelRegistry(Store(registry_uri))}


def test_runs_go_to_sqlite_under_a_local_root_nowhere_on_an_object_store_unless_configured(tmp_path):
    local = Settings(root=str(tmp_path / "root"))
    assert runs.tracking_uri(local) == f"sqlite:///{tmp_path / 'root' / 'mlflow.db'}"
    assert runs.tracking_uri(Settings(root="s3://bucket/skiff")) is None
    assert runs.tracking_uri(Settings(root="s3://bucket/skiff", tracking_uri="http://mlflow:5000")) == \
        "http://mlflow:5000"
    assert runs.tracking_uri(Settings(root=str(tmp_path), tracking_uri="off")) is None
    assert runs.tracking_uri(local, "off") is None and runs.tracking_uri(local, "http://x") == "http://x"
    assert runs.ui_command("sqlite:////r/mlflow.db") == "mlflow ui --backend-store-uri sqlite:////r/mlflow.db"
    assert "***" in runs.ui_command("https://user:pw@mlflow.example.com") and "pw" not in \
        runs.ui_command("https://user:pw@mlflow.example.com")
    assert runs.experiment_name(local, "churn") == "churn"
    assert runs.experiment_name(Settings(root=str(tmp_path), tracking_experiment="team"), "churn") == "team"


def test_a_registered_version_is_one_mlflow_run_with_every_field_and_nested_trials(version, tmp_path):
    from mlflow import MlflowClient

    settings = Settings(root=str(tmp_path / "root"))
    lake_runs = {"runs": [{"ingest_date": "2026-01-02", "run_id": "export-1"}], "notes": []}
    mlflow_id = runs.track_version(settings, "", registry_uri=version["registry_uri"], name="meters", version=1,
                                   run_id="run-1", pipeline="tabular", model_dir=version["tmp"] / "model",
                                   validation={"status": "passed", "uri": version["stats_uri"],
                                               "ingest_date": "2026-01-02"}, lake_runs=lake_runs)
    assert mlflow_id is not None
    client = MlflowClient(runs.tracking_uri(settings))
    run = client.get_run(mlflow_id)
    assert run.info.run_name == "run-1" and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "meters"
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    mv = version["registry"].get("meters", 1)
    assert p["estimator"] == "logistic_regression" and p["search.method"] == "grid"
    assert json.loads(p["search.space"]) == {"C": [0.1, 1.0, 10.0]}
    assert float(p["hp.C"]) == mv.metadata.params["C"]  # the chosen hyper-parameter
    assert p["spec_fingerprint"].startswith("sha256:") and p["data_fingerprint"] == mv.metadata.data_fingerprint
    assert json.loads(p["dataset.partitions"]) == ["2026-01-02"]
    assert json.loads(p["dataset.lake_runs"]) == ["2026-01-02/export-1"] and p["config.cv_folds"] == "3"
    # CV per fold as steps, with mean and std; test metrics; threshold; the gate
    folds = client.get_metric_history(mlflow_id, "cv_roc_auc")
    cv = {row["fold"]: row for row in mv.metadata.cv}
    assert sorted(f.step for f in folds) == [1, 2, 3]
    assert {f.step: f.value for f in folds} == pytest.approx({i: cv[str(i)]["roc_auc"] for i in (1, 2, 3)})
    assert m["cv_roc_auc_mean"] == pytest.approx(cv["mean"]["roc_auc"]) and "cv_roc_auc_std" in m
    assert m["test_roc_auc"] == 0.9 and m["test_f1"] == 0.8
    assert m["threshold"] == pytest.approx(mv.metadata.threshold)
    assert m["gate_promote"] == 1.0 and m["gate_margin"] == 0.0
    assert t["skiff.pipeline"] == "tabular" and t["skiff.run_id"] == "run-1" and t["skiff.role"] == "champion"
    assert t["skiff.version"] == mv.metadata.code_version["skiff"] and t["skiff.gate_reason"] == "no champion yet"
    if "git_commit" in mv.metadata.code_version:
        assert t["mlflow.source.git.commit"] == mv.metadata.code_version["git_commit"]
    assert t["skiff.validation_report"].endswith("/validation/meters/date=2026-01-02/report.html")
    # artifacts: the report and its chart, the model card, the validation link
    arts = {a.path for a in client.list_artifacts(mlflow_id)} | \
        {a.path for a in client.list_artifacts(mlflow_id, "evaluation")}
    assert {"MODEL_CARD.md", "validation.json", "evaluation/report.html", "evaluation/roc.png"} <= arts
    local = Path(client.download_artifacts(mlflow_id, "evaluation/roc.png", str(tmp_path)))
    assert local.read_bytes() == PNG
    assert (tmp_path / "root" / runs.ARTIFACTS_FOLDER).is_dir()  # under the root, not ./mlruns
    # the search's candidates as nested runs
    children = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{mlflow_id}'")
    assert sorted(c.data.params["hp.C"] for c in children) == ["0.1", "1.0", "10.0"]
    best = min(children, key=lambda c: c.data.metrics["rank"])
    assert float(best.data.params["hp.C"]) == mv.metadata.params["C"] and "mean_roc_auc" in best.data.metrics
    # logging again finds the same run: nothing duplicated
    again = runs.track_version(settings, "", registry_uri=version["registry_uri"], name="meters", version=1,
                               run_id="run-1", pipeline="tabular", model_dir=version["tmp"] / "model")
    assert again == mlflow_id
    assert len(client.search_runs([run.info.experiment_id], "tags.`skiff.run_id` = 'run-1'")) == 1
    assert len(client.search_runs([run.info.experiment_id], "tags.`skiff.parent_run_id` = 'run-1'")) == 3
    assert len(client.get_metric_history(mlflow_id, "cv_roc_auc")) == 3


def test_a_failed_run_is_marked_failed_with_its_step_and_a_redacted_reason(tmp_path):
    from mlflow import MlflowClient

    settings = Settings(root=str(tmp_path / "root"))
    reason = "OperationalError: could not connect to postgresql://skiff:hunter2@db:5432/skiff"
    mlflow_id = runs.track_failure("", run_id="run-9", pipeline="tabular", model_name="meters", step="train",
                                   reason=reason, settings=settings, params={"dataset": "meters"})
    run = MlflowClient(runs.tracking_uri(settings)).get_run(mlflow_id)
    assert run.info.status == "FAILED" and run.info.run_name == "run-9"
    assert run.data.tags["skiff.failed_step"] == "train"
    assert "hunter2" not in run.data.tags["skiff.error"] and "postgresql://skiff:***@db" in run.data.tags["skiff.error"]


def test_an_unreachable_tracking_server_is_a_warning_not_an_error(version, caplog):
    uri = f"http://127.0.0.1:{_closed_port()}"
    settings = Settings(root=str(version["tmp"] / "root"), tracking_uri=uri)
    t0 = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="skiff.tracking.runs"):
        got = runs.track_version(settings, "", registry_uri=version["registry_uri"], name="meters", version=1,
                                 run_id="run-1", pipeline="tabular", model_dir=version["tmp"] / "model")
        failed = runs.track_failure(uri, run_id="run-2", pipeline="tabular", model_name="meters", step="train",
                                    reason="boom", settings=settings)
    assert got is None and failed is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    tried = [w for w in warnings if f"after {runs.ATTEMPTS} attempts" in w]
    assert len(tried) == 2 and all(uri in w for w in tried)
    # MLflow's own retries (minutes by default) are off: a refused connection costs the tries, not backoff
    assert time.perf_counter() - t0 < 60
    # nothing is lost: both records are kept in the lake, named by their run, for `skiff tracking sync`
    lake = str(version["tmp"] / "root" / "lake")
    assert runs.pending_records(lake) == ["run-1", "run-2"]
    assert sum("skiff tracking sync" in w for w in warnings) == 2
    kept = json.loads((version["tmp"] / "root" / "lake" / "tracking" / "pending" / "run-1.json").read_text())
    assert kept["tracking_uri"] == uri and kept["record"]["run_id"] == "run-1"
    assert "evaluation/report.html" in kept["record"]["artifacts"]


def test_the_report_charts_come_back_as_png():
    assert runs.report_images(REPORT) == {"roc": PNG}
    assert runs.report_images("<html>no charts</html>") == {}


def test_the_mlflow_export_predicts_what_the_model_server_answers(version, tmp_path):
    import mlflow.pyfunc
    import mlflow.sklearn

    from serving.runtime.predictor import SkiffPredictor

    registry = version["registry"]
    info = export_version(registry, "meters", "champion", tmp_path / "export")
    assert info["version"] == 1 and info["flavors"] == ["sklearn", "python_function"]
    model = mlflow.pyfunc.load_model(str(tmp_path / "export"))
    inputs = model.metadata.get_input_schema()
    assert [(c.name, c.type.name) for c in inputs.inputs] == [("a", "double"), ("n", "long"), ("plan", "string"),
                                                             ("flag", "boolean")]
    example = pd.read_json(tmp_path / "export" / "input_example.json", orient="split")
    assert list(example.columns) == FEATURES and example.iloc[0]["plan"] == "basic"  # the spec's allowed value
    rows = version["result"].test_df[FEATURES].reset_index(drop=True)
    settings = Settings(root=str(tmp_path / "root"), registry=version["registry_uri"])
    server = SkiffPredictor("meters", settings=settings)
    assert server.load(), server.load_error
    answer = server.predict({"instances": rows.to_dict(orient="records")})["predictions"]
    assert list(model.predict(rows)) == [p["label"] for p in answer]
    sk = mlflow.sklearn.load_model(str(tmp_path / "export"))
    np.testing.assert_allclose(sk.predict_proba(rows)[:, 1], [p["probability"] for p in answer], atol=1e-6)
    # the server's tuned threshold, not the pipeline's 0.5: at 0.9 the labels differ from pipeline.predict
    assert server.threshold == pytest.approx(registry.get("meters", 1).metadata.threshold)
    sk.threshold = 0.9
    pipe = registry.load_model("meters", 1)
    assert list(sk.predict(rows)) != list(pipe.predict(rows))
    assert list(sk.predict(rows)) == ["yes" if p >= 0.9 else "no" for p in sk.predict_proba(rows)[:, 1]]


def test_the_export_refuses_a_used_folder_and_registers_with_metrics_as_tags(version, tmp_path):
    from mlflow import MlflowClient

    from skiff.errors import ConflictError

    out = tmp_path / "used"
    out.mkdir()
    (out / "x").write_text("x")
    with pytest.raises(ConflictError, match="not an empty folder"):
        export_version(version["registry"], "meters", 1, out)
    info = export_version(version["registry"], "meters", 1, tmp_path / "export")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registered = register_export(info["path"], "meters", {"roc_auc": 0.9}, tracking_uri=uri)
    mv = MlflowClient(uri).get_model_version("meters", registered["mlflow_version"])
    assert mv.tags == {"metric.roc_auc": "0.9"} and mv.source == Path(info["path"]).as_uri()


def test_integer_columns_that_may_be_missing_are_double_in_the_signature():
    schema = {"a": "integer", "b": "integer", "c": "datetime"}
    rules = {"a": {"missing": "reject"}, "b": {"missing": "keep"}}
    assert signature_types(schema, rules, ["a", "b", "c"]) == [("a", "long"), ("b", "double"), ("c", "datetime")]


def test_skiff_models_export_writes_an_mlflow_model(version, tmp_path, monkeypatch, capsys):
    from skiff.cli import main

    monkeypatch.setenv("SKIFF_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("SKIFF_REGISTRY", version["registry_uri"])
    code = main(["models", "export", "meters", "--version", "1", "--format", "mlflow", "-o",
                 str(tmp_path / "cli-export"), "--register", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and (tmp_path / "cli-export" / "MLmodel").is_file()
    assert out["version"] == 1 and out["registered"]["registered_model"] == "meters"
    assert main(["models", "export", "meters", "--format", "onnx", "-o", str(tmp_path / "o")]) == 2
    assert "unknown export format 'onnx'" in capsys.readouterr().err
