"""The validation step without TFDV: request building, severity, results, errors, lake bookkeeping."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.validate import logic
from components.validate.logic import (
    BLOCKING_TYPES,
    PRESENCE_TYPES,
    ValidateConfig,
    build_request,
    drift_baseline,
    export_schema,
    parse_feature_thresholds,
    parse_result,
    resolve_tfdv_python,
    validate_partition,
)
from components.validate.tfdv_runner import classify, render_report
from skiff.cli import main
from skiff.errors import EnvironmentMissing, NotFoundError, SkiffError, StorageError, UsageError
from skiff.lake import Lake
from skiff.spec import parse_spec, save_spec
from skiff.storage import Store
from skiff.validation import Anomaly, gate_status, read_result, validated_dates, validation_parts

SPEC = {
    "name": "churn",
    "entity_key": "customer_id",
    "event_timestamp": "ts",
    "target": "churned",
    "problem_type": "binary",
    "columns": {
        "customer_id": {"type": "string", "unique": True},
        "ts": {"type": "datetime"},
        "tenure": {"type": "integer", "min": 0, "max": 120},
        "plan": {"type": "integer", "allowed": [1, 2, 5], "min": 2},
        "charges": {"type": "float", "min": 0.5},
        "contract": {"type": "category", "allowed": ["Month-to-month", "One year"], "required": True},
        "note": {"type": "string"},
        "churned": {"type": "boolean"},
    },
}


def _request(config: ValidateConfig | None = None, **kw):
    spec = parse_spec(SPEC)
    return build_request(
        spec, config or ValidateConfig(), date="2026-01-02", files=["/x/part-0.parquet"], output_dir="/out",
        schema_path="/s/schema.pbtxt", infer_schema=True, **kw,
    )


def _lake(root: Path) -> Lake:
    return Lake(Store(str(root / "lake")))


def _publish(lake: Lake, date: str, rows: int = 3) -> None:
    table = pa.table({"customer_id": [f"c{i}" for i in range(rows)], "tenure": list(range(rows))})
    with lake.publish_run("churn", "r1", date) as staging:
        pq.write_table(table, staging / "part-00000.parquet")


def _validated(lake: Lake, date: str, status: str) -> None:
    with lake.store.atomic_dir(*validation_parts("churn", date)) as staging:
        (staging / "stats.pb").write_bytes(b"")
        (staging / "result.json").write_text(json.dumps({"status": status}))


# -- request building -----------------------------------------------------------------------------------
def test_request_rules_follow_the_spec():
    features = _request()["features"]
    # the key, the target and spec-required columns are required; the others are relaxed
    assert {n for n, r in features.items() if r["required"]} == {"customer_id", "contract", "churned"}
    assert features["contract"]["domain"] == ["Month-to-month", "One year"]
    assert features["tenure"]["min"] == 0 and features["tenure"]["max"] == 120
    assert features["charges"]["min"] == 0.5 and features["charges"]["max"] is None
    # integer 'allowed' narrows the range: max of allowed, and the larger of min and min(allowed)
    assert features["plan"]["min"] == 2 and features["plan"]["max"] == 5
    assert "domain" not in features["note"] and "domain" not in features["churned"]
    assert features["ts"]["type"] == "datetime"


def test_request_drift_thresholds_default_and_per_column():
    drift = _request(ValidateConfig(drift_threshold=0.15, feature_thresholds={"tenure": 0.3, "note": None}))["drift"]
    assert drift["charges"] == drift["contract"] == drift["churned"] == 0.15
    assert drift["tenure"] == 0.3
    assert drift["note"] is None
    # keys, unique ids and timestamps change every partition by design
    assert drift["customer_id"] is None and drift["ts"] is None
    # an explicit threshold on such a column is honoured
    assert _request(ValidateConfig(feature_thresholds={"ts": 0.5}))["drift"]["ts"] == 0.5
    assert set(_request(ValidateConfig(drift_threshold=None))["drift"].values()) == {None}


def test_request_rejects_thresholds_for_unknown_columns():
    with pytest.raises(UsageError, match="'tenur'.*not a column of dataset 'churn'"):
        _request(ValidateConfig(feature_thresholds={"tenur": 0.2}))


def test_request_policy_and_baseline():
    req = _request(previous_date="2026-01-01", previous_statistics="/p/stats.pb")
    policy = req["policy"]
    assert set(policy["blocking"]) == BLOCKING_TYPES and "SCHEMA_NEW_COLUMN" not in policy["blocking"]
    assert set(policy["blocking_if_required"]) == PRESENCE_TYPES
    assert policy["required"] == ["churned", "contract", "customer_id"]
    assert policy["warn_only"] is False and policy["domain_tolerance"] == 0.01
    assert req["previous_statistics"] == "/p/stats.pb" and req["previous_files"] == []
    assert req["schema"] == {"path": "/s/schema.pbtxt", "infer": True, "source": None}
    strict = _request(ValidateConfig(new_columns="error", warn_only=True))["policy"]
    assert "SCHEMA_NEW_COLUMN" in strict["blocking"] and strict["warn_only"] is True


def test_config_is_strict():
    with pytest.raises(ValueError, match="extra"):
        ValidateConfig(drift_treshold=0.1)
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        ValidateConfig(drift_threshold=1.5)
    with pytest.raises(ValueError, match="'tenure'"):
        ValidateConfig(feature_thresholds={"tenure": 0})


@pytest.mark.parametrize(
    ("items", "expected"),
    [(["tenure=0.2"], {"tenure": 0.2}), (["a=off", "b = 1"], {"a": None, "b": 1.0}), ([], {})],
)
def test_feature_thresholds_parse(items, expected):
    assert parse_feature_thresholds(items) == expected


@pytest.mark.parametrize(("item", "message"), [("tenure", "COLUMN=THRESHOLD"), ("tenure=high", "not a number"),
                                               ("tenure=2", r"\(0, 1\]"), ("=0.1", "COLUMN=THRESHOLD")])
def test_feature_thresholds_errors_name_the_item(item, message):
    with pytest.raises(UsageError, match=message):
        parse_feature_thresholds([item])


# -- severity ----------------------------------------------------------------------------------------------
POLICY = _request()["policy"]


@pytest.mark.parametrize(
    ("anomaly", "feature", "tolerated", "expected"),
    [
        ("COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH", "charges", False, "error"),
        ("COMPARATOR_L_INFTY_HIGH", "note", False, "error"),
        ("UNEXPECTED_DATA_TYPE", "note", False, "error"),
        ("ENUM_TYPE_UNEXPECTED_STRING_VALUES", "contract", False, "error"),
        ("ENUM_TYPE_UNEXPECTED_STRING_VALUES", "contract", True, "warning"),
        ("INT_TYPE_BIG_INT", "tenure", False, "error"),
        ("DATASET_LOW_NUM_EXAMPLES", "<dataset>", False, "error"),
        ("SCHEMA_MISSING_COLUMN", "contract", False, "error"),
        ("SCHEMA_MISSING_COLUMN", "note", False, "warning"),
        ("FEATURE_TYPE_LOW_FRACTION_PRESENT", "churned", False, "error"),
        ("FEATURE_TYPE_LOW_FRACTION_PRESENT", "tenure", False, "warning"),
        ("SCHEMA_NEW_COLUMN", "extra", False, "warning"),
        ("FEATURE_TYPE_HIGH_UNIQUE", "note", False, "warning"),
    ],
)
def test_severity_mapping(anomaly, feature, tolerated, expected):
    assert classify(anomaly, feature, POLICY, tolerated=tolerated) == expected


def test_severity_follows_config():
    strict = _request(ValidateConfig(new_columns="error"))["policy"]
    assert classify("SCHEMA_NEW_COLUMN", "extra", strict) == "error"
    lenient = _request(ValidateConfig(warn_only=True))["policy"]
    assert classify("COMPARATOR_L_INFTY_HIGH", "contract", lenient) == "warning"
    assert classify("SCHEMA_MISSING_COLUMN", "customer_id", lenient) == "warning"


# -- results and report -----------------------------------------------------------------------------------
RESULT = {
    "dataset": "churn", "date": "2026-01-02", "previous_date": "2026-01-01", "status": "failed",
    "num_examples": 10, "schema_inferred": False, "schema_source": "/s/schema.pbtxt",
    "anomalies": [
        {"feature": "charges", "anomaly": "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH", "short": "High JSD",
         "description": "JSD 0.7 above 0.1", "severity": "error"},
        {"feature": "extra", "anomaly": "SCHEMA_NEW_COLUMN", "short": "New column",
         "description": "New column", "severity": "warning"},
    ],
    "drift": {"charges": {"measure": "jensen_shannon_divergence", "value": 0.7, "threshold": 0.1, "drifted": True},
              "tenure": {"measure": "jensen_shannon_divergence", "value": 0.01, "threshold": 0.1, "drifted": False}},
    "notes": [], "files": {"stats.pb": "/out/stats.pb"},
}


def test_parse_result_splits_blocking_and_warnings():
    r = parse_result(RESULT, report_uri="/lake/report.html")
    assert not r.passed and r.status == "failed"
    assert [a.feature for a in r.blocking] == ["charges"]
    assert [a.anomaly for a in r.warnings] == ["SCHEMA_NEW_COLUMN"]
    assert r.drifted == ["charges"] and r.drift["tenure"].value == 0.01
    assert r.report_uri == "/lake/report.html"
    dumped = r.model_dump(mode="json")
    assert dumped["passed"] is False and dumped["blocking"][0]["feature"] == "charges"


def test_parse_result_rejects_a_malformed_document():
    with pytest.raises(SkiffError, match="result skiff cannot read"):
        parse_result({**RESULT, "status": "maybe"})


def test_a_runner_verdict_that_disagrees_with_its_anomalies_is_refused():
    with pytest.raises(SkiffError, match="said 'passed' but its anomalies say 'failed'"):
        parse_result({**RESULT, "status": "passed"})  # RESULT holds a blocking (error) anomaly


def test_the_gate_fails_a_partition_on_any_blocking_anomaly():
    warn = Anomaly(feature="x", anomaly="SCHEMA_NEW_COLUMN", description="new", severity="warning")
    error = Anomaly(feature="y", anomaly="FLOAT_TYPE_HAS_NAN", description="nan", severity="error")
    assert gate_status([]) == "passed" and gate_status([warn, warn]) == "passed"
    assert gate_status([warn, error]) == "failed"
    assert error.is_blocking and not warn.is_blocking


def test_a_partitions_result_is_read_from_the_lake_with_its_output_uris(tmp_path):
    lake = _lake(tmp_path)
    with lake.store.atomic_dir(*validation_parts("churn", "2026-01-02")) as staging:
        (staging / "result.json").write_text(json.dumps({k: v for k, v in RESULT.items() if k != "files"}))
    with lake.store.atomic_dir(*validation_parts("churn", "2026-01-03")) as staging:
        (staging / "result.json").write_text('{"status": "maybe"}')
    lake.store.write_text("", *validation_parts("churn", "2026-01-04"), "report.html")  # no result: not listed
    assert validated_dates(lake, "churn") == ["2026-01-02", "2026-01-03"]
    r = read_result(lake, "churn", "2026-01-02")
    assert r.status == "failed" and [a.feature for a in r.blocking] == ["charges"] and r.drifted == ["charges"]
    assert r.report_uri == lake.store.uri("validation", "churn", "ingest_date=2026-01-02", "report.html")
    with pytest.raises(StorageError, match="ingest_date=2026-01-03/result.json: not a validation result"):
        read_result(lake, "churn", "2026-01-03")
    with pytest.raises(NotFoundError, match="no validation result for 2026-01-05"):
        read_result(lake, "churn", "2026-01-05")


def test_report_is_self_contained_and_escaped():
    rows = [{"name": "<script>alert(1)</script>", "kind": "categorical", "type": "string", "count": 3,
             "missing_pct": 0.0, "unique": 2, "top_values": [("<b>", 2)]},
            {"name": "charges", "kind": "numeric", "type": "float", "count": 3, "missing_pct": 25.0,
             "mean": 1.5, "std": 0.5, "min": 1.0, "median": 1.5, "max": 2.0, "zeros_pct": 0.0}]
    page = render_report(RESULT, rows)
    assert "<script" not in page and "&lt;script&gt;" in page and "&lt;b&gt; (2)" in page
    assert "http://" not in page and "https://" not in page
    assert "FAILED" in page and "JSD 0.7 above 0.1" in page and ">25<" in page


# -- the TFDV interpreter -------------------------------------------------------------------------------------
def test_tfdv_python_missing_names_make_setup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EnvironmentMissing, match="make setup") as exc:
        resolve_tfdv_python(str(tmp_path / "nowhere" / "python"))
    assert str(tmp_path / "nowhere" / "python") in exc.value.message
    with pytest.raises(EnvironmentMissing, match="SKIFF_TFDV_PYTHON"):
        resolve_tfdv_python("no-such-python-here")


def test_tfdv_python_resolves_relative_to_cwd_then_repo(tmp_path, monkeypatch):
    fake = tmp_path / "env" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.symlink_to(sys.executable)
    monkeypatch.chdir(tmp_path)
    found = resolve_tfdv_python("env/bin/python")
    assert found == tmp_path / "env" / "bin" / "python" and found.is_symlink()  # a venv python stays a link
    # a path that only exists under the repository holding skiff
    repo_rel = os.path.relpath(sys.executable, logic._repo_root())
    if not repo_rel.startswith(".."):
        assert resolve_tfdv_python(repo_rel) == logic._repo_root() / repo_rel


# -- the lake side ----------------------------------------------------------------------------------------------
def test_no_partitions_is_not_found(tmp_path):
    with pytest.raises(NotFoundError, match="no ingested partitions"):
        validate_partition(parse_spec(SPEC), _lake(tmp_path))


def test_unknown_date_lists_the_partitions(tmp_path):
    lake = _lake(tmp_path)
    _publish(lake, "2026-01-01")
    with pytest.raises(NotFoundError, match=r"ingest_date=2026-02-01 \(partitions: 2026-01-01\)"):
        validate_partition(parse_spec(SPEC), lake, date="2026-02-01")


def test_missing_tfdv_env_is_environment_missing(tmp_path):
    lake = _lake(tmp_path)
    _publish(lake, "2026-01-01")
    with pytest.raises(EnvironmentMissing, match="make setup"):
        validate_partition(parse_spec(SPEC), lake, tfdv_python=str(tmp_path / "no-venv" / "bin" / "python"))


def test_interpreter_without_tfdv_is_environment_missing(tmp_path):
    """The project's own python runs the runner for real; it lacks TFDV, which the runner reports."""
    lake = _lake(tmp_path)
    _publish(lake, "2026-01-01")
    with pytest.raises(EnvironmentMissing, match=r"TFDV cannot be imported.*make setup"):
        validate_partition(parse_spec(SPEC), lake, tfdv_python=sys.executable)
    assert not lake.store.exists(*validation_parts("churn"))  # nothing published


