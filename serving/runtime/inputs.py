"""Request parsing for skiff's model server: V1 ``instances`` and V2 (Open Inference Protocol) inputs.

Both protocols become one columnar :class:`RequestRows` (feature -> list of values, in the order of the
version's ``features``) after every value is checked against the version's recorded input schema
(``string``, ``category``, ``integer``, ``float``, ``boolean``, ``datetime``) and column rules. Anything wrong raises
:class:`BadRequest` — KServe's ``InvalidInput`` (HTTP 400) carrying the offending ``field`` — so a bad
request is answered with a JSON body that names what to fix, never with a 500.

Accepted shapes:

- V1: ``{"instances": [row, ...]}``, each row a list of values in feature order or an object keyed by
  feature name.
- V2: one input per feature (shape ``[n]`` or ``[n, 1]``), or a single 2-D tensor (any name that is not a
  feature, e.g. ``"input"``) of shape ``[n, len(features)]`` with the columns in feature order. ``data``
  may be flat (row-major) or nested.

Values are judged column by column with the version's recorded column rules, by ingestion's own
cleanser (see :class:`InputSchema`): a raw export row and a typed JSON row get the same answer. ``None``
(JSON ``null``), NaN and whatever the rules call missing follow the column's missing policy; a batch
records whether a missing value is left.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

import numpy as np
from kserve.errors import InvalidInput

from skiff.cleansing import Cleanser
from skiff.spec import ColumnSpec, DatasetSpec

__all__ = ["BadRequest", "ErrorBody", "RequestRows", "InputSchema", "parse_v1", "parse_v2", "check_column", "V2_DATATYPE"]

#: The V2 datatype a column of each spec type is described with in model metadata.
V2_DATATYPE = {"string": "BYTES", "category": "BYTES", "datetime": "BYTES", "integer": "INT64",
               "float": "FP64", "boolean": "BOOL"}
_NUMERIC_DT = frozenset({"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64",
                         "UINT8", "UINT16", "UINT32", "UINT64"})
# BYTES fits every column: text is coerced as ingestion coerces a file's text ("29,85", "Yes", " ")
_ACCEPTED_DT = {"string": frozenset({"BYTES"}), "category": frozenset({"BYTES"}),
                "datetime": frozenset({"BYTES"}), "integer": _NUMERIC_DT | {"BYTES"},
                "float": _NUMERIC_DT | {"BYTES"}, "boolean": _NUMERIC_DT | {"BOOL", "BYTES"}}
#: The largest tensor dimension taken (a shape beyond it cannot match any request body).
_MAX_DIM = 2**31 - 1
_ALL_DT = _NUMERIC_DT | {"BOOL", "BYTES"}


class ErrorBody(TypedDict):
    """The JSON body of every error the model server answers (4xx and 5xx alike)."""

    error: str
    message: str
    detail: NotRequired[dict[str, Any]]


class BadRequest(InvalidInput):  # type: ignore[misc]  # kserve ships no types: InvalidInput is Any here
    """A request the model cannot take; HTTP 400 with ``{"error", "message", "detail": {"field", ...}}``."""

    def __init__(self, message: str, field: str | None = None, **detail: Any) -> None:
        super().__init__(message)
        self.field = field
        self.detail = {"field": field, **detail} if field is not None else dict(detail)

    def to_dict(self) -> ErrorBody:
        body: ErrorBody = {"error": "InvalidInput", "message": self.reason}
        if self.detail:
            body["detail"] = self.detail
        return body


class _Mismatch(Exception):
    def __init__(self, expected: str) -> None:
        self.expected = expected


#: The largest magnitude a number may have: the exported model computes in float32 (beyond it a value is
#: infinite there, and only an overflow on scikit-learn); both engines refuse it the same way.
MAX_MAGNITUDE = float(np.finfo(np.float32).max)
_INT64 = (-(2**63), 2**63 - 1)
#: The generated key column of the one-request data set the rules are compiled into (never a feature).
_REQUEST_KEY = "_skiff_request_row"

_EXPECTED = {"float": "a number", "integer": "an integer", "boolean": "true or false", "string": "a string",
             "category": "a string", "datetime": "an ISO 8601 date-time"}


def _text_of(v: Any) -> str | None:
    """A request value as the text a source file would hold (what ingestion coerces)."""
    t = type(v)
    if v is None or t is str:
        same: str | None = v
        return same
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    if t is float:
        return repr(v)  # shortest round-trip text; nan / inf as ingestion reads them
    if t is bytes:
        try:
            text: str = v.decode("utf-8")
            return text
        except UnicodeDecodeError as e:
            raise _Mismatch("UTF-8 text") from e
    raise _Mismatch("a single value")


@dataclass(frozen=True)
class _Column:
    """One input column's compiled rules: the cleansing rule, and the bounds of the fast path (typed JSON
    values that coercion would leave as they are skip the text coercion)."""

    name: str
    type: str
    spec: ColumnSpec
    lo: float
    hi: float
    num_sentinels: frozenset[float]
    str_sentinels: frozenset[str]
    allowed: frozenset[Any] | None
    regex: bool
    impute: Any  # the value a missing one becomes under missing: impute (None: stays missing)

    def clean(self, values: list[Any]) -> bool:
        """True when every value is typed and already what the rules would make of it."""
        t = self.type
        if t == "float":
            lo, hi, sent, allowed = self.lo, self.hi, self.num_sentinels, self.allowed
            for v in values:
                k = type(v)
                if (k is not float and k is not int) or not lo <= v <= hi:  # NaN fails the comparison too
                    return False
                if (sent and v in sent) or (allowed is not None and v not in allowed):
                    return False
            return True
        if t == "integer":
            lo, hi, sent, allowed = self.lo, self.hi, self.num_sentinels, self.allowed
            for v in values:
                if type(v) is not int or not lo <= v <= hi or (sent and v in sent) or (
                        allowed is not None and v not in allowed):
                    return False
            return True
        if t == "boolean":
            return not self.str_sentinels and self.allowed is None and all(type(v) is bool for v in values)
        if t in ("string", "category"):
            if self.regex:
                return False
            texts, allowed = self.str_sentinels, self.allowed
            for v in values:
                if type(v) is not str or not v or v[0].isspace() or v[-1].isspace():
                    return False
                if (texts and v in texts) or (allowed is not None and v not in allowed):
                    return False
            return True
        return False


def _compile(features: Sequence[str], types: Mapping[str, str],
             rules: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, _Column], Cleanser]:
    """The rules compiled by the ingestion cleanser itself (a one-request data set of the inputs)."""
    import pyarrow.compute as pc

    columns = {f: {k: v for k, v in (rules.get(f) or {"type": types[f]}).items() if k != "impute_value"}
               for f in features}
    for f in features:
        columns[f]["type"] = types[f]
    spec = DatasetSpec.model_validate({"name": "request", "entity_key": {"generated": "row", "column": _REQUEST_KEY},
                                       "columns": columns})
    cleanser = Cleanser(spec)
    out: dict[str, _Column] = {}
    for rule in cleanser.rules:
        if rule.name == _REQUEST_KEY:
            continue
        col, t = rule.spec, rule.spec.type
        lo, hi = -MAX_MAGNITUDE, MAX_MAGNITUDE
        if t == "integer":
            lo, hi = _INT64
        if t in ("float", "integer"):
            if col.min is not None:
                lo = max(lo, float(col.min))
            if col.max is not None:
                hi = min(hi, float(col.max))
        recorded = rules.get(rule.name) or {}
        impute = None
        if col.missing == "impute":
            impute = rule.impute_value.as_py() if rule.impute_value is not None else recorded.get("impute_value")
        if impute is not None and t == "datetime" and not isinstance(impute, str):
            impute = impute.isoformat()
        str_sent = frozenset(rule.str_sentinels.to_pylist()) if rule.str_sentinels is not None else frozenset()
        allowed = frozenset(pc.unique(rule.allowed).to_pylist()) if rule.allowed is not None else None
        out[rule.name] = _Column(rule.name, t, col, lo, hi, frozenset(rule.num_sentinels), str_sent, allowed,
                                 rule.regex is not None, impute)
    return out, cleanser


def _describe(v: Any) -> str:
    name = {str: "string", bool: "boolean", int: "integer", float: "number", list: "list", dict: "object",
            bytes: "bytes"}.get(type(v), type(v).__name__)
    text = repr(v)
    return f"{name} {text[:40] + '...' if len(text) > 40 else text}"


def _rule_text(col: _Column, rule: str) -> str:
    spec = col.spec
    if rule == "below_min":
        return f"below the spec's min {spec.min:g}"
    if rule == "above_max":
        return f"above the spec's max {spec.max:g}"
    if rule == "not_allowed":
        shown = sorted(map(str, col.allowed or ()))
        return f"not among the spec's allowed values ({', '.join(shown[:10])}{', ...' if len(shown) > 10 else ''})"
    if rule == "regex_mismatch":
        return f"does not match the spec's regex {spec.regex!r}"
    if rule == "missing":
        return "a missing value, and the spec's missing policy for it is reject"
    if rule == "out_of_range":
        return f"expected a number of magnitude at most {MAX_MAGNITUDE:.4g}"
    expected = _EXPECTED[col.type]
    if col.type == "boolean" and (spec.true_values or spec.false_values):
        expected += f" (spellings: {', '.join((spec.true_values or []) + (spec.false_values or []))})"
    return f"expected {expected}"


@dataclass(frozen=True)
class InputSchema:
    """The columns a model version takes, in order, with their spec types and column rules.

    Values are judged by the rules ingestion applied to the training rows (:mod:`skiff.cleansing`): a raw
    export value (``"Yes"``, ``"29,85"``, ``" "``, a sentinel) becomes what the lake holds, a value
    ingestion would quarantine is a :class:`BadRequest` naming the column and the rule, and a missing
    value follows the column's missing policy (``impute`` with the statistic recorded at registration).
    Numbers beyond :data:`MAX_MAGNITUDE` and infinities are refused; NaN is a missing value.
    """

    features: tuple[str, ...]
    types: Mapping[str, str]
    columns: Mapping[str, _Column] = field(default_factory=dict, compare=False, repr=False)
    cleanser: Cleanser | None = field(default=None, compare=False, repr=False)
    #: column -> text -> its judgement (see :func:`_judge`)
    memo: dict[str, dict[str | None, tuple[Any, bool, str | None]]] = field(
        default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, features: Sequence[str], types: Mapping[str, str],
              rules: Mapping[str, Mapping[str, Any]] | None = None) -> InputSchema:
        if not features:
            raise ValueError("the model version records no input features")
        unknown = [f for f in features if types.get(f) not in _EXPECTED]
        if unknown:
            raise ValueError(f"the input schema gives no known type for {unknown} "
                             f"(types: {sorted(_EXPECTED)})")
        columns, cleanser = _compile(features, types, dict(rules or {}))
        return cls(tuple(features), dict(types), columns, cleanser)

    @property
    def feature_set(self) -> frozenset[str]:
        return frozenset(self.features)


@dataclass
class RequestRows:
    """The checked rows of one request, by column in feature order (``n`` rows); ``missing`` tells whether
    any value is None (such rows are scored by the scikit-learn pipeline, never the ONNX export)."""

    columns: dict[str, list[Any]]
    n: int
    missing: bool


def _bad(col: _Column, rule: str, i: int, offset: int, values: list[Any]) -> BadRequest:
    shown = _describe(values[i])
    return BadRequest(f"feature {col.name!r} (row {i + offset}): {_rule_text(col, rule)}, got {shown}",
                      col.name, row=i + offset, rule=rule, expected=col.type)


#: Texts judged per column and remembered (all forgotten when full: one atomic step, safe across the
#: server's threads), and the longest text remembered: a raw export's categories, booleans and blanks
#: repeat, and a cleanser call costs ~0.25 ms a column (pyarrow kernels, regexes compiled per call)
_MEMO_SIZE = 4096
_MEMO_TEXT = 64


def _judge(schema: InputSchema, col: _Column, texts: list[str | None]) -> list[tuple[Any, bool, str | None]]:
    """Each text as ingestion's cleanser judges it alone: (value as the lake holds it, missing, the first
    rule it fails or None). Cleansing is element-wise (a value's fate never depends on the other rows), so
    a text's judgement is remembered per column and only texts not seen before reach the cleanser."""
    import pyarrow as pa

    memo = schema.memo.setdefault(col.name, {})
    judged: list[Any] = [memo.get(t) for t in texts]
    fresh = list(dict.fromkeys(t for t, j in zip(texts, judged, strict=True) if j is None))
    if not fresh:
        return judged
    if schema.cleanser is None:  # only InputSchema.build() compiles the rules
        raise ValueError("the input schema has no compiled column rules: make it with InputSchema.build()")
    coerced, failed = schema.cleanser.check_column(col.name, pa.array(fresh, pa.string()))
    rules = {int(i): rule for mask, rule in reversed(failed) for i in np.flatnonzero(mask)}
    if col.type in ("float", "integer"):
        import pyarrow.compute as pc

        big = pc.fill_null(pc.greater(pc.abs(coerced.values.cast(pa.float64(), safe=False)), MAX_MAGNITUDE), False)
        for i in np.flatnonzero(big.to_numpy(zero_copy_only=False)):
            rules.setdefault(int(i), "out_of_range")
    missing = coerced.missing.tolist()
    if col.spec.missing == "reject":
        for i in np.flatnonzero(coerced.missing):
            rules.setdefault(int(i), "missing")
    values = coerced.values.to_pylist()
    if col.type == "datetime":
        values = [None if v is None else v.isoformat() for v in values]
    found = {t: (values[i], missing[i], rules.get(i)) for i, t in enumerate(fresh)}
    for t, j in found.items():
        if t is None or len(t) <= _MEMO_TEXT:
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            memo[t] = j
    return [found[t] if j is None else j for t, j in zip(texts, judged, strict=True)]


def check_column(schema: InputSchema, name: str, values: list[Any], offset: int = 0) -> tuple[list[Any], bool]:
    """One column's request values as the lake would hold them, and whether one is missing (None)."""
    col: _Column = schema.columns[name]
    if col.clean(values):
        return values, False
    text: list[str | None] = []
    try:
        for v in values:
            text.append(_text_of(v))
    except _Mismatch as m:
        i = len(text)
        raise BadRequest(f"feature {name!r} (row {i + offset}): expected {m.expected}, got {_describe(values[i])}",
                         name, row=i + offset, rule="not_a_value", expected=col.type) from None
    judged = _judge(schema, col, text)
    for i, (_, _, rule) in enumerate(judged):
        if rule is not None:  # the first row with a problem is the one named
            if rule == "not_a_number" and type(values[i]) is float:  # a typed number fails only when infinite
                rule = "out_of_range"
            raise _bad(col, rule, i, offset, values)
    out = [v for v, _, _ in judged]
    any_missing = any(m for _, m, _ in judged)
    if any_missing and col.impute is not None:
        out = [col.impute if m else v for v, (_, m, _) in zip(out, judged, strict=True)]
        any_missing = False
    return out, any_missing


def _names(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names)


def parse_v1(body: Any, schema: InputSchema) -> RequestRows:
    """Check a V1 body ``{"instances": [...]}`` and return its values by column."""
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object with \"instances\", got {_describe(body)}", "body")
    instances = body.get("instances")
    if instances is None:
        raise BadRequest('the request body has no "instances" list', "instances")
    if not isinstance(instances, list):
        raise BadRequest(f'"instances" must be a list of rows, got {_describe(instances)}', "instances")
    if not instances:
        raise BadRequest('"instances" is empty: send at least one row', "instances")
    features = schema.features
    width = len(features)
    raw: dict[str, list[Any]] = {f: [] for f in features}
    fset = schema.feature_set
    for i, row in enumerate(instances):
        if type(row) is list:
            if len(row) != width:
                raise BadRequest(f"instances[{i}] has {len(row)} values; the model takes {width} "
                                 f"({_names(features)}), in that order", f"instances[{i}]", row=i)
            for f, v in zip(features, row, strict=True):
                raw[f].append(v)
        elif type(row) is dict:
            if row.keys() != fset:
                missing = [f for f in features if f not in row]
                if missing:
                    raise BadRequest(f"instances[{i}] lacks feature(s) {_names(missing)}", missing[0],
                                     row=i, missing=missing)
                extra = sorted(k for k in row if k not in fset)
                raise BadRequest(f"instances[{i}] has unknown feature(s) {_names(extra)}; the model takes "
                                 f"{_names(features)}", extra[0], row=i, extra=extra)
            for f in features:
                raw[f].append(row[f])
        else:
            raise BadRequest(f"instances[{i}] must be a list of values or an object of features, got "
                             f"{_describe(row)}", f"instances[{i}]", row=i)
    columns: dict[str, list[Any]] = {}
    any_missing = False
    for f in features:
        columns[f], m = check_column(schema, f, raw[f])
        any_missing |= m
    return RequestRows(columns, len(instances), any_missing)


