"""Cleansing and validation of ingested batches against a dataset spec, column by column.

Every operation here is vectorised with pyarrow compute (and numpy masks): a batch of a million rows
costs a few dozen kernel calls per column, never a Python loop per row. Python loops run only over
the rows that are rejected, to spell out their problems.

What a batch goes through, per spec column, in spec order:

1. **Coercion** to the column type. Strings are trimmed. Numbers accept stray spaces (also inside,
   as thousands separators), decimal commas (``3,14``), ``1.234,5`` and ``1,234.5``; a lone comma is a
   decimal comma. Integers accept ``3.0``. Booleans accept true/false, t/f, yes/no, y/n, 1/0, on/off
   in any case (``true_values``/``false_values`` replace these). Datetimes are ISO 8601 (with or without
   an offset) or follow the column's ``format`` (strptime); values with an offset are converted to UTC,
   values without one are taken as UTC. A present value that does not coerce rejects the row.
2. **Missing values** (:func:`missing_text`, the one definition inference uses too): null, empty, a
   declared sentinel (compared with the trimmed text, and as a number for numeric columns), or for
   numeric, boolean and datetime columns one of ``NA, N/A, NaN, null, None, #N/A`` (any case). In string
   and category columns those tokens are values unless the column lists them in ``sentinels``: in many
   exports ``NA`` means "none" (no alley, no pool), a category of its own. Then the column's policy:
   ``reject`` the row, ``impute`` it, or ``keep`` it null. An entity-key value is never allowed to be
   missing.
3. **Rules** on present values: ``min``/``max`` (datetimes: seconds since the Unix epoch), ``allowed``,
   ``regex`` (full match).

A generated entity key (``entity_key: {generated: row|content}``) is made here, after coercion: ``row``
from the batch's source scope (:attr:`~skiff.sources.SourceBatch.key_scope`, else its source and page)
and each record's offset, ``content`` from a hash of the row's typed spec columns.

Then, on the rows that passed: de-duplication on the entity key (+ event timestamp), across all the
batches of a run (first row wins, later ones are counted as duplicates, not quarantined), and the
``unique`` rule (a later row with a value already written is quarantined). Rows seen across batches
are remembered by key only (:class:`KeySet`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from skiff.errors import InputError, SpecError
from skiff.identifiers import quote_name
from skiff.sources import SourceBatch
from skiff.spec import ColumnSpec, DatasetSpec

__all__ = [
    "ARROW_TYPES",
    "QUARANTINE_META",
    "BatchResult",
    "Cleanser",
    "KeySet",
    "coerce_column",
    "Coerced",
    "parse_numbers",
    "parse_datetimes",
    "impute_statistic",
    "missing_text",
    "NULL_TOKENS",
    "TEXT_TYPES",
    "ReasonTally",
]

#: Arrow type of each spec column type in the lake.
ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "category": pa.string(),
    "integer": pa.int64(),
    "float": pa.float64(),
    "boolean": pa.bool_(),
    "datetime": pa.timestamp("us", tz="UTC"),
}

#: Columns every quarantine row carries before the raw values (one string column per spec column).
QUARANTINE_META = pa.schema(
    [
        ("_source", pa.string()),  # file URI, database table/query, or API URL
        ("_row", pa.int64()),  # 0-based record offset in the file / query result / page
        ("_page", pa.int64()),  # REST page number (1-based), else null
        ("_column", pa.string()),  # the first column that failed (null for row-level problems)
        ("_reason", pa.string()),  # reason code of that failure
        ("_problems", pa.string()),  # every problem of the row, "column: reason (value)"; "; "-joined
    ]
)

#: Text meaning "no value" in numeric, boolean and datetime columns (any case, after trimming).
NULL_TOKENS = ["", "na", "n/a", "nan", "null", "none", "#n/a"]
#: Column types whose values are text: there a null token is a value unless listed in ``sentinels``.
TEXT_TYPES = ("string", "category")
_NULL_SET = pa.array(NULL_TOKENS, pa.string())
TRUE_WORDS = ["true", "t", "yes", "y", "1", "on"]
FALSE_WORDS = ["false", "f", "no", "n", "0", "off"]

_WS = r"[\s\x{00a0}\x{202f}']"  # spaces, no-break spaces and apostrophes used as thousands separators
_EU_DECIMAL = r"^[+-]?\d{1,3}(\.\d{3})+,\d*$"  # 1.234,5
_EU_THOUSANDS = r"^[+-]?\d{1,3}(\.\d{3}){2,}$"  # 1.234.567
_US_DECIMAL = r"^[+-]?\d{1,3}(,\d{3})+\.\d*$"  # 1,234.5
_US_THOUSANDS = r"^[+-]?\d{1,3}(,\d{3}){2,}$"  # 1,234,567
_FLOAT = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_INT = r"^[+-]?\d{1,18}(\.0*)?$"
_PLAIN_INT = r"^[+-]?\d{1,18}$"
_ISO_NAIVE = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?$"
_ISO_AWARE = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?\s?(Z|[+-]\d{2}(:?\d{2})?)$"

_EPOCH = pa.scalar(0, pa.timestamp("us", tz="UTC"))


@dataclass
class BatchResult:
    accepted: pa.Table
    quarantine: pa.Table
    read: int
    duplicates: int
    reasons: Counter[str]  # reason code -> quarantined rows

    @property
    def quarantined(self) -> int:
        return int(self.quarantine.num_rows)


#: one failed rule: (row mask, column, reason code, the column's raw values)
_Check = tuple[np.ndarray, str, str, pa.Array]


# --- coercion -----------------------------------------------------------------------------------------


@dataclass
class Coerced:
    values: pa.Array  # typed per the spec; null where missing or invalid
    missing: np.ndarray  # bool: no value (null, empty, sentinel, null token)
    invalid: np.ndarray  # bool: a value that does not coerce to the type
    reason: str  # reason code of `invalid`


def _mask(arr: pa.Array) -> np.ndarray:
    """A boolean arrow array as a numpy mask, nulls counting as False."""
    if arr.null_count:
        arr = pc.fill_null(arr, False)
    mask: np.ndarray = arr.to_numpy(zero_copy_only=False)
    return mask


def _null_where(arr: pa.Array, mask: np.ndarray) -> pa.Array:
    if not mask.any():
        return arr
    return pc.if_else(pa.array(mask), pa.nulls(len(arr), arr.type), arr)


def _as_text(arr: pa.Array) -> pa.Array:
    """Any arrow array as strings (raw values for the quarantine, regex checks)."""
    if pa.types.is_string(arr.type):
        return arr
    if pa.types.is_large_string(arr.type) or pa.types.is_dictionary(arr.type):
        return arr.cast(pa.string())
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), pa.string())
    try:
        return pc.cast(arr, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # nested or binary values
        return pa.array(
            [None if v is None else json.dumps(v, default=str) for v in arr.to_pylist()], pa.string()
        )


def _normalise_number_text(s: pa.Array) -> pa.Array:
    """Remove thousands separators and turn a decimal comma into a point."""
    s = pc.replace_substring_regex(s, pattern=_WS, replacement="")
    for pattern, sep in ((_EU_DECIMAL, "."), (_EU_THOUSANDS, "."), (_US_DECIMAL, ","), (_US_THOUSANDS, ",")):
        hit = pc.match_substring_regex(s, pattern=pattern)
        if pc.any(hit).as_py():
            s = pc.if_else(hit, pc.replace_substring(s, pattern=sep, replacement=""), s)
    return pc.replace_substring(s, pattern=",", replacement=".")


def parse_numbers(s: pa.Array, integer: bool) -> pa.Array:
    """Trimmed, null-token-free strings to int64/float64; null where a value does not parse.

    Plain numbers take one C++ cast; only the values that are not plain (decimal commas, thousands
    separators, ``3.0`` for an integer, junk) go through the slower normalisation.
    """
    target = pa.int64() if integer else pa.float64()
    try:  # clean data: one C++ cast
        return pc.cast(s, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    plain = _mask(pc.match_substring_regex(s, pattern=_PLAIN_INT if integer else _FLOAT))
    out = _cast_or_nulls(_null_where(s, ~plain), target)
    other = ~plain & _mask(s.is_valid())
    if other.any():
        t = _normalise_number_text(s.filter(pa.array(other)))
        ok = pc.match_substring_regex(t, pattern=_INT if integer else _FLOAT)
        t = pc.if_else(ok, t, pa.scalar(None, pa.string()))
        if integer:
            t = pc.replace_substring_regex(t, pattern=r"\.0*$", replacement="")
        out = pc.replace_with_mask(out, pa.array(other), _cast_or_nulls(t, target))
    return out


def _cast_or_nulls(s: pa.Array, target: pa.DataType) -> pa.Array:
    """Cast strings that match a number pattern; should the C++ parser still refuse one (e.g. an
    exponent out of range), fall back to pandas' parser for this array."""
    try:
        return pc.cast(s, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        num = pd.to_numeric(pd.Series(s.to_numpy(zero_copy_only=False), dtype=object), errors="coerce")
        out = pa.array(num, from_pandas=True).cast(pa.float64())
        if pa.types.is_integer(target):
            ok = pc.and_(pc.is_finite(out), pc.less_equal(pc.abs(out), 9.0e18))
            out = pc.if_else(ok, out, pa.scalar(None, pa.float64()))
        return out.cast(target, safe=False)


def parse_datetimes(s: pa.Array, fmt: str | None) -> pa.Array:
    """Trimmed strings to timestamp[us, UTC]; null where a value does not parse."""
    utc = pa.timestamp("us", tz="UTC")
    if fmt:
        out = pc.strptime(s, format=fmt, unit="us", error_is_null=True)
        return out.cast(utc) if out.type.tz is None else pc.cast(out, utc)
    try:
        return pc.cast(s, pa.timestamp("us")).cast(utc)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    parts = []
    for pattern, aware in ((_ISO_NAIVE, False), (_ISO_AWARE, True)):
        hit = pc.match_substring_regex(s, pattern=pattern)
        if not pc.any(hit).as_py():
            continue
        sub = pc.if_else(hit, s, pa.scalar(None, pa.string()))
        try:
            part = pc.cast(sub, utc if aware else pa.timestamp("us"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            # impossible dates (2024-02-30) or sub-microsecond digits: pandas' ISO parser, per subset so
            # that naive and offset values are never mixed in one call
            parsed = pd.to_datetime(
                pd.Series(sub.to_numpy(zero_copy_only=False)), format="ISO8601", utc=aware, errors="coerce"
            )
            part = pa.array(parsed).cast(utc if aware else pa.timestamp("us"), safe=False)
        parts.append(part.cast(utc) if part.type.tz is None else part)
    if not parts:
        return pa.nulls(len(s), utc)
    return pc.coalesce(*parts) if len(parts) > 1 else parts[0]


def missing_text(s: pa.Array, ctype: str, sentinels: pa.Array | None = None) -> pa.Array:
    """Which trimmed strings are missing in a column of type ``ctype``: null, empty, a sentinel, and for
    numeric, boolean and datetime columns a :data:`NULL_TOKENS` spelling. A boolean array without nulls.

    The one definition cleansing and spec inference share, so that what inference leaves out of an
    ``allowed`` list as missing is what cleansing treats as missing."""
    missing = pc.or_kleene(s.is_null(), pc.equal(s, ""))
    if ctype not in TEXT_TYPES:
        missing = pc.or_(missing, pc.is_in(pc.utf8_lower(s), value_set=_NULL_SET))
    if sentinels is not None and len(sentinels):
        missing = pc.or_(missing, pc.is_in(s, value_set=sentinels))
    return pc.fill_null(missing, True)


def _lower_set(values: list[str]) -> pa.Array:
    return pa.array(sorted({str(v).strip().lower() for v in values}), pa.string())


def coerce_column(arr: pa.Array, col: ColumnSpec, str_sentinels: pa.Array | None = None,
                  num_sentinels: list[float] | None = None) -> Coerced:
    """Coerce one raw column to its spec type; report missing and invalid values as masks."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type) or pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    n = len(arr)
    ctype = col.type
    is_str = pa.types.is_string(arr.type)
    if is_str and ctype in ("boolean", "category") and n > 64:
        # few distinct values: coerce the distinct ones, then map every row to its result
        return _coerce_dictionary(arr, col, str_sentinels, num_sentinels)
    if is_str and ctype in ("integer", "float", "datetime"):
        fast = _fast_cast(arr, ctype)
        if fast is not None:  # clean text (nulls aside): no trimming or tokens to look at
            missing = _mask(arr.is_null())
            if ctype == "datetime" and str_sentinels is not None and len(str_sentinels):
                missing |= _mask(pc.is_in(arr, value_set=str_sentinels))
                fast = _null_where(fast, missing)
            return _finish(fast, missing, ctype, num_sentinels)
    return _coerce_general(arr, col, str_sentinels, num_sentinels)


def _coerce_general(arr: pa.Array, col: ColumnSpec, str_sentinels: pa.Array | None,
                    num_sentinels: list[float] | None) -> Coerced:
    """Coercion of any raw column: trim, find missing values, parse what is left."""
    n = len(arr)
    ctype = col.type
    is_str = pa.types.is_string(arr.type)
    textual = is_str or pa.types.is_null(arr.type)
    if textual:
        s = pc.utf8_trim_whitespace(arr) if is_str else pa.nulls(n, pa.string())
        missing_arr = missing_text(s, ctype)
    else:
        s = None
        missing_arr = arr.is_null()
        if pa.types.is_floating(arr.type):
            missing_arr = pc.or_(missing_arr, pc.fill_null(pc.is_nan(arr), False))
    if str_sentinels is not None and len(str_sentinels):
        text = s if s is not None else _as_text(arr)
        missing_arr = pc.or_(missing_arr, pc.is_in(text, value_set=str_sentinels))
    missing = _mask(missing_arr)
    present_text = None if s is None else _null_where(s, missing)

    if ctype in ("string", "category"):
        values = present_text if present_text is not None else _null_where(_as_text(arr), missing)
    elif ctype in ("integer", "float"):
        if present_text is not None:
            values = parse_numbers(present_text, integer=ctype == "integer")
        else:
            values = _typed_number(_null_where(arr, missing), integer=ctype == "integer")
        return _finish(values, missing, ctype, num_sentinels)
    elif ctype == "boolean":
        true_set = _lower_set(col.true_values) if col.true_values else pa.array(TRUE_WORDS)
        false_set = _lower_set(col.false_values) if col.false_values else pa.array(FALSE_WORDS)
        if present_text is not None:
            low = pc.utf8_lower(present_text)
            is_t, is_f = pc.is_in(low, value_set=true_set), pc.is_in(low, value_set=false_set)
            values = pc.if_else(is_t, True, pc.if_else(is_f, False, pa.scalar(None, pa.bool_())))
        elif pa.types.is_boolean(arr.type):
            values = _null_where(arr, missing)
        elif pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
            num = _null_where(arr, missing).cast(pa.float64())
            values = pc.if_else(pc.equal(num, 1.0), True,
                                pc.if_else(pc.equal(num, 0.0), False, pa.scalar(None, pa.bool_())))
        else:
            low = pc.utf8_lower(pc.utf8_trim_whitespace(_as_text(_null_where(arr, missing))))
            values = pc.if_else(pc.is_in(low, value_set=true_set), True,
                                pc.if_else(pc.is_in(low, value_set=false_set), False,
                                           pa.scalar(None, pa.bool_())))
    elif ctype == "datetime":
        if present_text is not None:
            values = parse_datetimes(present_text, col.format)
        else:
            values = _typed_datetime(_null_where(arr, missing), col.format)
    else:  # pragma: no cover - the spec's Literal forbids it
        raise SpecError(f"unknown column type {ctype!r}")
    return _finish(values, missing, ctype, None)


def _reason(ctype: str) -> str:
    return {"integer": "not_an_integer", "float": "not_a_number"}.get(ctype, f"not_a_{ctype}")


def _finish(values: pa.Array, missing: np.ndarray, ctype: str, num_sentinels: list[float] | None) -> Coerced:
    """NaN is missing, infinity invalid, numeric sentinels missing; then what is null but not missing is
    invalid."""
    if ctype == "float":
        nan = _mask(pc.is_nan(values))
        if nan.any():
            missing = missing | nan
            values = _null_where(values, nan)
        inf = _mask(pc.is_inf(values))
        if inf.any():
            values = _null_where(values, inf)
    if num_sentinels and ctype in ("integer", "float"):
        hit = _mask(pc.is_in(values.cast(pa.float64()), value_set=pa.array(num_sentinels, pa.float64())))
        if hit.any():
            missing = missing | hit
            values = _null_where(values, hit)
    invalid = ~missing & _mask(values.is_null())
    return Coerced(values=values, missing=missing, invalid=invalid, reason=_reason(ctype))


def _fast_cast(arr: pa.Array, ctype: str) -> pa.Array | None:
    try:
        if ctype == "integer":
            return pc.cast(arr, pa.int64())
        if ctype == "float":
            return pc.cast(arr, pa.float64())
        return pc.cast(arr, pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _coerce_dictionary(arr: pa.Array, col: ColumnSpec, str_sentinels: pa.Array | None,
                       num_sentinels: list[float] | None) -> Coerced:
    """Coerce the distinct values once, then give every row the result of its value."""
    enc = pc.dictionary_encode(arr)
    sub = _coerce_general(enc.dictionary, col, str_sentinels, num_sentinels)
    idx = enc.indices
    values = sub.values.take(idx)
    is_null = _mask(idx.is_null())
    if len(sub.missing):
        pos = pc.fill_null(idx, 0).to_numpy(zero_copy_only=False)
        missing = np.where(is_null, True, sub.missing[pos])
        invalid = np.where(is_null, False, sub.invalid[pos])
    else:
        missing, invalid = is_null, np.zeros(len(arr), dtype=bool)
    return Coerced(values=values, missing=missing, invalid=invalid, reason=sub.reason)


def _typed_number(arr: pa.Array, integer: bool) -> pa.Array:
    t = arr.type
    if pa.types.is_string(t):
        return parse_numbers(pc.utf8_trim_whitespace(arr), integer)
    if pa.types.is_boolean(t):
        arr = arr.cast(pa.int64())
    if pa.types.is_decimal(t):
        arr = arr.cast(pa.float64())
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        return parse_numbers(pc.utf8_trim_whitespace(_as_text(arr)), integer)
    if not integer:
        return arr.cast(pa.float64())
    if pa.types.is_integer(arr.type):
        return arr.cast(pa.int64(), safe=False) if arr.type != pa.uint64() else _uint64_to_int64(arr)
    f = arr.cast(pa.float64())
    whole = pc.and_(pc.is_finite(f), pc.equal(pc.floor(f), f))
    whole = pc.and_(whole, pc.less_equal(pc.abs(f), 9.2e18))
    return pc.if_else(whole, f, pa.scalar(None, pa.float64())).cast(pa.int64(), safe=False)


def _uint64_to_int64(arr: pa.Array) -> pa.Array:
    ok = pc.less_equal(arr, pa.scalar(2**63 - 1, pa.uint64()))
    return pc.if_else(ok, arr, pa.scalar(None, pa.uint64())).cast(pa.int64())


def _typed_datetime(arr: pa.Array, fmt: str | None) -> pa.Array:
    utc = pa.timestamp("us", tz="UTC")
    t = arr.type
    if pa.types.is_timestamp(t):
        out = arr.cast(pa.timestamp("us", tz=t.tz), safe=False)
        return out.cast(utc)
    if pa.types.is_date(t):
        return arr.cast(pa.timestamp("us")).cast(utc)
    return parse_datetimes(pc.utf8_trim_whitespace(_as_text(arr)), fmt)


# --- keys seen across batches ---------------------------------------------------------------------------


class KeySet:
    """A set of 64-bit keys kept as a few sorted numpy runs (merged like a log-structured tree).

    Memory is 8 bytes per distinct key; a lookup is a binary search per run (at most log2(n) runs).
    Keys are the values themselves for one integer column (exact) and 64-bit hashes otherwise: two
    different keys collide with probability about n²/2⁶⁵ (≈3·10⁻⁶ for ten million keys).
    """

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(r) for r in self._runs)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        hit = np.zeros(len(keys), dtype=bool)
        for run in self._runs:
            pos = np.searchsorted(run, keys)
            pos[pos == len(run)] = len(run) - 1
            hit |= run[pos] == keys
        return hit

    def first_seen(self, keys: np.ndarray) -> np.ndarray:
        """Mark the first occurrence of each key not seen before (in this array or earlier), and add them."""
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        new = np.zeros(len(keys), dtype=bool)
        if not len(keys):
            return new
        uniq, first = np.unique(keys, return_index=True)
        fresh = ~self.contains(uniq)
        new[first[fresh]] = True
        self._add(uniq[fresh])
        return new

    def _add(self, sorted_keys: np.ndarray) -> None:
        if not len(sorted_keys):
            return
        self._runs.append(sorted_keys)
        while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            b, a = self._runs.pop(), self._runs.pop()
            merged = np.concatenate([a, b])
            merged.sort(kind="stable")  # two sorted runs: a linear merge
            self._runs.append(merged)


def _key_hashes(arrays: list[pa.Array]) -> np.ndarray:
    """One uint64 per row for the given (non-null) columns."""
    if len(arrays) == 1 and pa.types.is_integer(arrays[0].type):
        ints: np.ndarray = arrays[0].cast(pa.int64()).to_numpy(zero_copy_only=False)
        return ints.view(np.uint64)
    out: np.ndarray | None = None
    for arr in arrays:
        if pa.types.is_timestamp(arr.type):
            vals = arr.cast(pa.int64()).to_numpy(zero_copy_only=False)
        elif pa.types.is_string(arr.type):
            vals = arr.to_numpy(zero_copy_only=False)
        else:
            vals = arr.to_numpy(zero_copy_only=False)
        h = pd.util.hash_array(vals, categorize=False)
        out = h if out is None else (out * np.uint64(0x100000001B3)) ^ h
    if out is None:  # the callers always pass the entity key's columns at least
        raise ValueError("no key columns to hash")
    return out


# --- the cleanser -------------------------------------------------------------------------------------


@dataclass
class _Rule:
    """A compiled column: the spec plus what each batch needs ready-made."""

    name: str
    spec: ColumnSpec
    str_sentinels: pa.Array | None
    num_sentinels: list[float]
    allowed: pa.Array | None
    regex: str | None
    impute_value: pa.Scalar | None  # constant imputation, coerced to the column type
    is_key: bool


def _coerce_literals(values: list[Any], col: ColumnSpec, what: str, name: str) -> pa.Array:
    text = pa.array([None if v is None else (str(v).lower() if isinstance(v, bool) else str(v)) for v in values],
                    pa.string())
    out = coerce_column(text, col.model_copy(update={"sentinels": []}))
    bad = [values[i] for i in np.flatnonzero(out.invalid | out.missing)]
    if bad:
        raise SpecError(f"columns.{name}.{what}: {bad!r} cannot be read as {col.type}", column=name)
    return out.values


def _shown_headers(headers: list[str], most: int = 50) -> str:
    """Headers for a message: plain when short and printable, else quoted and cut (a 10k-character or
    multi-line header stays one readable line)."""
    shown = [h if h and len(h) <= 60 and h.isprintable() else quote_name(h) for h in headers[:most]]
    more = f", … ({len(headers) - most} more)" if len(headers) > most else ""
    return (", ".join(shown) + more) or "none"


class Cleanser:
    """Applies a dataset spec to batches; remembers keys across the batches of one run."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        keys = set(spec.key_columns)
        self.rules: list[_Rule] = []
        for name, col in spec.columns.items():
            str_sent = [str(v).lower() if isinstance(v, bool) else str(v) for v in col.sentinels]
            num_sent = [float(v) for v in col.sentinels
                        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
            if col.type in ("integer", "float"):  # "-200" in the spec text also means the number
                for v in col.sentinels:
                    if isinstance(v, str):
                        with contextlib.suppress(ValueError):
                            num_sent.append(float(v.replace(",", ".")))
            allowed = _coerce_literals(col.allowed, col, "allowed", name) if col.allowed else None
            impute_value = None
            if col.missing == "impute" and col.impute not in ("mean", "median", "mode"):
                impute_value = _coerce_literals([col.impute], col, "impute", name)[0]
            regex = None
            if col.regex is not None:
                regex = f"^(?:{col.regex})$"
                try:
                    pc.match_substring_regex(pa.array([""]), pattern=regex)
                except pa.ArrowInvalid as e:
                    raise SpecError(f"columns.{name}.regex: {e}", column=name) from e
            self.rules.append(_Rule(
                name=name, spec=col,
                str_sentinels=pa.array(str_sent, pa.string()) if str_sent else None,
                num_sentinels=num_sent, allowed=allowed, regex=regex,
                impute_value=impute_value, is_key=name in keys,
            ))
        self.generated = spec.generated_key
        self.dedupe_columns = spec.key_columns + (
            [spec.event_timestamp] if spec.event_timestamp and spec.event_timestamp not in keys else []
        )
        self._seen_keys = KeySet()
        self._seen_unique = {r.name: KeySet() for r in self.rules if r.spec.unique}
        self.extra_columns: list[str] = []  # unknown columns kept (unknown_columns=keep), in order seen
        # a column whose source header is not its name (ColumnSpec.source_name) is read under that header
        self.renames = {c.source_name: n for n, c in spec.columns.items() if c.source_name is not None}
        self.imputed_constant: Counter[str] = Counter()  # column -> values filled with a constant

    # -- schema ------------------------------------------------------------------------------------------
    @property
    def stat_imputed(self) -> dict[str, str]:
        """Columns imputed with a statistic of the run (column -> mean/median/mode)."""
        return {r.name: r.spec.impute for r in self.rules
                if r.spec.missing == "impute" and r.spec.impute in ("mean", "median", "mode")}

    def output_schema(self) -> pa.Schema:
        fields = [pa.field(r.name, ARROW_TYPES[r.spec.type]) for r in self.rules]
        fields += [pa.field(c, pa.string()) for c in self.extra_columns]
        return pa.schema(fields)

    def quarantine_schema(self) -> pa.Schema:
        return pa.schema(list(QUARANTINE_META) + [pa.field(r.name, pa.string()) for r in self.rules])

    def check_columns(self, columns: list[str], source: str) -> None:
        """A source's columns (its headers) against the spec: required ones present, unknown ones per the
        policy. A header named as a column's ``source_name`` counts as that column."""
        headers = columns
        columns = [self.renames.get(c, c) for c in headers]
        have = set(columns)
        gen = self.generated.column if self.generated is not None else None
        if gen is not None and gen in have:
            raise InputError(f"{source}: the data has a column {gen!r}, the name of the generated entity key: "
                             "set entity_key.column in the spec to another name (or use the column as the key)",
                             source=source, columns=[gen])
        missing = [r.name for r in self.rules if r.spec.required and r.name not in have and r.name != gen]
        if missing:
            raise InputError(
                f"{source}: required column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(m) for m in missing)} missing (columns found: {_shown_headers(headers)})",
                source=source, columns=missing,
            )
        unknown = [c for c in columns if c not in self.spec.columns]
        if unknown and self.spec.unknown_columns == "reject":
            raise InputError(
                f"{source}: column{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)} "
                "not in the spec (unknown_columns: reject)",
                source=source, columns=unknown,
            )
        if self.spec.unknown_columns == "keep":
            self.extra_columns += [c for c in unknown if c not in self.extra_columns]

    # -- one batch -----------------------------------------------------------------------------------------
    def process(self, batch: SourceBatch) -> BatchResult:
        table = batch.table
        self.check_columns(table.column_names, batch.source)
        if self.renames:  # positional, so a header that is another column's name moves with its column
            table = table.rename_columns([self.renames.get(c, c) for c in table.column_names])
        n = table.num_rows
        checks: list[_Check] = []
        constant_filled: dict[str, np.ndarray] = {}
        values: dict[str, pa.Array] = {}
        raw: dict[str, pa.Array] = {}
        generated = self.generated
        gen = generated.column if generated is not None else None
        for rule in self.rules:
            name, col = rule.name, rule.spec
            if name == gen:
                continue  # made from the other columns below
            arr = table.column(name).combine_chunks() if name in table.column_names else pa.nulls(n, pa.string())
            raw[name] = arr
            c = coerce_column(arr, col, rule.str_sentinels, rule.num_sentinels)
            v = c.values
            if c.invalid.any():
                checks.append((c.invalid, name, c.reason, arr))
            if (col.missing == "reject" or rule.is_key) and c.missing.any():
                checks.append((c.missing, name, "missing", arr))
            elif rule.impute_value is not None and c.missing.any():
                v = pc.fill_null(v, rule.impute_value)
                # counted over rows that end up written (rows rejected elsewhere are subtracted below)
                self.imputed_constant[name] += int((c.missing & ~c.invalid).sum())
                constant_filled[name] = c.missing
            present = ~(c.missing | c.invalid)
            if present.any():
                self._rule_checks(rule, v, present, arr, checks)
            values[name] = v
        if generated is not None:
            values[generated.column] = raw[generated.column] = (
                self._row_ids(batch) if generated.generated == "row" else self._content_ids(values, n))

        rejected = np.zeros(n, dtype=bool)
        for mask, *_ in checks:
            rejected |= mask
        ok = ~rejected

        # duplicates among rows that passed, across batches
        dup = np.zeros(n, dtype=bool)
        if self.spec.dedupe and ok.any():
            idx = np.flatnonzero(ok)
            key_arrays = [values[c].take(pa.array(idx)) for c in self.dedupe_columns]
            # a null event timestamp still dedupes on the key alone: hash it as a sentinel value
            key_arrays = [pc.fill_null(a, _EPOCH) if pa.types.is_timestamp(a.type) else a for a in key_arrays]
            first = self._seen_keys.first_seen(_key_hashes(key_arrays))
            dup[idx[~first]] = True
        # unique rule among the rows that will be written
        for name, seen in self._seen_unique.items():
            cand = ok & ~dup & _mask(values[name].is_valid())
            if cand.any():
                idx = np.flatnonzero(cand)
                first = seen.first_seen(_key_hashes([values[name].take(pa.array(idx))]))
                if not first.all():
                    mask = np.zeros(n, dtype=bool)
                    mask[idx[~first]] = True
                    checks.append((mask, name, "not_unique", raw[name]))
                    rejected |= mask
        keep = ~rejected & ~dup
        for name, filled in constant_filled.items():
            self.imputed_constant[name] -= int((filled & ~keep).sum())

        out_cols = {r.name: values[r.name] for r in self.rules}  # spec order, generated key included
        for extra in self.extra_columns:
            out_cols[extra] = (_as_text(table.column(extra).combine_chunks()) if extra in table.column_names
                               else pa.nulls(n, pa.string()))
        accepted = pa.table(out_cols, schema=self.output_schema())
        if not keep.all():
            accepted = accepted.filter(pa.array(keep))

        quarantine, reasons = self._quarantine(batch, rejected, checks, raw)
        result = BatchResult(accepted=accepted, quarantine=quarantine, read=batch.rows_read,
                             duplicates=int(dup.sum()), reasons=reasons)
        if result.read != accepted.num_rows + result.quarantined + result.duplicates:
            raise RuntimeError(
                f"ingest invariant broken in a batch of {batch.source}: read {result.read} != accepted "
                f"{accepted.num_rows} + quarantined {result.quarantined} + duplicates {result.duplicates}"
            )
        return result

    def check_column(self, name: str, arr: pa.Array) -> tuple[Coerced, list[tuple[np.ndarray, str]]]:
        """One column through the coercion and value rules of :meth:`process` (not the missing policy, keys
        or de-duplication): its coerced values and each failed rule as (row mask, reason code). For
        callers that judge records outside a run, such as the model server."""
        rule = next(r for r in self.rules if r.name == name)
        c = coerce_column(arr, rule.spec, rule.str_sentinels, rule.num_sentinels)
        checks: list[_Check] = [(c.invalid, name, c.reason, arr)] if c.invalid.any() else []
        present = ~(c.missing | c.invalid)
        if present.any():
            self._rule_checks(rule, c.values, present, arr, checks)
        return c, [(mask, reason) for mask, _col, reason, _raw in checks]

    @staticmethod
    def _row_ids(batch: SourceBatch) -> pa.Array:
        """``<12 hex digits of the source scope's hash>-<record offset>``: the same file (or table range, or
        page) read again gives the same ids; the hash keeps URLs and paths out of the data."""
        scope = json.dumps([batch.key_scope or batch.source, batch.page])
        prefix = hashlib.sha256(scope.encode()).hexdigest()[:12]
        offsets = pa.array(np.arange(batch.row_offset, batch.row_offset + batch.table.num_rows), pa.int64())
        return pc.binary_join_element_wise(pa.scalar(prefix), pc.cast(offsets, pa.string()), "-")

    def _content_ids(self, values: dict[str, pa.Array], n: int) -> pa.Array:
        """32 hex digits: two 64-bit hashes (keyed differently) of the row's typed spec columns, joined with
        a unit separator, a null spelled as NUL; equal rows get equal ids and de-duplicate."""
        if n == 0:
            return pa.array([], pa.string())
        skip = self.generated.column if self.generated is not None else None
        parts = [pc.fill_null(_as_text(values[r.name]), "\x00") for r in self.rules if r.name in values
                 and r.name != skip]
        text = pc.binary_join_element_wise(*parts, "\x1f").to_numpy(zero_copy_only=False).astype(object)
        lo = pd.util.hash_array(text, hash_key="skiff.content.k1", categorize=False)
        hi = pd.util.hash_array(text, hash_key="skiff.content.k2", categorize=False)
        return pa.array(np.char.add(np.char.mod("%016x", hi), np.char.mod("%016x", lo)), pa.string())

    def _rule_checks(self, rule: _Rule, v: pa.Array, present: np.ndarray, raw: pa.Array,
                     checks: list[_Check]) -> None:
        col, name = rule.spec, rule.name
        if col.min is not None or col.max is not None:
            if col.type in ("integer", "float"):
                num = v.cast(pa.float64(), safe=False)  # integers beyond 2**53 compare rounded, never raise
            elif col.type == "datetime":
                num = pc.divide(pc.cast(v, pa.int64()), 1_000_000.0)
            else:
                num = None
            if num is not None:
                if col.min is not None:
                    below = present & _mask(pc.less(num, col.min))
                    if below.any():
                        checks.append((below, name, "below_min", raw))
                if col.max is not None:
                    above = present & _mask(pc.greater(num, col.max))
                    if above.any():
                        checks.append((above, name, "above_max", raw))
        if rule.allowed is not None:
            bad = present & ~_mask(pc.is_in(v, value_set=rule.allowed))
            if bad.any():
                checks.append((bad, name, "not_allowed", raw))
        if rule.regex is not None:
            text = v if pa.types.is_string(v.type) else _as_text(v)
            bad = present & ~_mask(pc.match_substring_regex(text, pattern=rule.regex))
            if bad.any():
                checks.append((bad, name, "regex_mismatch", raw))

    def _quarantine(self, batch: SourceBatch, rejected: np.ndarray, checks: list[_Check],
                    raw: dict[str, pa.Array]) -> tuple[pa.Table, Counter[str]]:
        schema = self.quarantine_schema()
        reasons: Counter[str] = Counter()
        parts = []
        idx = np.flatnonzero(rejected)
        if len(idx):
            first_check = np.full(len(batch.table), -1, dtype=np.int64)
            for i, (mask, *_rest) in enumerate(checks):
                first_check[(first_check == -1) & mask] = i
            firsts = pa.array(first_check[idx])
            columns = pa.array([c[1] for c in checks], pa.string()).take(firsts)
            codes = pa.array([c[2] for c in checks], pa.string()).take(firsts)
            vc = pc.value_counts(codes).flatten()
            reasons.update(dict(zip(vc[0].to_pylist(), vc[1].to_pylist(), strict=True)))
            take = pa.array(idx)
            raw_text = {name: _as_text(arr.take(take)) for name, arr in raw.items()}
            # every problem of each rejected row as "column: reason ('value')", joined with "; "
            pieces = []
            for mask, name, code, _arr in checks:
                label = f"{name}: {code}"
                value = raw_text[name]
                text = pc.if_else(value.is_null(), label, pc.binary_join_element_wise(label + " ('", value, "')", ""))
                pieces.append(pc.if_else(pa.array(mask[idx]), text, pa.scalar(None, pa.string())))
            problems = pc.binary_join_element_wise(*pieces, "; ", null_handling="skip")
            cols = {
                "_source": pa.array([batch.source] * len(idx), pa.string()),
                "_row": pa.array(idx + batch.row_offset, pa.int64()),
                "_page": pa.array([batch.page] * len(idx), pa.int64()),
                "_column": columns,
                "_reason": codes,
                "_problems": problems,
            }
            cols.update(raw_text)
            parts.append(pa.table(cols, schema=schema))
        if batch.malformed:
            m = len(batch.malformed)
            reasons["malformed_record"] += m
            cols = {
                "_source": pa.array([batch.source] * m, pa.string()),
                "_row": pa.nulls(m, pa.int64()),
                "_page": pa.array([batch.page] * m, pa.int64()),
                "_column": pa.nulls(m, pa.string()),
                "_reason": pa.array(["malformed_record"] * m, pa.string()),
                "_problems": pa.array([f"{problem}: {text[:500]!r}" for problem, text in batch.malformed],
                                      pa.string()),
            }
            cols.update({r.name: pa.nulls(m, pa.string()) for r in self.rules})
            parts.append(pa.table(cols, schema=schema))
        if not parts:
            return schema.empty_table(), reasons
        return (parts[0] if len(parts) == 1 else pa.concat_tables(parts)), reasons



class ReasonTally:
    """Quarantined rows counted by (column, reason), with the first raw value seen for each: what a
    failed ingest tells the user to look at first."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str | None, str]] = Counter()  # (column, reason) -> rows
        self.examples: dict[tuple[str | None, str], str | None] = {}

    def add(self, quarantine: pa.Table) -> None:
        if not quarantine.num_rows:
            return
        groups = quarantine.group_by(["_column", "_reason"], use_threads=False).aggregate([("_reason", "count")])
        for column, reason, count in zip(*(groups.column(i).to_pylist() for i in range(3)), strict=True):
            key = (column, reason)
            self.counts[key] += count
            if key not in self.examples:
                hit = pc.and_kleene(pc.equal(quarantine.column("_reason"), reason),
                                    quarantine.column("_column").is_null() if column is None
                                    else pc.equal(quarantine.column("_column"), column))
                first = quarantine.filter(pc.fill_null(hit, False)).slice(0, 1)
                value = first.column(column if column is not None else "_problems")[0].as_py()
                self.examples[key] = None if value is None else str(value)[:60]

    def top(self, n: int = 5) -> list[dict[str, Any]]:
        """The ``n`` commonest (column, reason) pairs, most rows first, ties in column/reason order."""
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0][0] or "", kv[0][1]))[:n]
        return [{"column": c, "reason": r, "count": k, "example": self.examples.get((c, r))}
                for (c, r), k in ranked]


def impute_statistic(col: pa.ChunkedArray, how: str, typ: pa.DataType) -> Any:
    """mean / median / mode of the non-null values (None when there are none); integer columns get the
    mean or median rounded to the nearest integer; a tie for the mode goes to the smallest value."""
    if len(col) - col.null_count == 0:
        return None
    if how == "mean":
        value = pc.mean(col).as_py()
    elif how == "median":
        value = pc.quantile(col, q=0.5, interpolation="midpoint")[0].as_py()
    else:
        counts = pc.value_counts(col.drop_null()).flatten()
        freq = counts[1].to_numpy()
        best = counts[0].filter(pa.array(freq == freq.max()))
        value = pc.min(best).as_py()
    if value is not None and pa.types.is_integer(typ) and how in ("mean", "median"):
        value = round(value)
    return value
