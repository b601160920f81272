"""Spec inference from a sample (components/ingest/infer.py)."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.ingest.infer import infer_column, infer_dataset, infer_spec, sample_table, suggest_sentinels
from skiff.errors import SpecError, UsageError
from skiff.spec import FileSource


def col(values):
    return infer_column(pa.array(values, pa.string()))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1", " 2", "3 ", ""], {"type": "integer"}),
        (["1,5", "2,25", "1.234,5", "N/A"], {"type": "float"}),
        (["Yes", "no", "Y", "n"], {"type": "boolean"}),
        (["0", "1", "1", "0"], {"type": "integer"}),  # 1/0 alone read as numbers, not booleans
        (["2024-01-01", "2024-01-02T10:00:00Z", "2024-01-03 10:00"], {"type": "datetime"}),
        (["31/01/2024", "01/02/2024", "15/02/2024"], {"type": "datetime", "format": "%d/%m/%Y"}),
        (["a", "b", "a", "b", "c", "a"], {"type": "category", "allowed": ["a", "b", "c"]}),
        (["x1", "x2", "x3", "x4"], {"type": "string"}),
        ([None, "", " "], {"type": "string"}),
    ],
)
def test_column_types(values, expected):
    got = {k: v for k, v in col(values).items() if not k.startswith("_")}
    assert got == expected


def test_mostly_numeric_with_junk_is_still_numeric():
    assert col([str(i) for i in range(99)] + ["?"])["type"] == "integer"
    assert col([str(i) for i in range(90)] + ["?"] * 10)["type"] == "string"


def table(**cols):
    return pa.table({k: pa.array(v, pa.string()) for k, v in cols.items()})


def test_problem_type_from_the_target():
    n = 60
    base = {"id": [f"u{i}" for i in range(n)], "x": [str(i) for i in range(n)]}
    assert infer_spec(table(**base, y=["a", "b"] * 30), "d", "y").problem_type == "binary"
    assert infer_spec(table(**base, y=["a", "b", "c"] * 20), "d", "y").problem_type == "multiclass"
    reg = infer_spec(table(**base, y=[f"{i * 1.5}" for i in range(n)]), "d", "y")
    assert reg.problem_type == "regression" and reg.columns["y"].type == "float"
    assert infer_spec(table(**base, y=[str(i % 5) for i in range(n)]), "d", "y").problem_type == "multiclass"
    assert infer_spec(table(**base), "d", None).problem_type is None


def test_entity_key_prefers_id_like_unique_columns():
    t = table(value=["1", "2", "3"], user_id=["a", "b", "c"], when=["2024-01-01"] * 3)
    spec = infer_spec(t, "d", None)
    assert spec.entity_key == "user_id" and spec.event_timestamp == "when"
    assert spec.columns["user_id"].required and spec.columns["user_id"].missing == "reject"
    keyless = infer_spec(table(a=["1", "1"], b=["x", "x"]), "d", None)  # no key column: one per row
    assert keyless.entity_key.generated == "row" and keyless.key_columns == ["row_id"]


def test_sample_reads_only_the_first_rows(tmp_path):
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"id": list(range(50_000)), "v": [1.5] * 50_000}), path)
    t = sample_table(FileSource(path=str(path)), rows=10_000)
    assert t.num_rows == 10_000
    spec = infer_spec(t, "big", None, source=FileSource(path=str(path)))
    assert spec.columns["id"].type == "integer" and spec.columns["v"].type == "float"
    assert spec.entity_key == "id"


def test_an_id_column_with_a_few_repeated_rows_is_still_the_key(tmp_path):
    from components.ingest.infer import infer_spec

    ids = [f"C{i:04d}" for i in range(500)] + ["C0001", "C0002", "C0003"]  # an export with repeated rows
    table = pa.table({"customer_id": ids, "plan": ["a", "b", "c"] * 167 + ["a", "b"],
                      "spend": [float(i) for i in range(503)]})
    assert infer_spec(table, "c", None).entity_key == "customer_id"
    many = pa.table({"customer_id": ids[:100] * 5, "spend": [1.0] * 500})  # mostly repeats: not a key
    assert infer_spec(many, "c", None).entity_key.generated == "row"


def test_null_tokens_in_text_columns_are_read_alike_by_inference_and_ingestion():
    from skiff.cleansing import Cleanser
    from skiff.sources import SourceBatch

    n = 40
    t = table(id=[f"u{i}" for i in range(n)],
              alley=(["Grvl", "Pave"] * 4 + ["NA"] * 12) * 2,  # NA: no alley, a category of its own
              note=[f"text {i}" for i in range(n - 4)] + ["N/A", "None", "N/A", ""],
              size=[str(i) for i in range(n - 2)] + ["NA", "None"])
    inferred = infer_dataset(t, "houses", None)
    spec = inferred.spec
    assert spec.columns["alley"].allowed == ["Grvl", "NA", "Pave"] and spec.columns["alley"].sentinels == []
    assert "'NA' (60% of rows) kept as a value" in inferred.notes["alley"]
    assert spec.columns["note"].type == "string" and spec.columns["note"].sentinels == ["N/A", "None"]
    assert "read as missing (sentinels)" in inferred.notes["note"]
    assert spec.columns["size"].type == "integer" and spec.columns["size"].sentinels == []
    res = Cleanser(spec).process(SourceBatch(t, source="sample"))
    assert res.quarantined == 0 and res.accepted.num_rows == n  # before the fix: every NA row quarantined
    assert res.accepted.column("alley").to_pylist().count("NA") == 24
    assert res.accepted.column("note").null_count == 4 and res.accepted.column("size").null_count == 2


def test_a_recurring_extreme_value_is_proposed_as_a_sentinel_with_a_note():
    readings = [str(round(0.5 + (i % 50) / 10, 1)) for i in range(83)] + ["-200"] * 17
    inferred = infer_dataset(table(co=readings, zero_one=[str(i % 2) for i in range(100)],
                                   income=["0"] * 30 + [str(20_000 + 1_000 * i) for i in range(70)]), "air", None)
    co = inferred.spec.columns["co"]
    assert co.type == "float" and co.sentinels == [-200] and co.missing == "impute"
    assert inferred.notes["co"].startswith("-200 appears in 17% of sampled rows, the other values are never below 0.5")
    assert inferred.spec.columns["zero_one"].sentinels == [] and inferred.spec.columns["income"].sentinels == []
    capped = np.array([float(i) for i in range(1, 31)] + [40.0] * 5)  # a recurring maximum near the rest
    assert suggest_sentinels(capped, 35) == []
    high = np.array([float(i % 30) for i in range(95)] + [9999.0] * 5)
    assert [v for v, _ in suggest_sentinels(high, 100)] == [9999]


def test_a_given_key_that_repeats_is_refused_with_its_share_unless_allowed():
    t = table(code=["a", "b", "a", "c", "a", "b", "d", "e", "f", "g"], v=[str(i) for i in range(10)])
    with pytest.raises(UsageError, match=r"3 of 10 rows \(30.0%\) repeat") as err:
        infer_dataset(t, "d", None, entity_key="code")
    assert err.value.exit_code == 2 and "--allow-duplicate-keys" in err.value.message
    allowed = infer_dataset(t, "d", None, entity_key="code", allow_duplicate_keys=True)
    assert allowed.spec.entity_key == "code" and "30.0%" in allowed.messages[0]
    with pytest.raises(SpecError, match="'v' has type float; a key must be string, category or integer"):
        infer_dataset(table(v=["1.5", "2.5"], w=["a", "b"]), "d", None, entity_key="v")


def test_generated_key_on_request_avoids_a_taken_name():
    t = table(row_id=["1", "1"], temp=["1,5", "2"])
    spec = infer_spec(t, "s", None, generated_key="content")
    assert spec.entity_key.generated == "content" and spec.key_columns == ["row_id_2"]
    assert "row_id_2" not in spec.feature_columns and "row_id" in spec.feature_columns


def test_odd_headers_get_safe_names_and_keep_their_header_as_source_name():
    t = pa.table({" Total Charges ": pa.array(["1", "2"]), "CO(GT)": pa.array(["1", "2"]),
                  "id": pa.array(["a", "b"])})
    spec = infer_spec(t, "d", "CO(GT)")
    assert list(spec.columns) == ["Total_Charges", "CO_GT", "id"] and spec.target == "CO_GT"
    assert spec.columns["Total_Charges"].source_name == "Total Charges"
    assert spec.columns["id"].source_name is None
