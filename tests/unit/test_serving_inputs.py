"""Request parsing and checking for the model server: V1 instances and V2 inputs against a version's schema."""

import pytest

from serving.runtime.inputs import (
    _MEMO_SIZE,
    BadRequest,
    InputSchema,
    _text_of,
    check_column,
    parse_v1,
    parse_v2,
)

SCHEMA = InputSchema.build(
    ["plan", "usage", "seats", "annual", "since"],
    {"plan": "category", "usage": "float", "seats": "integer", "annual": "boolean", "since": "datetime"},
)
ROW = ["pro", 3.5, 4, True, "2026-01-02T03:04:05Z"]
ROW_DICT = dict(zip(SCHEMA.features, ROW, strict=True))


def _v2(inputs, request_id=None):
    from kserve.protocol.infer_type import InferInput, InferRequest

    return InferRequest("m", [InferInput(i["name"], i["shape"], i["datatype"], i["data"]) for i in inputs],
                        request_id=request_id)


def _named(n=1, **override):
    dts = {"plan": "BYTES", "usage": "FP32", "seats": "INT64", "annual": "BOOL", "since": "BYTES"}
    inputs = [{"name": f, "datatype": dts[f], "shape": [n], "data": [ROW_DICT[f]] * n} for f in SCHEMA.features]
    for inp in inputs:
        inp.update(override.get(inp["name"], {}))
    return inputs


def test_v1_rows_and_objects_become_columns_in_feature_order():
    batch = parse_v1({"instances": [ROW, {**ROW_DICT, "usage": 7}]}, SCHEMA)
    assert batch.n == 2 and not batch.missing
    assert list(batch.columns) == list(SCHEMA.features)
    assert batch.columns["usage"] == [3.5, 7]
    assert batch.columns["annual"] == [True, True]


def test_v1_null_is_a_missing_value():
    batch = parse_v1({"instances": [{**ROW_DICT, "usage": None}]}, SCHEMA)
    assert batch.missing and batch.columns["usage"] == [None]


def test_integer_column_takes_integral_floats_only():
    assert parse_v1({"instances": [{**ROW_DICT, "seats": 4.0}]}, SCHEMA).columns["seats"] == [4]
    with pytest.raises(BadRequest) as e:
        parse_v1({"instances": [{**ROW_DICT, "seats": 4.5}]}, SCHEMA)
    assert e.value.field == "seats"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ([ROW], "body", "JSON object"),
        ({}, "instances", "no \"instances\""),
        ({"instances": {"a": 1}}, "instances", "must be a list"),
        ({"instances": []}, "instances", "empty"),
        ({"instances": [ROW[:3]]}, "instances[0]", "has 3 values; the model takes 5"),
        ({"instances": ["pro"]}, "instances[0]", "list of values or an object"),
        ({"instances": [{k: v for k, v in ROW_DICT.items() if k != "usage"}]}, "usage", "lacks feature"),
        ({"instances": [{**ROW_DICT, "colour": "red"}]}, "colour", "unknown feature"),
        ({"instances": [{**ROW_DICT, "usage": "lots"}]}, "usage", "expected a number, got string"),
        ({"instances": [{**ROW_DICT, "usage": True}]}, "usage", "expected a number, got boolean"),
        ({"instances": [{**ROW_DICT, "annual": 2}]}, "annual", "expected true or false"),
        ({"instances": [{**ROW_DICT, "annual": "maybe"}]}, "annual", "expected true or false"),
        ({"instances": [{**ROW_DICT, "plan": [3]}]}, "plan", "expected a single value"),
        ({"instances": [{**ROW_DICT, "usage": float("inf")}]}, "usage", "magnitude at most"),
        ({"instances": [{**ROW_DICT, "usage": 1e300}]}, "usage", "magnitude at most"),
        ({"instances": [{**ROW_DICT, "seats": 10**30}]}, "seats", "expected an integer"),
        ({"instances": [{**ROW_DICT, "since": "yesterday"}]}, "since", "ISO 8601"),
    ],
)
def test_v1_bad_requests_name_the_field(body, field, words):
    with pytest.raises(BadRequest) as e:
        parse_v1(body, SCHEMA)
    assert e.value.field == field
    assert words in e.value.reason
    assert e.value.to_dict()["detail"]["field"] == field


def test_v1_error_names_the_row():
    with pytest.raises(BadRequest) as e:
        parse_v1({"instances": [ROW, {**ROW_DICT, "usage": "x"}]}, SCHEMA)
    assert e.value.detail["row"] == 1 and "row 1" in e.value.reason