def _flat(data: Any, name: str) -> list[Any]:
    if not isinstance(data, list):
        raise BadRequest(f"input {name!r}: data must be a list, got {_describe(data)}", name)
    if data and isinstance(data[0], list):
        out: list[Any] = []
        for item in data:
            out.extend(_flat(item, name) if isinstance(item, list) else [item])
        return out
    return data


def _shape(inp: Any) -> list[int]:
    shape = inp.shape
    if not isinstance(shape, list | tuple) or not all(type(s) is int for s in shape):
        raise BadRequest(f"input {inp.name!r}: shape must be a list of integers, got {str(shape)[:80]}", inp.name)
    if not all(0 <= s <= _MAX_DIM for s in shape):
        raise BadRequest(f"input {inp.name!r}: shape dimensions must be between 0 and {_MAX_DIM}, got "
                         f"{str(list(shape))[:80]}", inp.name)
    return list(shape)


def _values(inp: Any, expected: int) -> list[Any]:
    data = inp.data
    if data is None:
        raise BadRequest(f"input {inp.name!r} has no data", inp.name)
    if hasattr(data, "tolist"):
        data = data.tolist()
    flat = _flat(data, inp.name)
    if len(flat) != expected:
        raise BadRequest(f"input {inp.name!r}: shape {inp.shape} holds {expected} values but data has "
                         f"{len(flat)}", inp.name, shape=list(inp.shape), values=len(flat))
    return flat


