"""Real TFDV runs through ``skiff validate``: schema inference, clean partitions, planted anomalies and drift.

The sequence runs once per module (each run starts the TFDV interpreter, 7-12 s) and the tests assert
on its results. Partitions are written straight into the lake with ``Lake.publish_run``.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.validate.logic import resolve_tfdv_python
from skiff.cli import main
from skiff.config import load_settings
from skiff.errors import EnvironmentMissing
from skiff.lake import Lake
from skiff.spec import parse_spec, save_spec
from skiff.storage import Store

pytestmark = [pytest.mark.tfdv, pytest.mark.integration, pytest.mark.slow]

SPEC = {
    "name": "churn",
    "entity_key": "customer_id",
    "event_timestamp": "ts",
    "target": "churn",
    "problem_type": "binary",
    "unknown_columns": "keep",
    "columns": {
        "customer_id": {"type": "string", "required": True, "unique": True},
        "ts": {"type": "datetime"},
        "tenure": {"type": "integer", "min": 0, "max": 120},
        "charges": {"type": "float"},
        "contract": {"type": "category", "allowed": ["Month-to-month", "One year", "Two year"]},
        "churn": {"type": "boolean"},
    },
}
D1, D2, D3, D4 = "2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"
ROWS = 1000


def _partition(date: str, seed: int, charges_shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "customer_id": [f"{date}-{i}" for i in range(ROWS)],
        "ts": pd.Timestamp(date) + pd.to_timedelta(rng.integers(0, 86_400, ROWS), unit="s"),
        "tenure": rng.integers(0, 100, ROWS),
        "charges": rng.normal(50 + charges_shift, 10, ROWS),
        "contract": rng.choice(["Month-to-month", "One year", "Two year"], ROWS),
        "churn": rng.random(ROWS) < 0.3,
    })


def _publish(lake: Lake, date: str, frame: pd.DataFrame) -> None:
    with lake.publish_run("churn", "run1", date) as staging:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), staging / "part-00000.parquet")


def _require_tfdv() -> None:
    try:
        resolve_tfdv_python(load_settings().tfdv_python)
    except EnvironmentMissing as e:  # a laptop without `make setup`
        pytest.skip(f"TFDV environment missing: {e.message}")


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Four partitions validated in order (plus the drifted one again with --warn-only)."""
    root = tmp_path_factory.mktemp("validate")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("SKIFF_ROOT", str(root / ".skiff"))
        mp.delenv("SKIFF_CONFIG", raising=False)
        _require_tfdv()
        save_spec(parse_spec(SPEC), root / "datasets" / "churn.yaml")
        lake = Lake(Store(str(root / ".skiff" / "lake")))

        _publish(lake, D1, _partition(D1, 1))
        d2 = _partition(D2, 2)
        d2.loc[:4, "contract"] = "Lifetime"  # 0.5 % out of domain: tolerated, a warning
        d2["promo"] = "none"  # a column the schema does not list: a warning by default
        _publish(lake, D2, d2)
        d3 = _partition(D3, 3).drop(columns=["churn"])  # the target is missing
        d3.loc[:99, "contract"] = "Lifetime"  # 10 % out of domain
        _publish(lake, D3, d3)
        _publish(lake, D4, _partition(D4, 4, charges_shift=25.0))  # numeric drift, values stay plausible

        res: dict[str, tuple[int, str, str]] = {}
        res["d1"] = _cli("validate", "--dataset", "churn", "--date", D1, "--json")
        res["export"] = _cli("validate", "--dataset", "churn", "--export-schema", "datasets/churn.schema.pbtxt")
        res["d2"] = _cli("validate", "--dataset", "churn", "--date", D2, "--json",
                         "--schema", "datasets/churn.schema.pbtxt")
        res["d3"] = _cli("validate", "--dataset", "churn", "--date", D3)
        res["d4"] = _cli("validate", "--dataset", "churn", "--date", D4, "--json")
        res["d4_warn"] = _cli("validate", "--dataset", "churn", "--date", D4, "--json", "--warn-only")
        yield {"root": root, "lake": lake, "res": res}


def _json(run: tuple[int, str, str]) -> dict:
    return json.loads(run[1])


def _lake_result(runs, date: str) -> dict:
    return runs["lake"].store.read_json("validation", "churn", f"ingest_date={date}", "result.json")