def test_v2_named_inputs():
    batch = parse_v2(_v2(_named(n=2)), SCHEMA)
    assert batch.n == 2 and batch.columns["plan"] == ["pro", "pro"] and batch.columns["annual"] == [True, True]


def test_v2_inputs_in_any_order_and_column_shape():
    inputs = list(reversed(_named(n=1, usage={"shape": [1, 1], "data": [[3.5]]})))
    batch = parse_v2(_v2(inputs), SCHEMA)
    assert list(batch.columns) == list(SCHEMA.features) and batch.columns["usage"] == [3.5]


def test_v2_one_2d_tensor_nested_or_flat():
    nested = parse_v2(_v2([{"name": "input", "datatype": "BYTES", "shape": [2, 5], "data": [ROW, ROW]}]), SCHEMA)
    flat = parse_v2(_v2([{"name": "input", "datatype": "BYTES", "shape": [2, 5], "data": ROW + ROW}]), SCHEMA)
    assert nested.columns == flat.columns
    assert nested.columns["seats"] == [4, 4] and nested.n == 2


def test_v2_binary_bytes_are_decoded():
    batch = parse_v2(_v2(_named(plan={"data": [b"pro"]})), SCHEMA)
    assert batch.columns["plan"] == ["pro"]


@pytest.mark.parametrize(
    ("inputs", "field", "words"),
    [
        ([], "inputs", "no \"inputs\""),
        ([i for i in _named() if i["name"] != "seats"], "seats", "lacks feature"),
        ([*_named(), {"name": "colour", "datatype": "BYTES", "shape": [1], "data": ["red"]}], "colour", "unknown input"),
        (_named(usage={"datatype": "BOOL", "data": [True]}), "usage", "datatype BOOL does not fit a float"),
        (_named(usage={"data": ["3.5x"]}), "usage", "expected a number"),
        (_named(annual={"datatype": "INT64", "data": [7]}), "annual", "expected true or false"),
        (_named(usage={"data": [float("nan")], "shape": [2**70]}), "usage", "shape dimensions must be"),
        (_named(seats={"shape": [2], "data": [1, 2]}), "seats", "has 2 rows"),
        (_named(seats={"shape": [1, 2], "data": [1, 2]}), "seats", "shape must be [n] or [n, 1]"),
        (_named(plan={"shape": [2]}), "plan", "holds 2 values but data has 1"),
        (_named(n=0), "plan", "empty"),
        (_named(plan={"datatype": "STRING"}), "plan", "unsupported datatype"),
        ([{"name": "input", "datatype": "BYTES", "shape": [1, 5, 1], "data": [ROW]}], "input", "2-D tensor"),
        ([{"name": "input", "datatype": "BYTES", "shape": [1, 4], "data": [ROW[:4]]}], "input", "2-D tensor"),
        ([{"name": "input", "datatype": "BYTES", "shape": [5], "data": ROW}], "input", "one input per feature"),
        ([{"name": "input", "datatype": "BYTES", "shape": [1, 5], "data": [["pro", "x", 4, True, "2026-01-01"]]}],
         "usage", "expected a number"),
    ],
)
def test_v2_bad_requests_name_the_field(inputs, field, words):
    with pytest.raises(BadRequest) as e:
        parse_v2(_v2(inputs), SCHEMA)
    assert e.value.field == field
    assert words in e.value.reason


def test_schema_must_type_every_feature():
    with pytest.raises(ValueError, match="no known type"):
        InputSchema.build(["a", "b"], {"a": "float"})
    with pytest.raises(ValueError, match="no input features"):
        InputSchema.build([], {})


# -- online = offline: the version's column rules, applied by ingestion's cleanser ---------------------
RULES = {
    "plan": {"type": "category", "allowed": ["free", "pro", "team"]},
    "usage": {"type": "float", "sentinels": [-200], "missing": "impute", "impute": "median", "impute_value": 6.5,
              "min": 0},
    "seats": {"type": "integer", "missing": "reject"},
    "annual": {"type": "boolean", "true_values": ["Yes"], "false_values": ["No"]},
    "since": {"type": "datetime"},
}
RULED = InputSchema.build(list(SCHEMA.features), dict(SCHEMA.types), RULES)


