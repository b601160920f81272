"""``skiff ingest`` and ``skiff init-dataset`` through the real CLI entry point: exit codes, output, files."""

import json
import textwrap

import pyarrow.parquet as pq
import pytest
import yaml

from skiff.cli import main

SPEC = {
    "name": "meters",
    "entity_key": "meter_id",
    "columns": {
        "meter_id": {"type": "integer", "required": True},
        "kwh": {"type": "float", "min": 0},
        "faulty": {"type": "boolean"},
    },
}
CSV = "meter_id,kwh,faulty\n1,1.5,no\n2,-1,yes\n3,2,y\n3,2,y\n"


@pytest.fixture
def project(skiff_env):
    (skiff_env / "datasets").mkdir()
    (skiff_env / "datasets" / "meters.yaml").write_text(
        yaml.safe_dump({**SPEC, "sources": [{"type": "file", "path": "data/m.csv"}]}))
    (skiff_env / "data").mkdir()
    (skiff_env / "data" / "m.csv").write_text(CSV)
    return skiff_env


def run_json(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


def test_ingest_json_summary_then_unchanged(project, capsys):
    code, out, _ = run_json(capsys, "ingest", "--dataset", "meters", "--json")
    assert code == 0
    assert out["status"] == "ingested" and out["dataset"] == "meters"
    assert out["counts"] == {"read": 4, "accepted": 2, "quarantined": 1, "duplicates": 1}
    assert out["quarantine_reasons"] == {"below_min": 1}
    assert set(out) >= {"run_id", "ingest_date", "partition", "duration_s"}
    part = project / ".skiff" / "lake" / "raw" / "meters" / f"ingest_date={out['ingest_date']}" / f"run={out['run_id']}"
    assert out["partition"] == str(part)
    assert pq.read_table(part / "part-00000.parquet").column("meter_id").to_pylist() == [1, 3]

    code, again, _ = run_json(capsys, "ingest", "-d", "meters", "--json")
    assert code == 0 and again["status"] == "unchanged" and again["run_id"] == out["run_id"]


def test_ingest_human_output_is_a_short_table(project, capsys):
    assert main(["ingest", "-d", "meters"]) == 0
    out = capsys.readouterr().out
    assert "read" in out and "quarantined" in out and "below_min 1" in out and "partition:" in out


def test_source_arguments_override_the_spec(project, capsys):
    (project / "other.csv").write_text("meter_id,kwh,faulty\n9,1,no\n")
    code, out, _ = run_json(capsys, "ingest", "-d", "meters", "other.csv", "--json")
    assert code == 0 and out["counts"]["read"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "-d", "nope"], "dataset spec not found: datasets/nope.yaml"),
        (["ingest", "-d", "meters", "missing.csv"], "missing.csv: file not found"),
        (["ingest", "-d", "meters", "--table", "t"], "need a SOURCE argument"),
        (["ingest", "-d", "meters", "postgresql://u:secret@127.0.0.1/db", "--table", "t"], "must not hold credentials"),
        (["ingest", "-d", "meters", "sqlite:///x.db"], "give --table or --query"),
        (["ingest", "-d", "meters", "data/m.csv", "--table", "t"], "apply to database sources only"),
        (["ingest", "-d", "meters", "--run-id", "a/b"], "run id 'a/b'"),
        (["ingest"], "give --dataset"),
    ],
)
def test_ingest_errors_exit_2_with_one_line(project, capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "skiff: error:" in err and message in " ".join(err.split())
    assert "secret" not in err
    assert not (project / ".skiff" / "lake" / "raw").exists()


def test_ingest_bad_file_content_exits_2(project, capsys):
    (project / "data" / "m.csv").write_text("")
    assert main(["ingest", "-d", "meters"]) == 2
    assert "data/m.csv: empty file" in capsys.readouterr().err


def test_ingest_spec_name_must_match(project, capsys):
    assert main(["ingest", "-d", "other", "--spec", "datasets/meters.yaml"]) == 2
    assert "describes dataset 'meters', not 'other'" in capsys.readouterr().err


CHURN = textwrap.dedent("""\
    customer_id;signup;monthly;seats;contract;paperless;region_code;churned
    C-001;2024-01-03;29,85;1;Month-to-month;Yes;FR-75;No
    C-002;2024-01-04;56,95;3;One year;No;FR-13;No
    C-003;2024-01-05;53,85;2;Month-to-month;Yes;DE-11;Yes
    C-004;2024-01-06;;1;Two year;No;FR-69;No
    C-005;2024-01-07;70,70;5;Month-to-month;Yes;ES-28;Yes
    C-006;2024-01-08;99,65;2;One year;No;IT-21;No
    """)


def test_init_dataset_infers_a_starting_spec_and_refuses_to_overwrite(skiff_env, capsys):
    (skiff_env / "churn.csv").write_text(CHURN)
    assert main(["init-dataset", "churn.csv", "--name", "churn", "--target", "churned"]) == 0
    assert capsys.readouterr().out.strip() == "datasets/churn.yaml"
    spec = yaml.safe_load((skiff_env / "datasets" / "churn.yaml").read_text())
    assert spec["entity_key"] == "customer_id"
    assert spec["event_timestamp"] == "signup"
    assert spec["problem_type"] == "binary"
    cols = spec["columns"]
    assert {c: v["type"] for c, v in cols.items()} == {
        "customer_id": "string", "signup": "datetime", "monthly": "float", "seats": "integer",
        "contract": "category", "paperless": "boolean", "region_code": "string", "churned": "boolean"}
    assert cols["contract"]["allowed"] == ["Month-to-month", "One year", "Two year"]
    assert cols["monthly"]["missing"] == "impute" and cols["monthly"]["impute"] == "median"
    assert cols["churned"]["required"] and cols["churned"]["missing"] == "reject"
    assert spec["sources"] == [{"type": "file", "path": "churn.csv"}]
    assert not any("sentinels" in v for v in cols.values())

    assert main(["init-dataset", "churn.csv", "--name", "churn", "--target", "churned"]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["init-dataset", "churn.csv", "--name", "churn", "--target", "seats", "--force", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["problem_type"] == "multiclass" and out["rows_sampled"] == 6

    # the inferred spec ingests its own source
    code, res, _ = run_json(capsys, "ingest", "-d", "churn", "--json")
    assert code == 0 and res["counts"] == {"read": 6, "accepted": 6, "quarantined": 0, "duplicates": 0}
    assert res["imputed"] == {"monthly": 1}


def test_init_dataset_output_path_entity_key_and_unknown_target(skiff_env, capsys):
    (skiff_env / "c.csv").write_text(CHURN)
    assert main(["init-dataset", "c.csv", "-n", "c", "-t", "churned", "-k", "region_code", "-o", "specs/c.yaml"]) == 0
    assert yaml.safe_load((skiff_env / "specs" / "c.yaml").read_text())["entity_key"] == "region_code"
    assert main(["init-dataset", "c.csv", "-n", "c2", "-t", "nope"]) == 2
    assert "target column 'nope' is not in the data" in capsys.readouterr().err


def _sensor_csv(rows: int = 120) -> str:
    """An hourly sensor export: no id column, decimal commas, -200 for a failed reading, NA for no alarm."""
    lines = ["when;CO(GT);alarm"]
    for i in range(rows):
        co = "-200" if i % 6 == 0 else f"{1 + (i % 40) / 10:.1f}".replace(".", ",")
        lines.append(f"2024-03-{1 + i // 24:02d} {i % 24:02d}:00:00;{co};{'high' if i % 5 == 0 else 'NA'}")
    return "\n".join(lines) + "\n"


def test_init_dataset_on_a_keyless_dirty_export_then_ingest(skiff_env, capsys):
    (skiff_env / "air.csv").write_text(_sensor_csv())
    assert main(["init-dataset", "air.csv", "--name", "air"]) == 0
    err = capsys.readouterr().err
    assert "entity_key: {generated: row}" in " ".join(err.split())
    text = (skiff_env / "datasets" / "air.yaml").read_text()
    assert "  # -200 appears in 17% of sampled rows, the other values are never below 1" in text
    assert "  # 'NA' (80% of rows) kept as a value" in text
    spec = yaml.safe_load(text)
    assert spec["entity_key"] == {"generated": "row"}  # the column's name (row_id) is the default
    assert spec["columns"]["CO_GT"] == {"type": "float", "source_name": "CO(GT)", "missing": "impute",
                                        "impute": "median", "sentinels": [-200]}
    code, res, _ = run_json(capsys, "ingest", "-d", "air", "--json")
    assert code == 0 and res["counts"] == {"read": 120, "accepted": 120, "quarantined": 0, "duplicates": 0}
    assert res["imputed"] == {"CO_GT": 20} and res["warnings"] == []


def test_init_dataset_refuses_a_repeating_key_unless_allowed_and_makes_content_keys(skiff_env, capsys):
    (skiff_env / "air.csv").write_text(_sensor_csv(48))
    # with the event timestamp a key may repeat (an entity's history): only key + time must be unique
    assert main(["init-dataset", "air.csv", "-n", "timed", "-k", "alarm"]) == 0
    (skiff_env / "plans.csv").write_text("plan,spend\n" + "".join(f"p{i % 2},{i}\n" for i in range(48)))
    assert main(["init-dataset", "plans.csv", "-n", "plans", "-k", "plan"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "entity key 'plan' is not unique in the sample: 46 of 48 rows (95.8%) repeat an earlier row" in err
    assert "--allow-duplicate-keys" in err and not (skiff_env / "datasets" / "plans.yaml").exists()
    assert main(["init-dataset", "plans.csv", "-n", "plans", "-k", "plan", "--allow-duplicate-keys"]) == 0
    capsys.readouterr()
    assert main(["init-dataset", "air.csv", "-n", "air2", "--generated-key", "content", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entity_key"] == {"generated": "content", "column": "row_id"}
    assert main(["init-dataset", "air.csv", "-n", "air3", "--generated-key", "hash"]) == 2
    assert "use row or content" in capsys.readouterr().err


def test_an_ingest_that_accepts_too_little_exits_1_with_its_reasons(project, capsys):
    (project / "data" / "m.csv").write_text("meter_id,kwh,faulty\n1,-1,no\n2,-2,yes\n")
    assert main(["ingest", "-d", "meters"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "0 of 2 rows accepted" in err and "kwh below_min ×2 (e.g. '-1')" in err
    assert not list((project / ".skiff" / "lake" / "raw").rglob("_COMMITTED"))
    (project / "data" / "m.csv").write_text("meter_id,kwh,faulty\n1,1,no\n2,-2,yes\n")
    assert main(["ingest", "-d", "meters", "--min-accepted-fraction", "0.9"]) == 1
    assert "1 of 2 rows accepted (50.0%, minimum 90.0%)" in " ".join(capsys.readouterr().err.split())
    code, out, _ = run_json(capsys, "ingest", "-d", "meters", "--min-accepted-fraction", "0.5", "--json")
    assert code == 0 and out["counts"]["accepted"] == 1
