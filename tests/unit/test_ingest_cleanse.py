"""Coercion, missing values, rules, de-duplication and quarantine records of the cleanser."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from skiff.cleansing import Cleanser, KeySet, coerce_column
from skiff.errors import InputError, SpecError
from skiff.sources import SourceBatch
from skiff.spec import ColumnSpec, parse_spec

UTC = dt.UTC


def coerce(values, **col):
    arr = pa.array(values, pa.string()) if all(v is None or isinstance(v, str) for v in values) else pa.array(values)
    spec = ColumnSpec(**col)
    rule_sent = [str(v) for v in spec.sentinels]
    num_sent = [float(v) for v in spec.sentinels if isinstance(v, int | float)]
    out = coerce_column(arr, spec, pa.array(rule_sent, pa.string()) if rule_sent else None, num_sent)
    return out.values.to_pylist(), out.missing.tolist(), out.invalid.tolist()


@pytest.mark.parametrize("many", [False, True])  # the dictionary path (many rows) and the plain one
def test_floats_with_stray_spaces_decimal_commas_and_thousands(many):
    raw = [" 1.5 ", "2,25", "1.234,5", "1,234.5", "1 234,5", "1.234.567", "\u00a012\u00a0", "-3e2", "abc", "", None,
           "N/A", "nan", "inf", "1,5,6"]
    vals, missing, invalid = coerce(raw * (10 if many else 1), type="float")
    n = len(raw)
    assert vals[:n] == [1.5, 2.25, 1234.5, 1234.5, 1234.5, 1234567.0, 12.0, -300.0, None, None, None, None, None,
                        None, None]
    assert missing[:n] == [False] * 9 + [True] * 4 + [False, False]  # "", None, N/A, nan
    assert invalid[:n] == [False] * 8 + [True] + [False] * 4 + [True, True]  # abc, inf, 1,5,6


def test_integers_accept_whole_floats_and_reject_fractions():
    vals, missing, invalid = coerce(["7", " 8 ", "9.0", "1.000.000", "3.5", "12345678901234567890", "x"], type="integer")
    assert vals == [7, 8, 9, 1_000_000, None, None, None]
    assert invalid == [False, False, False, False, True, True, True]
    assert not any(missing)


@pytest.mark.parametrize("n", [1, 100])
def test_booleans_default_spellings_any_case(n):
    raw = ["Yes", "no", "Y", "n", "1", "0", "TRUE", "false", "t", "F", "on", "Off", "maybe", "", None]
    vals, missing, invalid = coerce(raw * n, type="boolean")
    assert vals[:15] == [True, False, True, False, True, False, True, False, True, False, True, False, None, None, None]
    assert invalid[:15] == [False] * 12 + [True, False, False]
    assert missing[:15] == [False] * 13 + [True, True]


def test_boolean_spellings_can_be_overridden_per_column():
    vals, _, invalid = coerce(["Churned", "Stayed", "yes"], type="boolean", true_values=["churned"],
                              false_values=["Stayed"])
    assert vals == [True, False, None]
    assert invalid == [False, False, True]


def test_datetimes_iso_with_and_without_offsets_become_utc():
    raw = ["2024-01-05", "2024-01-05 10:30:00", "2024-01-05T10:30:00Z", "2024-01-05T12:30:00+02:00",
           "2024-01-05T10:30:00.123456789", "2024-02-30", "05/01/2024", None]
    vals, missing, invalid = coerce(raw, type="datetime")
    assert vals[:5] == [dt.datetime(2024, 1, 5, tzinfo=UTC), dt.datetime(2024, 1, 5, 10, 30, tzinfo=UTC),
                        dt.datetime(2024, 1, 5, 10, 30, tzinfo=UTC), dt.datetime(2024, 1, 5, 10, 30, tzinfo=UTC),
                        dt.datetime(2024, 1, 5, 10, 30, 0, 123456, tzinfo=UTC)]
    assert invalid == [False] * 5 + [True, True, False]
    assert missing[-1]


def test_datetimes_with_a_format():
    vals, _, invalid = coerce(["05/01/2024 10:00", "31/12/2023 23:59", "2024-01-05 10:00"], type="datetime",
                              format="%d/%m/%Y %H:%M")
    assert vals[:2] == [dt.datetime(2024, 1, 5, 10, tzinfo=UTC), dt.datetime(2023, 12, 31, 23, 59, tzinfo=UTC)]
    assert invalid == [False, False, True]


def test_sentinels_numeric_and_textual():
    vals, missing, invalid = coerce(["-200", "-200.0", "-200,0", "5", "?", "N/A"], type="float", sentinels=[-200, "?"])
    assert vals == [None, None, None, 5.0, None, None]
    assert missing == [True, True, True, False, True, True]
    assert not any(invalid)
    vals, missing, _ = coerce(["unknown", "x", " unknown "], type="string", sentinels=["unknown"])
    assert vals == [None, "x", None] and missing == [True, False, True]


def test_strings_are_trimmed_and_empty_is_missing_but_none_is_a_value():
    vals, missing, _ = coerce(["  a ", "", "   ", "None", None], type="string")
    assert vals == ["a", None, None, "None", None]
    assert missing == [False, True, True, False, True]


def test_typed_input_from_parquet_or_sql():
    vals, _, invalid = coerce([1.0, 2.5, None, float("nan")], type="integer")
    assert vals == [1, None, None, None] and invalid == [False, True, False, False]
    vals, _, _ = coerce([1, 0, 2], type="boolean")
    assert vals == [True, False, None]
    ts = pa.array([dt.datetime(2024, 1, 1, 12)], pa.timestamp("ns"))
    out = coerce_column(ts, ColumnSpec(type="datetime"))
    assert out.values.type == pa.timestamp("us", tz="UTC")
    assert out.values.to_pylist() == [dt.datetime(2024, 1, 1, 12, tzinfo=UTC)]


SPEC = {
    "name": "t",
    "entity_key": "id",
    "event_timestamp": "ts",
    "columns": {
        "id": {"type": "string"},
        "ts": {"type": "datetime"},
        "amount": {"type": "float", "min": 0, "max": 100},
        "kind": {"type": "category", "allowed": ["a", "b"]},
        "code": {"type": "string", "regex": "[A-Z]{2}[0-9]"},
        "email": {"type": "string", "unique": True},
        "score": {"type": "integer", "missing": "reject"},
        "level": {"type": "integer", "missing": "impute", "impute": 3},
    },
}


def batch(rows, source="src.csv", offset=0, page=None):
    cols = {k: pa.array([r.get(k) for r in rows], pa.string()) for k in rows[0]}
    return SourceBatch(table=pa.table(cols), source=source, row_offset=offset, page=page)


GOOD = {"id": "k1", "ts": "2024-01-01", "amount": "5", "kind": "a", "code": "AB1", "email": "x@y", "score": "1",
        "level": "2"}


def test_each_rule_quarantines_with_its_reason_column_and_raw_value():
    c = Cleanser(parse_spec(SPEC))
    rows = [
        GOOD,
        {**GOOD, "id": "k2", "amount": "-1", "email": "e2"},
        {**GOOD, "id": "k3", "amount": "101", "email": "e3"},
        {**GOOD, "id": "k4", "kind": "z", "email": "e4"},
        {**GOOD, "id": "k5", "code": "ab1", "email": "e5"},
        {**GOOD, "id": "k6", "score": "", "email": "e6"},
        {**GOOD, "id": "k7", "amount": "lots", "email": "e7"},
        {**GOOD, "id": "k8", "email": "x@y"},  # not unique
        {**GOOD, "id": "", "email": "e9"},  # a missing key is never accepted
        {**GOOD, "id": "k10", "level": "", "email": "e10"},  # imputed with the constant
    ]
    res = c.process(batch(rows, offset=100))
    assert res.accepted.column("id").to_pylist() == ["k1", "k10"]
    assert res.accepted.column("level").to_pylist() == [2, 3]
    q = res.quarantine.to_pylist()
    got = [(r["_row"], r["_column"], r["_reason"]) for r in q]
    assert got == [(101, "amount", "below_min"), (102, "amount", "above_max"), (103, "kind", "not_allowed"),
                   (104, "code", "regex_mismatch"), (105, "score", "missing"), (106, "amount", "not_a_number"),
                   (107, "email", "not_unique"), (108, "id", "missing")]
    assert q[0]["amount"] == "-1" and q[5]["amount"] == "lots" and q[0]["_source"] == "src.csv"
    assert q[0]["_problems"] == "amount: below_min ('-1')"
    assert res.reasons == {"below_min": 1, "above_max": 1, "not_allowed": 1, "regex_mismatch": 1, "missing": 2,
                           "not_a_number": 1, "not_unique": 1}
    assert res.read == 10 == res.accepted.num_rows + res.quarantined + res.duplicates
    assert c.imputed_constant["level"] == 1


def test_a_row_with_several_problems_is_quarantined_once_with_all_of_them():
    c = Cleanser(parse_spec(SPEC))
    res = c.process(batch([{**GOOD, "amount": "-5", "kind": "q", "score": "x"}]))
    (row,) = res.quarantine.to_pylist()
    assert (row["_column"], row["_reason"]) == ("amount", "below_min")  # the first in spec order
    assert row["_problems"] == "amount: below_min ('-5'); kind: not_allowed ('q'); score: not_an_integer ('x')"
    assert res.reasons == {"below_min": 1}


def test_duplicates_on_key_and_timestamp_are_dropped_across_batches_keeping_the_first():
    c = Cleanser(parse_spec(SPEC))
    r1 = c.process(batch([GOOD, {**GOOD, "email": "e2"}, {**GOOD, "ts": "2024-01-02", "email": "e3"}]))
    assert r1.duplicates == 1 and r1.accepted.column("email").to_pylist() == ["x@y", "e3"]
    r2 = c.process(batch([{**GOOD, "email": "e4"}, {**GOOD, "id": "k9", "email": "e5"}]))
    assert r2.duplicates == 1 and r2.accepted.column("id").to_pylist() == ["k9"]
    assert r2.quarantined == 0


def test_a_rejected_first_row_does_not_make_a_later_good_one_a_duplicate():
    c = Cleanser(parse_spec(SPEC))
    res = c.process(batch([{**GOOD, "amount": "-1"}, GOOD]))
    assert (res.quarantined, res.duplicates, res.accepted.num_rows) == (1, 0, 1)


def test_dedupe_can_be_switched_off():
    c = Cleanser(parse_spec({**SPEC, "dedupe": False}))
    res = c.process(batch([GOOD, {**GOOD, "email": "e2"}]))
    assert (res.duplicates, res.accepted.num_rows) == (0, 2)


def test_required_column_missing_names_source_and_column():
    spec = parse_spec({**SPEC, "columns": {**SPEC["columns"], "score": {"type": "integer", "required": True}}})
    c = Cleanser(spec)
    rows = [{k: v for k, v in GOOD.items() if k != "score"}]
    with pytest.raises(InputError, match=r"api\.csv: required column 'score' missing"):
        c.process(batch(rows, source="api.csv"))


def test_unknown_columns_policy():
    rows = [{**GOOD, "extra": " x "}]
    drop = Cleanser(parse_spec(SPEC)).process(batch(rows))
    assert "extra" not in drop.accepted.column_names
    keep = Cleanser(parse_spec({**SPEC, "unknown_columns": "keep"})).process(batch(rows))
    assert keep.accepted.column("extra").to_pylist() == [" x "]
    with pytest.raises(InputError, match="'extra' not in the spec"):
        Cleanser(parse_spec({**SPEC, "unknown_columns": "reject"})).process(batch(rows))


def test_absent_optional_column_is_missing_and_follows_its_policy():
    rows = [{k: v for k, v in GOOD.items() if k != "level"}]
    res = Cleanser(parse_spec(SPEC)).process(batch(rows))
    assert res.accepted.column("level").to_pylist() == [3]


def test_output_types_follow_the_spec():
    res = Cleanser(parse_spec(SPEC)).process(batch([GOOD]))
    types = {f.name: f.type for f in res.accepted.schema}
    assert types == {"id": pa.string(), "ts": pa.timestamp("us", tz="UTC"), "amount": pa.float64(),
                     "kind": pa.string(), "code": pa.string(), "email": pa.string(), "score": pa.int64(),
                     "level": pa.int64()}


def test_malformed_rows_count_as_read_and_quarantined():
    b = batch([GOOD])
    b.malformed = [("expected 8 fields, got 9", "a,b,c")]
    res = Cleanser(parse_spec(SPEC)).process(b)
    assert (res.read, res.accepted.num_rows, res.quarantined) == (2, 1, 1)
    assert res.quarantine.column("_reason").to_pylist() == ["malformed_record"]


def test_spec_literals_are_checked_against_the_column_type():
    bad = {**SPEC, "columns": {**SPEC["columns"], "score": {"type": "integer", "allowed": [1, "two"]}}}
    with pytest.raises(SpecError, match=r"columns\.score\.allowed"):
        Cleanser(parse_spec(bad))
    bad = {**SPEC, "columns": {**SPEC["columns"], "level": {"type": "integer", "missing": "impute", "impute": "x"}}}
    with pytest.raises(SpecError, match=r"columns\.level\.impute"):
        Cleanser(parse_spec(bad))


def test_keyset_matches_a_python_set():
    rng = np.random.default_rng(1)
    ks, seen = KeySet(), set()
    for _ in range(40):
        keys = rng.integers(0, 5_000, rng.integers(1, 400)).astype(np.uint64)
        mask = ks.first_seen(keys)
        expected = []
        for k in keys.tolist():
            expected.append(k not in seen)
            seen.add(k)
        assert mask.tolist() == expected
    assert len(ks) == len(seen)
    assert len(ks._runs) <= 12  # merged, not one run per batch


def test_null_tokens_are_missing_in_typed_columns_and_values_in_text_columns_unless_sentinels():
    from skiff.cleansing import missing_text

    s = pa.array(["NA", "none", "", None, "x"], pa.string())
    assert missing_text(s, "float").to_pylist() == [True, True, True, True, False]
    assert missing_text(s, "category").to_pylist() == [False, False, True, True, False]
    assert missing_text(s, "string", pa.array(["NA"])).to_pylist() == [True, False, True, True, False]
    assert coerce(["NA", "x"], type="category", allowed=["NA", "x"])[1] == [False, False]


def test_generated_row_ids_differ_across_pages_and_scopes_and_repeat_for_the_same_read():
    from skiff.cleansing import ReasonTally

    spec = parse_spec({"name": "d", "entity_key": {"generated": "row"},
                       "columns": {"v": {"type": "integer", "min": 0}}})
    t = pa.table({"v": pa.array(["1", "-1"], pa.string())})

    def ids(**batch):
        res = Cleanser(spec).process(SourceBatch(t, source="https://api.example/x", **batch))
        return res.accepted.column("row_id").to_pylist(), res

    page1, res = ids(page=1)
    assert page1 == ids(page=1)[0] and page1 != ids(page=2)[0] and page1 != ids(page=1, key_scope="wm>5")[0]
    assert len(page1) == 1 and page1[0].endswith("-0") and "api.example" not in page1[0]
    tally = ReasonTally()
    tally.add(res.quarantine)
    tally.add(res.quarantine)
    assert tally.top() == [{"column": "v", "reason": "below_min", "count": 2, "example": "-1"}]