def parse_v2(request: Any, schema: InputSchema) -> RequestRows:
    """Check a V2 ``InferRequest``: one input per feature, or one 2-D tensor with the columns in order."""
    inputs = list(request.inputs or [])
    if not inputs:
        raise BadRequest('the request has no "inputs"', "inputs")
    features = schema.features
    fset = schema.feature_set
    for inp in inputs:
        if inp.datatype not in _ALL_DT:
            raise BadRequest(f"input {inp.name!r}: unsupported datatype {inp.datatype!r} "
                             f"(use one of {sorted(_ALL_DT)})", inp.name, datatype=inp.datatype)
    if len(inputs) == 1 and inputs[0].name not in fset:
        inp = inputs[0]
        shape = _shape(inp)
        if len(shape) != 2 or shape[1] != len(features):
            if len(shape) == 1 and len(features) > 1:
                raise BadRequest(f"unknown input {inp.name!r}: send one input per feature ({_names(features)}) "
                                 f"or one 2-D tensor of shape [n, {len(features)}]", inp.name, shape=shape)
            raise BadRequest(f"input {inp.name!r}: a 2-D tensor of shape [n, {len(features)}] "
                             f"(columns {_names(features)}) was expected, got shape {shape}", inp.name, shape=shape)
        n = shape[0]
        if n < 1:
            raise BadRequest(f"input {inp.name!r} is empty: send at least one row", inp.name, shape=shape)
        flat = _values(inp, n * len(features))
        width = len(features)
        columns: dict[str, list[Any]] = {}
        any_missing = False
        for j, f in enumerate(features):
            try:
                columns[f], m = check_column(schema, f, flat[j::width])
            except BadRequest as e:
                e.detail["input"] = inp.name
                raise
            any_missing |= m
        return RequestRows(columns, n, any_missing)
    by_name: dict[str, Any] = {}
    for inp in inputs:
        if inp.name in by_name:
            raise BadRequest(f"input {inp.name!r} is given twice", inp.name)
        by_name[inp.name] = inp
    extra = [k for k in by_name if k not in fset]
    if extra:
        raise BadRequest(f"unknown input(s) {_names(extra)}; the model takes {_names(features)}", extra[0],
                         extra=extra)
    missing = [f for f in features if f not in by_name]
    if missing:
        raise BadRequest(f"the request lacks feature(s) {_names(missing)}", missing[0], missing=missing)
    count: int | None = None
    columns = {}
    any_missing = False
    for f in features:
        inp = by_name[f]
        shape = _shape(inp)
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise BadRequest(f"input {f!r}: shape must be [n] or [n, 1], got {shape}", f, shape=shape)
        if inp.datatype not in _ACCEPTED_DT[schema.types[f]]:
            raise BadRequest(f"input {f!r}: datatype {inp.datatype} does not fit a {schema.types[f]} feature "
                             f"(use {V2_DATATYPE[schema.types[f]]})", f, datatype=inp.datatype,
                             expected=schema.types[f])
        if count is None:
            count = shape[0]
            if count < 1:
                raise BadRequest(f"input {f!r} is empty: send at least one row", f, shape=shape)
        elif shape[0] != count:
            raise BadRequest(f"input {f!r} has {shape[0]} rows but {features[0]!r} has {count}", f, shape=shape)
        columns[f], m = check_column(schema, f, _values(inp, count))
        any_missing |= m
    return RequestRows(columns, count or 0, any_missing)