def test_drift_baseline_skips_failed_partitions(tmp_path):
    lake = _lake(tmp_path)
    for d in ("2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"):
        _publish(lake, d)
    assert drift_baseline(lake, "churn", "2026-01-01") == (None, False, [])
    assert drift_baseline(lake, "churn", "2026-01-02") == ("2026-01-01", False, [])  # never validated: its data
    _validated(lake, "2026-01-01", "passed")
    _validated(lake, "2026-01-02", "passed")
    _validated(lake, "2026-01-03", "failed")
    assert drift_baseline(lake, "churn", "2026-01-04") == ("2026-01-02", True, ["2026-01-03"])
    assert drift_baseline(lake, "churn", "2026-01-03") == ("2026-01-02", True, [])


def test_export_schema(tmp_path):
    lake = _lake(tmp_path)
    with pytest.raises(NotFoundError, match="no schema yet"):
        export_schema(lake, "churn", tmp_path / "out.pbtxt")
    lake.store.write_text('feature { name: "a" type: INT }\n', *validation_parts("churn"), "schema.pbtxt")
    out = export_schema(lake, "churn", tmp_path / "datasets" / "churn.schema.pbtxt")
    assert Path(out).read_text() == 'feature { name: "a" type: INT }\n'


# -- the CLI ------------------------------------------------------------------------------------------------------
def test_cli_errors(skiff_env, monkeypatch, capsys):
    save_spec(parse_spec(SPEC), skiff_env / "datasets" / "churn.yaml")
    assert main(["validate", "--dataset", "churn"]) == 2
    assert "no ingested partitions" in capsys.readouterr().err
    _publish(Lake(Store(str(skiff_env / ".skiff" / "lake"))), "2026-01-01")
    monkeypatch.setenv("SKIFF_TFDV_PYTHON", str(skiff_env / "missing" / "python"))
    assert main(["validate", "--dataset", "churn"]) == 2
    assert "make setup" in capsys.readouterr().err
    assert main(["validate", "--dataset", "churn", "--feature-threshold", "tenure"]) == 2
    assert "COLUMN=THRESHOLD" in capsys.readouterr().err
    assert main(["validate", "--dataset", "churn", "--new-columns", "fatal"]) == 2
    assert "--new-columns" in capsys.readouterr().err
    assert main(["validate", "--dataset", "churn", "--drift-threshold", "3"]) == 2
    assert "drift_threshold" in capsys.readouterr().err
    assert main(["validate", "--dataset", "churn", "--export-schema", "x.pbtxt"]) == 2
    assert "no schema yet" in capsys.readouterr().err