def test_first_partition_infers_the_schema_and_passes(runs):
    code, _, err = runs["res"]["d1"]
    assert code == 0, err
    r = _json(runs["res"]["d1"])
    assert r["passed"] and r["schema_inferred"] and r["previous_date"] is None and r["num_examples"] == ROWS
    schema = runs["lake"].store.read_text("validation", "churn", "schema.pbtxt")
    # the spec's rules are in the inferred schema: the domain from 'allowed', the range from min/max
    assert re.search(r'string_domain \{\s*value: "Month-to-month"\s*value: "One year"\s*value: "Two year"', schema)
    assert re.search(r"int_domain \{\s*min: 0\s*max: 120", schema)
    assert "min_examples_count: 1" in schema
    out = runs["lake"].store
    for name in ("stats.pb", "anomalies.json", "anomalies.pbtxt", "report.html", "result.json", "_COMMITTED"):
        assert out.exists("validation", "churn", f"ingest_date={D1}", name), name


def test_exported_schema_is_the_lake_schema(runs):
    code, _, err = runs["res"]["export"]
    assert code == 0, err
    exported = (runs["root"] / "datasets" / "churn.schema.pbtxt").read_text()
    assert exported == runs["lake"].store.read_text("validation", "churn", "schema.pbtxt")


def test_second_clean_partition_passes_with_warnings(runs):
    code, _, err = runs["res"]["d2"]
    assert code == 0, err
    r = _json(runs["res"]["d2"])
    assert r["passed"] and not r["schema_inferred"] and r["previous_date"] == D1
    assert r["schema_source"] == "datasets/churn.schema.pbtxt"
    assert r["blocking"] == []
    warned = {(a["feature"], a["anomaly"]) for a in r["warnings"]}
    assert ("contract", "ENUM_TYPE_UNEXPECTED_STRING_VALUES") in warned
    assert ("promo", "SCHEMA_NEW_COLUMN") in warned
    assert set(r["drift"]) == {"tenure", "charges", "contract", "churn"}
    assert r["drift"]["charges"]["measure"] == "jensen_shannon_divergence"
    assert r["drift"]["contract"]["measure"] == "l_infinity"
    assert not any(d["drifted"] for d in r["drift"].values())


def test_planted_anomaly_fails_with_exit_code_1(runs):
    code, out, err = runs["res"]["d3"]
    assert code == 1, err
    assert "2 blocking anomalies in churn, contract" in err and "Traceback" not in err
    assert re.search(r"contract\s.*ENUM_TYPE_UNEXPECT", out) and "report:" in out
    r = _lake_result(runs, D3)
    assert r["status"] == "failed"
    blocking = {(a["feature"], a["anomaly"]) for a in r["anomalies"] if a["severity"] == "error"}
    assert ("contract", "ENUM_TYPE_UNEXPECTED_STRING_VALUES") in blocking
    assert ("churn", "SCHEMA_MISSING_COLUMN") in blocking  # the target is required


def test_planted_drift_fails_naming_the_feature(runs):
    code, _, err = runs["res"]["d4"]
    assert code == 1
    assert "charges" in err
    r = _json(runs["res"]["d4"])
    assert not r["passed"]
    # the failed partition D3 is not the yardstick: D4 is compared with D2
    assert r["previous_date"] == D2 and any(D3 in n for n in r["notes"])
    assert [(a["feature"], a["anomaly"]) for a in r["blocking"]] == [
        ("charges", "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH")
    ]
    assert r["drift"]["charges"]["drifted"] and r["drift"]["charges"]["value"] > 0.1
    assert not r["drift"]["tenure"]["drifted"]


def test_warn_only_passes_the_same_partition(runs):
    code, _, err = runs["res"]["d4_warn"]
    assert code == 0, err
    r = _json(runs["res"]["d4_warn"])
    assert r["passed"] and r["blocking"] == []
    assert ("charges", "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH") in {
        (a["feature"], a["anomaly"]) for a in r["warnings"]
    }
    # the re-validation replaced the partition's outputs whole
    assert _lake_result(runs, D4)["status"] == "passed"


