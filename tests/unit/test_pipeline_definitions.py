"""Pipeline definitions: the registry the runner, CLI and API share, and what a definition promises."""

import inspect

import pytest

from pipelines.definitions import PIPELINES, TABULAR, get_pipeline
from skiff.errors import NotFoundError

#: parameters that only fill others (``estimator`` goes into ``train_config``; an image run without a spec
#: names its data set with ``name``), not pipeline inputs
SHORTCUTS = {"tabular": {"estimator"}, "image": {"name", "backbone", "weights", "image_size", "epochs"}}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_parameters_are_the_pipeline_inputs_with_their_types_and_defaults(name):
    definition = get_pipeline(name)
    signature = inspect.signature(definition.function.pipeline_func).parameters
    inputs = {p.name for p in definition.parameters} - SHORTCUTS.get(name, set())
    assert inputs <= set(signature), inputs - set(signature)
    for p in definition.parameters:
        if p.name in inputs:
            assert signature[p.name].annotation is p.type, p.name
            assert signature[p.name].default == p.default, p.name
    assert list(definition.help())[0] == "spec" and set(definition.help()) == {"spec", *(p.name for p in
                                                                                       definition.parameters)}


def test_the_api_takes_the_definitions_parameters():
    from skiff.api.routes.pipelines import TabularParams

    assert set(TabularParams.model_fields) == {"spec", *(p.name for p in TABULAR.parameters)}


def test_an_unknown_pipeline_names_the_known_ones():
    with pytest.raises(NotFoundError, match=r"unknown pipeline 'nope'; known: \['image', 'recommender', 'tabular'\]"):
        get_pipeline("nope")


SUMMARY = {
    "ingest": {"status": "unchanged", "counts": {"read": 10, "accepted": 8, "quarantined": 2},
               "quarantine_reasons": {"not a number": 2}},
    "validation": {"status": "passed", "blocking": [], "warnings": [{"feature": "x"}],
                   "report_uri": "/lake/validation/churn/ingest_date=2026-01-01/report.html"},
    "runs": {"validated": [{"ingest_date": "2026-01-01", "run_id": "r1"}],
             "features": [{"ingest_date": "2026-01-01", "run_id": "r1"}], "notes": ["one run read"]},
    "registered": {"name": "churn", "version": 2, "champion": False, "metrics": {"roc_auc": 0.8123, "f1": 0.5},
                   "gate_reason": "kept the champion [bold]v1[/]"},
}


def test_summary_lines_say_what_ran_and_what_was_registered():
    assert TABULAR.summary_lines(SUMMARY) == [
        "ingest: read 10, accepted 8, quarantined 2; quarantined because not a number (2) "
        "(input unchanged: the earlier run's partition is used)",
        "validation: passed (0 blocking, 1 warnings) — report /lake/validation/churn/ingest_date=2026-01-01/report.html",
        "runs: validated 2026-01-01/r1; features and training read 1 (2026-01-01/r1)",
        "note: one run read",
        "model churn version 2 (candidate): roc_auc=0.812, f1=0.500",
        "gate: kept the champion [bold]v1[/]",
    ]
    assert TABULAR.summary_lines({}) == []


def test_the_cli_prints_summary_lines_as_text(capsys):
    from skiff.cli._pipeline_output import print_run

    print_run({"pipeline": "tabular", "status": "SUCCESS", "duration_s": 1.0, "steps": {}},
              TABULAR.summary_lines(SUMMARY))
    assert "gate: kept the champion [bold]v1[/]" in capsys.readouterr().out  # data is never markup


def test_parameter_values_are_checked_as_json_types():
    from pipelines.definitions import Parameter
    from skiff.errors import UsageError

    margin = Parameter("margin", float, 0.0, "")
    margin.check(1)  # JSON has one number type
    margin.check(0.5)
    for bad in (True, "1", None):
        with pytest.raises(UsageError, match="pipeline parameter 'margin' must be a JSON number"):
            margin.check(bad)
    Parameter("warn_only", bool, False, "").check(False)
    with pytest.raises(UsageError, match="must be a JSON boolean, got 0"):
        Parameter("warn_only", bool, False, "").check(0)
    with pytest.raises(UsageError, match="must be a JSON array"):
        Parameter("sources", list, [], "").check({"path": "x"})