def test_runner_frame_conversion_keeps_types_tfdv_can_check():
    """The runner's Arrow-to-pandas step (run here with the project's pyarrow, in the TFDV env with its own)."""
    import datetime as dt
    import decimal

    from components.validate.tfdv_runner import _to_frame

    utc = dt.UTC
    table = pa.table({
        "n_int": pa.array([1, None], pa.int32()),
        "ts": pa.array([dt.datetime(2026, 1, 1, 0, 0, 1, 500_000, tzinfo=utc), None], pa.timestamp("us", tz="UTC")),
        "day": pa.array([dt.date(2026, 1, 2), None], pa.date32()),
        "flag": pa.array([True, None]),
        "price": pa.array([decimal.Decimal("1.25"), None], pa.decimal128(5, 2)),
        "plan": pa.array(["a", "b"]).dictionary_encode(),
        "empty": pa.array([None, None], pa.null()),
        "tags": pa.array([["x"], []], pa.list_(pa.string())),
    })
    frame, skipped = _to_frame(table)
    assert list(frame.columns) == ["n_int", "ts", "day", "flag", "price", "plan"]
    assert str(frame["n_int"].dtype) == "Int64" and frame["n_int"].isna().tolist() == [False, True]
    assert frame["ts"].iloc[0] == 1767225601 and frame["day"].iloc[0] == 1767312000  # epoch seconds
    assert frame["flag"].tolist()[0] == "true" and frame["price"].iloc[0] == 1.25
    assert frame["plan"].tolist() == ["a", "b"]
    assert [name for name, _ in skipped] == ["empty", "tags"]


