"""Spec inference from a sample (components/ingest/infer.py)."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.ingest.infer import infer_column, infer_spec, sample_table
from skiff.errors import UsageError
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
    with pytest.raises(UsageError, match="--entity-key"):
        infer_spec(table(a=["1", "1"], b=["x", "x"]), "d", None)


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
    with pytest.raises(UsageError, match="entity key"):
        infer_spec(many, "c", None)