def test_report_is_self_contained_and_names_the_anomalous_feature(runs):
    store = runs["lake"].store
    page = store.read_text("validation", "churn", f"ingest_date={D3}", "report.html")
    assert not re.search(r"<script[^>]+src\s*=\s*[\"']?https?:", page, re.I)
    assert not re.search(r"<link[^>]+href\s*=\s*[\"']?https?:", page, re.I)
    assert "FAILED" in page
    assert "<td>contract</td><td>ENUM_TYPE_UNEXPECTED_STRING_VALUES</td>" in page
    assert "Lifetime" in page  # the unexpected value, in TFDV's description
    drift_page = store.read_text("validation", "churn", f"ingest_date={D2}", "report.html")
    assert "Numeric features" in drift_page and "<td>charges</td>" in drift_page
    # exact counts from the data (TFDV's sketch estimates are not shown), and no top values for the id
    d2 = _partition(D2, 2)
    d2.loc[:4, "contract"] = "Lifetime"
    expected = d2["contract"].value_counts()
    month = expected["Month-to-month"]
    assert re.search(rf"<td>contract</td><td>category</td>.*?Month-to-month \({month}\)", drift_page)
    assert f"One year ({expected['One year']})" in drift_page and f"Two year ({expected['Two year']})" in drift_page
    assert re.search(r"<td>customer_id</td><td>string</td>.*?none shown: an id or near-unique column", drift_page)
    report_uri = _json(runs["res"]["d2"])["report_uri"]
    assert Path(report_uri).is_file()


def test_remote_lake_files_are_copied_for_tfdv():
    """A lake that is not a local folder (fsspec's memory file system standing in for s3://)."""
    from components.validate.logic import ValidateConfig, validate_partition

    _require_tfdv()
    uri = f"memory://skiff-validate-{uuid.uuid4().hex}/lake"
    lake = Lake(Store(uri))
    assert not lake.store.is_local
    _publish(lake, D1, _partition(D1, 1))
    _publish(lake, D2, _partition(D2, 2, charges_shift=25.0))
    # D1 was never validated: its statistics come from its (copied) data in the same TFDV run
    result = validate_partition(parse_spec(SPEC), lake, date=D2, config=ValidateConfig())
    assert result.schema_inferred and result.previous_date == D1
    assert result.drifted == ["charges"] and not result.passed
    assert result.report_uri.startswith("memory://")
    assert lake.store.is_committed("validation", "churn", f"ingest_date={D2}")
    assert "charges" in lake.store.read_text("validation", "churn", f"ingest_date={D2}", "report.html")
    assert lake.store.exists("validation", "churn", "schema.pbtxt")


def test_validation_reads_the_current_specs_runs_and_blocks_an_empty_partition(tmp_path):
    """Runs stacked in one partition by a re-ingestion after a spec change: only the current spec's are
    validated (the runs the features step reads). A partition without rows blocks, even warn-only."""
    from components.validate.logic import ValidateConfig, validate_partition
    from skiff.lake import MANIFEST
    from skiff.spec import spec_fingerprint

    _require_tfdv()
    spec = parse_spec(SPEC)
    lake = Lake(Store(str(tmp_path / "lake")))

    def run(date: str, run_id: str, frame: pd.DataFrame, spec_hash: str, finished: str) -> None:
        with lake.publish_run("churn", run_id, date) as staging:
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), staging / "part-00000.parquet")
            (staging / MANIFEST).write_text(json.dumps({"spec_hash": spec_hash, "finished_at": finished}))

    current = spec_fingerprint(spec)
    old = _partition(D1, 1).head(50)
    old["contract"] = "Lifetime"  # what the earlier spec let through: would block if it were read
    run(D1, "old", old, "an-earlier-spec", f"{D1}T08:00:00+00:00")
    run(D1, "new", _partition(D1, 1), current, f"{D1}T09:00:00+00:00")
    first = validate_partition(spec, lake, date=D1)
    assert first.passed and first.num_examples == ROWS
    assert [(r["run_id"], r["current_spec"]) for r in first.runs] == [("new", True)]
    assert any("1 run(s) written with another spec left out" in n for n in first.notes)
    assert lake.store.read_json("validation", "churn", f"ingest_date={D1}", "result.json")["runs"] == first.runs
    # an explicit run id validates that run alone
    assert not validate_partition(spec, lake, run_id="old").passed

    run(D2, "empty", _partition(D2, 2).head(0), current, f"{D2}T09:00:00+00:00")
    for warn_only in (False, True):
        empty = validate_partition(spec, lake, date=D2, config=ValidateConfig(warn_only=warn_only))
        assert not empty.passed and empty.num_examples == 0
        assert [(a.feature, a.anomaly) for a in empty.blocking] == [("<dataset>", "DATASET_LOW_NUM_EXAMPLES")]