# -- ids, exact counts, runs -------------------------------------------------------------------------------------
def test_request_marks_id_columns_and_names_the_runs():
    runs = [{"ingest_date": "2026-01-02", "run_id": "r2", "spec_hash": "h", "current_spec": True}]
    req = _request(runs=runs, notes=["a note"])
    assert {n for n, r in req["features"].items() if r["unique"]} == {"customer_id"}  # key and unique: true
    assert req["runs"] == runs and req["notes"] == ["a note"]
    composite = parse_spec({**SPEC, "entity_key": ["customer_id", "note"],
                            "columns": {**SPEC["columns"], "customer_id": {"type": "string"}}})
    req = build_request(composite, ValidateConfig(), date="d", files=["f"], output_dir="/o", schema_path="/s",
                        infer_schema=True)
    assert not any(r["unique"] for r in req["features"].values())  # one column of a composite key is no id


def test_report_counts_are_exact_and_ids_show_no_top_values():
    import pandas as pd

    from components.validate.tfdv_runner import exact_counts

    n = 100
    frame = pd.DataFrame({
        "customer_id": [f"c{i}" for i in range(n)],                    # the key: every id once
        "serial": [f"s{i}" for i in range(n - 5)] + ["s0"] * 5,       # 96 % distinct: near-unique
        "plan": ["basic"] * 61 + ["pro"] * 30 + [None] * 9,
        "tenure": list(range(n)),                                     # numeric: not a text column
    })
    small = pd.DataFrame({"colour": ["red", "blue", "green"]})     # all distinct, but only 3 values
    counts = exact_counts(frame, {"customer_id"})
    assert set(counts) == {"customer_id", "serial", "plan"}
    assert counts["plan"] == {"present": 91, "unique": 2, "near_unique": False,
                              "top_values": [("basic", 61), ("pro", 30)]}
    assert counts["customer_id"]["near_unique"] and counts["customer_id"]["top_values"] == []
    assert counts["serial"]["near_unique"] and counts["serial"]["unique"] == 95
    assert exact_counts(small, set())["colour"]["top_values"] == [("blue", 1), ("green", 1), ("red", 1)]

    page = render_report(
        {"dataset": "churn", "date": "2026-01-01", "status": "passed", "anomalies": [], "num_examples": n,
         "runs": [{"run_id": "r7"}], "notes": ["ingest_date=2026-01-01: 1 run(s) written with another spec left out"]},
        [{"name": "customer_id", "kind": "categorical", "count": n, "missing_pct": 0.0, **counts["customer_id"]},
         {"name": "plan", "kind": "categorical", "count": 91, "missing_pct": 9.0, **counts["plan"]}],
    )
    assert "<td>none shown: an id or near-unique column</td>" in page
    assert "<td>basic (61), pro (30)</td>" in page
    assert "<td>r7</td>" in page and "another spec left out" in page