def test_the_summary_reads_the_partitions_validation_result(skiff_env, tmp_path):
    """A run whose steps all succeeded but whose partition failed validation (the result the validate
    step published) is a GATE_FAILED run naming the blocking anomalies."""
    import json

    from skiff.config import load_settings
    from skiff.lake import Lake
    from skiff.validation import RESULT_FILE, Anomaly, ValidationResult, validation_parts

    settings = load_settings()
    result = ValidationResult(
        dataset="orders", date="2026-01-02", status="failed", num_examples=5, schema_inferred=False,
        anomalies=[Anomaly(feature="amount", anomaly="FLOAT_TYPE_HAS_NAN", description="NaN", severity="error"),
                   Anomaly(feature="zone", anomaly="ENUM_TYPE_UNEXPECTED_STRING_VALUES", description="new",
                           severity="warning")],
        drift={"amount": {"measure": "jensen_shannon_divergence", "value": 0.4, "threshold": 0.1, "drifted": True}},
        runs=[{"ingest_date": "2026-01-02", "run_id": "r2"}])
    Lake.from_settings(settings).store.write_json(result.model_dump(mode="json", exclude_unset=True),
                                                  *validation_parts("orders", "2026-01-02"), RESULT_FILE)
    task = tmp_path / "run" / "ingest-op"
    task.mkdir(parents=True)
    (task / "executor_output.json").write_text(json.dumps(
        {"artifacts": {"manifest": {"artifacts": [{"metadata": {"ingest_date": "2026-01-02", "run_id": "r2"}}]}}}))
    run = {"pipeline": "tabular", "status": "SUCCESS", "duration_s": 3.0, "steps": {}, "run_dir": str(task.parent),
           "arguments": {"run_id": "run-1", "spec": json.dumps({"name": "orders"})}}

    summary = TABULAR.summarize(run, settings)
    assert summary["status"] == "GATE_FAILED" and summary["gate_failed"] is True
    assert summary["error"] == "validation gate failed: amount: FLOAT_TYPE_HAS_NAN"
    v = summary["validation"]
    assert [a["feature"] for a in v["blocking"]] == ["amount"] and [a["feature"] for a in v["warnings"]] == ["zone"]
    assert v["drifted"] == ["amount"] and v["report_uri"].endswith("ingest_date=2026-01-02/report.html")
    assert summary["runs"]["validated"] == [{"ingest_date": "2026-01-02", "run_id": "r2"}]
    assert summary["registered"] is None

    run["run_dir"] = None  # no ingest output: no partition to read
    assert TABULAR.summarize(run, settings)["validation"] is None


def test_a_runs_outcome_and_the_error_a_face_raises_come_from_its_summary():
    from pipelines.definitions import run_failure, run_outcome
    from skiff.errors import GateFailed, SkiffError

    ok = {"status": "SUCCESS", "gate_failed": False}
    assert run_outcome(ok) == "succeeded" and run_failure("pipeline tabular", ok) is None
    gated = {"status": "GATE_FAILED", "gate_failed": True, "error": "validation gate failed: amount: NaN\nmore"}
    assert run_outcome(gated) == "gate_failed"
    err = run_failure("pipeline tabular", gated)
    assert isinstance(err, GateFailed) and err.exit_code == 1
    assert str(err) == "pipeline tabular failed: validation gate failed: amount: NaN"  # the first line only
    broken = {"status": "FAILURE", "gate_failed": False, "error": None}
    err = run_failure("the demo pipeline", broken)
    assert run_outcome(broken) == "failed" and type(err) is SkiffError
    assert str(err) == "the demo pipeline failed: pipeline failed"


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_every_run_says_where_it_is_logged_and_a_failed_one_is_marked_failed(name, tmp_path):
    """Locally the run carries the store this process resolves (the logging step needs no settings of its
    own), on a cluster none (the steps' settings decide); a run that failed is FAILED in that store, with
    its step and reason, whatever the pipeline."""
    from mlflow import MlflowClient

    from skiff.config import Settings
    from skiff.datagen_recs import RECS_SPEC
    from skiff.spec import parse_spec

    settings = Settings(root=str(tmp_path / "root"))
    definition = get_pipeline(name)
    spec = {"image": parse_spec({"name": "shapes", "entity_key": "path", "columns": {
                "path": {"type": "string"}, "label": {"type": "string"}}}),
            "recommender": parse_spec(RECS_SPEC),
            "tabular": parse_spec({"name": "meters", "entity_key": "id", "target": "y", "problem_type": "binary",
                                   "columns": {"id": {"type": "string"}, "y": {"type": "boolean"}}})}[name]
    params = {"data": str(tmp_path)} if name == "image" else {}
    store = f"sqlite:///{tmp_path / 'root' / 'mlflow.db'}"
    args = definition.arguments(spec, params, settings, local=True)
    assert args["tracking_uri"] == store and isinstance(args["spec"], str)
    assert definition.arguments(spec, params, settings, local=False)["tracking_uri"] == ""
    off = Settings(root=str(tmp_path / "root"), tracking_uri="off")
    assert definition.arguments(spec, params, off, local=True)["tracking_uri"] == "off"

    run = {"pipeline": name, "status": "FAILURE", "duration_s": 1.0, "steps": {}, "run_dir": None,
           "error": "step train failed: out of memory\nfull log: /tmp/x.log", "failed_step": "train",
           "arguments": {**args, "run_id": f"run-{name}"}}
    summary = definition.summarize(run, settings)
    assert summary["tracking"] == {"uri": store, "ui": f"mlflow ui --backend-store-uri {store}"}
    assert definition.summary_lines(summary)[-1] == f"compare runs: mlflow ui --backend-store-uri {store}"
    client = MlflowClient(store)
    (logged,) = client.search_runs([client.get_experiment_by_name(spec.name).experiment_id])
    assert logged.info.run_name == f"run-{name}" and logged.info.status == "FAILED"
    assert logged.data.tags["skiff.failed_step"] == "train" and logged.data.tags["skiff.pipeline"] == name
    assert logged.data.tags["skiff.error"] == "step train failed: out of memory"