def test_raw_export_values_become_what_the_lake_holds():
    raw = parse_v1({"instances": [[" pro ", "1.234,5", " 4 ", "Yes", "2026-01-02T03:04:05Z"],
                                  ["team", " ", "3", "No", "2026-01-02T03:04:05Z"],
                                  ["free", "-200", 2.0, "no", "2026-01-02T03:04:05Z"]]}, RULED)
    assert raw.columns["plan"] == ["pro", "team", "free"]
    assert raw.columns["usage"] == [1234.5, 6.5, 6.5]  # decimal comma; blank and sentinel imputed
    assert raw.columns["seats"] == [4, 3, 2]
    assert raw.columns["annual"] == [True, False, False]
    assert not raw.missing
    typed = parse_v1({"instances": [["pro", 1234.5, 4, True, "2026-01-02T03:04:05Z"]]}, RULED)
    assert {f: v[0] for f, v in typed.columns.items()} == {f: v[0] for f, v in raw.columns.items()}


def test_typed_sentinel_and_nan_follow_the_missing_policy():
    batch = parse_v1({"instances": [{**ROW_DICT, "usage": -200}, {**ROW_DICT, "usage": float("nan")}]}, RULED)
    assert batch.columns["usage"] == [6.5, 6.5]


@pytest.mark.parametrize(
    ("override", "field", "rule"),
    [
        ({"plan": "gold"}, "plan", "not_allowed"),
        ({"usage": -1.0}, "usage", "below_min"),
        ({"usage": "-1"}, "usage", "below_min"),
        ({"seats": None}, "seats", "missing"),
        ({"seats": " "}, "seats", "missing"),
        ({"annual": "oui"}, "annual", "not_a_boolean"),  # the spec's spellings are Yes/No (any case)
    ],
)
def test_what_ingestion_quarantines_is_a_400_naming_the_rule(override, field, rule):
    row = {**ROW_DICT, **override}
    with pytest.raises(BadRequest) as e:
        parse_v1({"instances": [row]}, RULED)
    assert e.value.field == field and e.value.detail["rule"] == rule, e.value.to_dict()
    assert field in e.value.reason


def test_typed_numbers_skip_text_coercion():
    """The fast path: clean typed values are returned as they are (no pyarrow round trip)."""
    values = [3.5, 7, 0.25]
    out, missing = check_column(RULED, "usage", values)
    assert out is values and not missing


# -- judgements remembered per column: the same answers, without the cleanser's per-call cost -----------
ODD = {
    "plan": [" pro ", "gold", "", None, "team", "NA", 3, True, "x" * 100],
    "usage": ["1.234,5", " ", "-200", "-1", "12 kWh", "inf", float("inf"), 1e300, "1e300", None, "NaN", 2.5, 7],
    "seats": [" 4 ", "3.0", "3.5", " ", None, 2**70, "9" * 30, -3, 4.0],
    "annual": ["Yes", " no ", "oui", "", None, 1, 0, 2, True],
    "since": ["2026-01-02T03:04:05Z", "2026-01-02 03:04:05+02:00", "2026-02-30", "soon", " ", None],
}


def _outcome(schema, name, values):
    try:
        return check_column(schema, name, values)
    except BadRequest as e:
        return e.detail["row"], e.detail["rule"]


@pytest.mark.parametrize("name", list(ODD))
def test_remembered_judgements_are_the_cleansers_own(name, monkeypatch):
    warm = InputSchema.build(list(SCHEMA.features), dict(SCHEMA.types), RULES)
    _outcome(warm, name, ODD[name])  # every text judged at once, then remembered (a bad one too)
    texts = {_text_of(v) for v in ODD[name]}
    assert set(warm.memo[name]) == {t for t in texts if t is None or len(t) <= 64}  # not the 100-character one

    def no_cleanser(*args):
        raise AssertionError("a remembered text reached the cleanser")

    for v in ODD[name]:
        fresh = InputSchema.build(list(SCHEMA.features), dict(SCHEMA.types), RULES)
        expected = _outcome(fresh, name, [v])
        if not (isinstance(v, str) and len(v) > 64):
            with monkeypatch.context() as m:
                m.setattr(warm.cleanser, "check_column", no_cleanser)
                assert _outcome(warm, name, [v]) == expected, v
        # in a batch, the first bad row is still the one named
        assert _outcome(warm, name, [v, v]) == _outcome(fresh, name, [v, v])


def test_the_memo_is_bounded():
    schema = InputSchema.build(list(SCHEMA.features), dict(SCHEMA.types), RULES)
    for start in range(0, _MEMO_SIZE + 500, 250):
        check_column(schema, "usage", [f"{i},5" for i in range(start, start + 250)])
        assert len(schema.memo["usage"]) <= _MEMO_SIZE
    assert check_column(schema, "usage", ["12,5"])[0] == [12.5]