def test_validate_takes_its_dataset_from_the_spec_file(skiff_env, monkeypatch, capsys):
    spec_file = skiff_env / "elsewhere" / "my-churn.yaml"
    save_spec(parse_spec(SPEC), spec_file)
    assert main(["validate", "--spec", str(spec_file)]) == 2  # the spec's dataset has no partition yet
    assert "dataset 'churn' has no ingested partitions" in capsys.readouterr().err
    _publish(Lake(Store(str(skiff_env / ".skiff" / "lake"))), "2026-01-01")
    monkeypatch.setenv("SKIFF_TFDV_PYTHON", str(skiff_env / "missing" / "python"))
    assert main(["validate", "--spec", str(spec_file)]) == 2
    assert "make setup" in capsys.readouterr().err  # got as far as starting TFDV
    assert main(["validate", "--spec", str(spec_file), "--dataset", "other"]) == 2
    assert "describes dataset 'churn', not 'other'" in capsys.readouterr().err
    assert main(["validate", "--spec", str(spec_file), "--run", "nope"]) == 2
    assert "no committed run 'nope'" in capsys.readouterr().err
    assert main(["validate"]) == 2
    assert "--dataset NAME (or --spec FILE)" in capsys.readouterr().err


def test_a_failed_validation_is_a_validation_failed_error_naming_features_and_report():
    from components.validate.logic import blocking_failure
    from skiff.errors import ValidationFailed
    from skiff.validation import Anomaly, ValidationResult

    def result(*anomalies: Anomaly, status: str) -> ValidationResult:
        return ValidationResult(dataset="orders", date="2026-01-02", status=status, num_examples=5,
                                schema_inferred=False, anomalies=list(anomalies),
                                report_uri="file:///lake/validation/orders/report.html")

    warn = Anomaly(feature="zone", anomaly="ENUM_TYPE_UNEXPECTED_STRING_VALUES", description="new",
                   severity="warning")
    assert blocking_failure(result(warn, status="passed")) is None
    nan = Anomaly(feature="amount", anomaly="FLOAT_TYPE_HAS_NAN", description="NaN", severity="error")
    err = blocking_failure(result(nan, warn, status="failed"))
    assert isinstance(err, ValidationFailed) and err.exit_code == 1
    assert str(err) == ("orders ingest_date=2026-01-02 failed validation: 1 blocking anomaly in amount; "
                        "report: file:///lake/validation/orders/report.html")
    assert err.detail["features"] == ["amount"]
