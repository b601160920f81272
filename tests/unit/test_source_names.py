"""Specs apply the identifier policy, and ingestion reads a column from its recorded source header."""

import pyarrow as pa
import pytest

from skiff.cleansing import Cleanser
from skiff.errors import InputError, SpecError
from skiff.sources import SourceBatch
from skiff.spec import json_sha256, parse_spec, spec_fingerprint


def spec(columns, **extra):
    return parse_spec({"name": "t", "entity_key": "id", "columns": {"id": {"type": "string"}, **columns}, **extra})


@pytest.mark.parametrize("bad", ['a"b', "a\nb", "__import__('os')", "prénom", "x" * 10_000, "", "1a", "__x"])
def test_a_column_name_outside_the_policy_is_refused_naming_it(bad):
    with pytest.raises(SpecError) as e:
        spec({bad: {"type": "float"}})
    assert "column name" in e.value.message and "ASCII letters" in e.value.message
    assert len(e.value.message) < 600


def test_derived_names_and_expressions_are_checked():
    with pytest.raises(SpecError, match="derived feature name"):
        spec({"a": {"type": "float"}}, derived=[{"name": "__r", "expr": "a * 2"}])
    with pytest.raises(SpecError, match="an expression may only use"):
        spec({"a": {"type": "float"}}, derived=[{"name": "r", "expr": "a.__class__"}])
    with pytest.raises(SpecError, match="unknown columns"):
        spec({"a": {"type": "float"}}, derived=[{"name": "r", "expr": "a * b"}])
    assert spec({"a": {"type": "float"}}, derived=[{"name": "r", "expr": "a > 1 and not a > 3"}]).derived


def test_two_columns_may_not_read_one_header():
    with pytest.raises(SpecError, match="both read the source column 'a b'"):
        spec({"a_b": {"type": "float", "source_name": "a b"}, "c": {"type": "float", "source_name": "a b"}})
    with pytest.raises(SpecError, match="both read the source column 'c'"):
        spec({"c": {"type": "float"}, "d": {"type": "float", "source_name": "c"}})


def test_the_cleanser_reads_each_column_under_its_source_header():
    # "a b" maps to a_b; the source's own a_b header (another column) maps to a_b_2: renamed by position
    s = spec({"a_b": {"type": "float", "source_name": "a b"}, "a_b_2": {"type": "integer", "source_name": "a_b"},
              "q": {"type": "string", "source_name": 'x"); import os; #'}}, unknown_columns="reject")
    table = pa.table({"id": ["1", "2"], "a_b": ["7", "8"], "a b": ["1.5", "2.5"], 'x"); import os; #': ["u", "v"]})
    out = Cleanser(s).process(SourceBatch(table=table, source="src.csv"))
    assert out.quarantined == 0
    assert out.accepted.column_names == ["id", "a_b", "a_b_2", "q"]
    assert out.accepted.column("a_b").to_pylist() == [1.5, 2.5]
    assert out.accepted.column("a_b_2").to_pylist() == [7, 8]
    assert out.accepted.column("q").to_pylist() == ["u", "v"]


def test_a_required_column_is_found_under_its_source_header():
    s = spec({"a_b": {"type": "float", "source_name": "a b", "required": True}})
    out = Cleanser(s).process(SourceBatch(table=pa.table({"id": ["1"], "a b": ["1"]}), source="src.csv"))
    assert out.accepted.column("a_b").to_pylist() == [1.0]
    with pytest.raises(InputError, match="'a_b' missing"):
        Cleanser(s).process(SourceBatch(table=pa.table({"id": ["1"], "a-b": ["1"]}), source="src.csv"))


def test_source_name_enters_the_fingerprint_only_when_set():
    plain = spec({"a": {"type": "float"}})
    # the fields added since (source_name, pii, drift_threshold) are left out when unset
    columns = {n: c.model_dump(mode="json", exclude={"description", "feature", "source_name", "pii",
                                                     "drift_threshold"})
               for n, c in plain.columns.items()}
    before = json_sha256({"columns": columns, "entity_key": plain.key_columns, "event_timestamp": None,
                          "dedupe": True, "unknown_columns": "drop"})
    assert spec_fingerprint(plain) == before  # specs written before source_name keep their fingerprint
    assert spec_fingerprint(spec({"a": {"type": "float", "source_name": "A "}})) != before
