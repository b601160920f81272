"""Request parsing for skiff's model server: V1 ``instances`` and V2 (Open Inference Protocol) inputs.

Both protocols become one columnar :class:`Batch` (feature -> list of values, in the order of the
version's ``features``) after every value is checked against the version's recorded input schema
(``string``, ``category``, ``integer``, ``float``, ``boolean``, ``datetime``). Anything wrong raises
:class:`BadRequest` — KServe's ``InvalidInput`` (HTTP 400) carrying the offending ``field`` — so a bad
request is answered with a JSON body that names what to fix, never with a 500.

Accepted shapes:

- V1: ``{"instances": [row, ...]}``, each row a list of values in feature order or an object keyed by
  feature name.
- V2: one input per feature (shape ``[n]`` or ``[n, 1]``), or a single 2-D tensor (any name that is not a
  feature, e.g. ``"input"``) of shape ``[n, len(features)]`` with the columns in feature order. ``data``
  may be flat (row-major) or nested.

``None`` (JSON ``null``) is accepted as a missing value; the batch records that it has one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kserve.errors import InvalidInput

__all__ = ["BadRequest", "Batch", "InputSchema", "parse_v1", "parse_v2", "check_column", "V2_DATATYPE"]

#: The V2 datatype a column of each spec type is described with in model metadata.
V2_DATATYPE = {"string": "BYTES", "category": "BYTES", "datetime": "BYTES", "integer": "INT64",
               "float": "FP64", "boolean": "BOOL"}
_NUMERIC_DT = frozenset({"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64",
                         "UINT8", "UINT16", "UINT32", "UINT64"})
_ACCEPTED_DT = {"string": frozenset({"BYTES"}), "category": frozenset({"BYTES"}),
                "datetime": frozenset({"BYTES"}), "integer": _NUMERIC_DT, "float": _NUMERIC_DT,
                "boolean": frozenset({"BOOL"})}
_ALL_DT = _NUMERIC_DT | {"BOOL", "BYTES"}


class BadRequest(InvalidInput):
    """A request the model cannot take; HTTP 400 with ``{"error", "message", "detail": {"field", ...}}``."""

    def __init__(self, message: str, field: str | None = None, **detail: Any) -> None:
        super().__init__(message)
        self.field = field
        self.detail = {"field": field, **detail} if field is not None else dict(detail)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": "InvalidInput", "message": self.reason}
        if self.detail:
            body["detail"] = self.detail
        return body


class _Mismatch(Exception):
    def __init__(self, expected: str) -> None:
        self.expected = expected


def _float(v: Any) -> Any:
    t = type(v)
    if t is float or t is int or v is None:
        return v
    raise _Mismatch("a number")


def _integer(v: Any) -> Any:
    t = type(v)
    if t is int or v is None:
        return v
    if t is float and v.is_integer():
        return int(v)
    raise _Mismatch("an integer")


def _boolean(v: Any) -> Any:
    if type(v) is bool or v is None:
        return v
    raise _Mismatch("true or false")


def _text(v: Any) -> Any:
    t = type(v)
    if t is str or v is None:
        return v
    if t is bytes:
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _Mismatch("UTF-8 text") from e
    raise _Mismatch("a string")


def _datetime(v: Any) -> Any:
    if v is None:
        return v
    v = _text(v)
    try:
        dt.datetime.fromisoformat(v[:-1] + "+00:00" if v.endswith("Z") else v)
    except ValueError as e:
        raise _Mismatch("an ISO 8601 date-time") from e
    return v


_CHECKS: dict[str, Callable[[Any], Any]] = {"float": _float, "integer": _integer, "boolean": _boolean,
                                            "string": _text, "category": _text, "datetime": _datetime}


def _describe(v: Any) -> str:
    name = {str: "string", bool: "boolean", int: "integer", float: "number", list: "list", dict: "object",
            bytes: "bytes"}.get(type(v), type(v).__name__)
    text = repr(v)
    return f"{name} {text[:40] + '...' if len(text) > 40 else text}"


@dataclass(frozen=True)
class InputSchema:
    """The columns a model version takes, in order, with their spec types."""

    features: tuple[str, ...]
    types: Mapping[str, str]

    @classmethod
    def build(cls, features: Sequence[str], types: Mapping[str, str]) -> InputSchema:
        if not features:
            raise ValueError("the model version records no input features")
        unknown = [f for f in features if types.get(f) not in _CHECKS]
        if unknown:
            raise ValueError(f"the input schema gives no known type for {unknown} "
                             f"(types: {sorted(_CHECKS)})")
        return cls(tuple(features), dict(types))

    @property
    def feature_set(self) -> frozenset[str]:
        return frozenset(self.features)


@dataclass
class Batch:
    """Checked request values by column, in feature order; ``missing`` tells whether any is None."""

    columns: dict[str, list[Any]]
    n: int
    missing: bool


def check_column(schema: InputSchema, name: str, values: list[Any], offset: int = 0) -> tuple[list[Any], bool]:
    check = _CHECKS[schema.types[name]]
    out = []
    missing = False
    try:
        for v in values:
            c = check(v)
            if c is None:
                missing = True
            out.append(c)
    except _Mismatch as m:
        i = len(out)
        raise BadRequest(f"feature {name!r} (row {i + offset}): expected {m.expected}, got {_describe(values[i])}",
                         name, row=i + offset, expected=schema.types[name]) from None
    return out, missing


def _names(names) -> str:
    return ", ".join(repr(n) for n in names)


def parse_v1(body: Any, schema: InputSchema) -> Batch:
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
    return Batch(columns, len(instances), any_missing)


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
        raise BadRequest(f"input {inp.name!r}: shape must be a list of integers, got {shape!r}", inp.name)
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


def parse_v2(request: Any, schema: InputSchema) -> Batch:
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
        return Batch(columns, n, any_missing)
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
    n = None
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
        if n is None:
            n = shape[0]
            if n < 1:
                raise BadRequest(f"input {f!r} is empty: send at least one row", f, shape=shape)
        elif shape[0] != n:
            raise BadRequest(f"input {f!r} has {shape[0]} rows but {features[0]!r} has {n}", f, shape=shape)
        columns[f], m = check_column(schema, f, _values(inp, n))
        any_missing |= m
    return Batch(columns, n or 0, any_missing)
