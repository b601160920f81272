"""A starting dataset spec inferred from a sample of a source (``skiff init-dataset``).

The sample (first ~10k rows) is read with the same readers as ingestion and each column is judged
with the same coercion code, so what inference calls a float is what ingestion will parse as one, and
what it calls missing is what ingestion will treat as missing (:func:`skiff.cleansing.missing_text`):

- **boolean**: every value a true/false word (yes/no, true/false, y/n, t/f, on/off; not 1/0, which
  read as integers);
- **integer** / **float**: at least 95% of present values parse as numbers (stray spaces, decimal
  commas, thousands separators accepted); the rest will be quarantined by ingestion until the spec
  says what they are;
- **datetime**: at least 95% parse as ISO 8601, or as one of a few common day/month formats (then the
  spec gets ``format``);
- **category**: a string column with at most 20 distinct values that repeat (distinct ≤ half the
  present values), with ``allowed`` listing them;
- **string** otherwise.

Null tokens (``NA``, ``None``, ``N/A``…) mean missing in numeric, boolean and datetime columns. In a
category column they are kept as values (listed in ``allowed``: in many exports ``NA`` means "none");
in a string column the spellings seen become ``sentinels`` (missing). Either way a comment above the
column in the written spec says what was seen and how to change it.

**Sentinels**: a numeric column's minimum (or maximum) that occurs in at least 1% of the sampled rows
and lies more than 3 interquartile ranges beyond the quartiles of the other values (``-200`` among
readings of 0.1–12) becomes a sentinel, with a comment ("-200 appears in 17% of rows, the other values
are never below 0.1").

Names: a header that is not a valid name (:mod:`skiff.identifiers`) gets a safe one, and the header
is kept as ``source_name``.

The entity key is the given one (refused when it repeats in the sample, unless allowed), else a
column unique and never empty in the sample (an id-like name first), else a generated key
(``entity_key: {generated: row}``, or ``content`` when asked). The event timestamp is a datetime column
(a time-like name first); the problem type comes from the target: two distinct values → binary, a
number with more than 20 distinct values → regression, otherwise multiclass. Numeric features with
gaps get ``missing: impute`` with the median; the key and the target get ``required: true`` and
``missing: reject``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy.engine import Engine

from components.ingest.logic import open_reader
from skiff.cleansing import (
    FALSE_WORDS,
    NULL_TOKENS,
    TRUE_WORDS,
    missing_text,
    parse_datetimes,
    parse_numbers,
)
from skiff.errors import InputError, UsageError
from skiff.identifiers import safe_identifier, safe_identifiers
from skiff.spec import DatasetSpec, SourceSpec, SqlSource, parse_spec

log = logging.getLogger(__name__)

__all__ = ["sample_table", "infer_column", "infer_spec", "infer_dataset", "Inferred", "suggest_sentinels",
           "SAMPLE_ROWS"]

SAMPLE_ROWS = 10_000
SHARE = 0.95
MAX_CATEGORIES = 20
#: A sentinel candidate occurs in at least this share of the sampled rows ...
SENTINEL_SHARE = 0.01
#: ... and lies more than this many interquartile ranges beyond the quartiles of the other values.
SENTINEL_IQRS = 3.0
DATE_FORMATS = [
    "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d", "%d-%m-%Y",
    "%d/%m/%Y %H:%M:%S", "%m/%d/%Y %H:%M:%S", "%d.%m.%Y %H:%M:%S", "%Y/%m/%d %H:%M:%S",
    "%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M", "%d.%m.%Y %H:%M", "%d/%m/%Y %H.%M.%S",
]
_KEY_NAME = re.compile(r"(?i:^id$|_id$|^id_|uuid|key$|^key)|[a-z](?:ID|Id)$")  # customer_id, customerID
_TIME_NAME = re.compile(r"(time|date|^ts$|_ts$|_at$|created|updated|timestamp)", re.IGNORECASE)
_BOOL_WORDS = {w for w in TRUE_WORDS + FALSE_WORDS if not w.isdigit()}
_NULL_WORDS = pa.array([t for t in NULL_TOKENS if t], pa.string())


@dataclass
class Inferred:
    """An inferred spec and what a person should read before using it."""

    spec: DatasetSpec
    #: column -> what inference saw (written as a comment above the column)
    notes: dict[str, str] = field(default_factory=dict)
    #: decisions about the whole data set (the key), for the command's output
    messages: list[str] = field(default_factory=list)

    def summary(self, path: str, rows_sampled: int) -> dict[str, Any]:
        """What ``skiff init-dataset --json`` prints about the spec written to ``path``."""
        spec = self.spec
        key = spec.entity_key
        return {
            "path": path,
            "dataset": spec.name,
            "rows_sampled": rows_sampled,
            "entity_key": key if isinstance(key, str | list) else key.model_dump(mode="json"),
            "event_timestamp": spec.event_timestamp,
            "target": spec.target,
            "problem_type": spec.problem_type,
            "columns": {c: col.type for c, col in spec.columns.items()},
            "notes": self.notes,
            "messages": self.messages,
        }


def sample_table(source: SourceSpec, rows: int = SAMPLE_ROWS, *, http_transport: httpx.BaseTransport | None = None,
                 sql_engine: Engine | None = None) -> pa.Table:
    """The first ``rows`` rows of a source, as its reader gives them (strings for text formats)."""
    if isinstance(source, SqlSource):  # fetch no more than the sample from the database
        source = source.model_copy(update={"chunk_rows": min(rows, source.chunk_rows)})
    reader = open_reader(source, http_transport=http_transport, sql_engine=sql_engine)
    tables, got = [], 0
    gen = reader.batches()
    try:
        for batch in gen:
            if batch.table.num_rows:
                tables.append(batch.table.slice(0, rows - got))
                got += tables[-1].num_rows
            if got >= rows:
                break
    finally:
        close = getattr(gen, "close", None)  # a generator's: release the source's connection or file now
        if close is not None:
            close()
    if not tables:
        raise InputError(f"{reader.label}: no rows to infer a spec from")
    return pa.concat_tables(tables, promote_options="permissive")


def _share_valid(parsed: pa.Array) -> float:
    return 1.0 - parsed.null_count / len(parsed) if len(parsed) else 0.0


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)


def suggest_sentinels(values: np.ndarray, rows: int) -> list[tuple[int | float, str]]:
    """Sentinel candidates among a numeric column's present values (``rows``: the sample size), each with
    a note saying what was seen. See the module docstring for the rule."""
    values = values[np.isfinite(values)]
    out: list[tuple[int | float, str]] = []
    if len(values) < 20:
        return out
    for end in ("min", "max"):
        v = values.min() if end == "min" else values.max()
        hit = values == v
        others = values[~hit]
        if hit.sum() < SENTINEL_SHARE * rows or len(others) < 10:
            continue
        q1, q3 = np.percentile(others, [25, 75])
        iqr = q3 - q1
        far = v < q1 - SENTINEL_IQRS * iqr if end == "min" else v > q3 + SENTINEL_IQRS * iqr
        if iqr > 0 and far:
            edge, word = (others.min(), "below") if end == "min" else (others.max(), "above")
            out.append((_num(v), f"{_num(v)} appears in {hit.sum() / rows:.0%} of sampled rows, the other values "
                                 f"are never {word} {_num(edge)}: read as missing (sentinels); remove it from "
                                 "sentinels if it is a real value"))
    return out


def _token_note(tokens: dict[str, int], rows: int, kept: bool) -> str:
    seen = ", ".join(f"{t!r} ({k / rows:.0%} of rows)" if k / rows >= 0.01 else f"{t!r} ({k} rows)"
                     for t, k in tokens.items())
    if kept:
        return (f"{seen} kept as a value (in exports it often means 'none'); if it means missing, move it from "
                "allowed to sentinels")
    return f"{seen} read as missing (sentinels); remove it from sentinels if it is a real value"


def _numeric_hints(values: np.ndarray, n: int, out: dict[str, Any]) -> dict[str, Any]:
    found = suggest_sentinels(values, n)
    if found:
        out["sentinels"] = [v for v, _ in found]
        out["_note"] = "; ".join(note for _, note in found)
        out["_has_missing"] = True
    return out


def infer_column(arr: pa.Array | pa.ChunkedArray) -> dict[str, Any]:
    """A column spec (as a dict) for one sampled column, plus ``_distinct``/``_has_missing``/``_unique``
    hints and a ``_note`` on what was seen (null tokens, sentinels)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    n = len(arr)
    out: dict[str, Any]
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
        present = arr.drop_null()
        if pa.types.is_floating(t):
            present = present.filter(pc.invert(pc.is_nan(present)))
        if pa.types.is_boolean(t):
            out = {"type": "boolean"}
        elif pa.types.is_integer(t):
            out = {"type": "integer"}
        elif pa.types.is_floating(t) or pa.types.is_decimal(t):
            out = {"type": "float"}
        elif pa.types.is_timestamp(t) or pa.types.is_date(t):
            out = {"type": "datetime"}
        else:
            out = {"type": "string"}
        distinct = len(pc.unique(present))
        out["_distinct"] = distinct
        out["_has_missing"] = len(present) < n
        out["_unique"] = distinct == n
        if out["type"] in ("integer", "float"):
            out = _numeric_hints(present.cast(pa.float64()).to_numpy(zero_copy_only=False), n, out)
        return out
    s = pc.utf8_trim_whitespace(arr.cast(pa.string()) if not pa.types.is_null(t) else pa.nulls(n, pa.string()))
    # numbers, booleans and dates: null tokens are missing (as ingestion will read them)
    present = s.filter(pc.invert(missing_text(s, "float")))
    m = len(present)
    hints = {"_distinct": len(pc.unique(present)), "_has_missing": m < n,
             "_unique": len(pc.unique(present)) == n and m == n}
    if m == 0 and pc.all(missing_text(s, "string")).as_py():
        return {"type": "string", **hints}
    if m:
        lower = pc.utf8_lower(present)
        if pc.all(pc.is_in(lower, value_set=pa.array(sorted(_BOOL_WORDS)))).as_py():
            return {"type": "boolean", **hints}
        for ctype in ("integer", "float"):
            parsed = parse_numbers(present, integer=ctype == "integer")
            if _share_valid(parsed) >= SHARE:
                values = parsed.drop_null().cast(pa.float64()).to_numpy(zero_copy_only=False)
                return _numeric_hints(values, n, {"type": ctype, **hints})
        looks_dated = pc.any(pc.match_substring_regex(present, pattern=r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}")).as_py()
        if looks_dated:
            if _share_valid(parse_datetimes(present, None)) >= SHARE:
                return {"type": "datetime", **hints}
            for fmt in DATE_FORMATS:
                if _share_valid(parse_datetimes(present, fmt)) >= SHARE:
                    return {"type": "datetime", "format": fmt, **hints}
    return _text_column(s, n)


def _text_column(s: pa.Array, n: int) -> dict[str, Any]:
    """A string or category column: null tokens are values unless listed in sentinels (as cleansing reads
    them); inference keeps them as a category's values and makes them a free string's sentinels."""
    is_token = pc.fill_null(pc.is_in(pc.utf8_lower(s), value_set=_NULL_WORDS), False)
    counts = pc.value_counts(s.filter(is_token)).flatten() if pc.any(is_token).as_py() else None
    tokens = dict(zip(counts[0].to_pylist(), counts[1].to_pylist(), strict=True)) if counts is not None else {}
    tokens = dict(sorted(tokens.items(), key=lambda kv: (-kv[1], kv[0])))
    present = s.filter(pc.invert(missing_text(s, "category")))  # null tokens included
    m = len(present)
    distinct_values = pc.unique(present)
    distinct = len(distinct_values)
    if distinct <= MAX_CATEGORIES and distinct <= m / 2:
        out = {"type": "category", "allowed": sorted(distinct_values.to_pylist()), "_distinct": distinct,
               "_has_missing": m < n, "_unique": distinct == n and m == n}
        if tokens:
            out["_note"] = _token_note(tokens, n, kept=True)
        return out
    sentinels = pa.array(list(tokens), pa.string()) if tokens else None
    present = s.filter(pc.invert(missing_text(s, "string", sentinels)))
    m = len(present)
    distinct = len(pc.unique(present))
    out = {"type": "string", "_distinct": distinct, "_has_missing": m < n, "_unique": distinct == n and m == n}
    if tokens:
        out["sentinels"] = list(tokens)
        out["_note"] = _token_note(tokens, n, kept=False)
    return out


#: Share of distinct values that still makes an id-like column the entity key (the rest are duplicates).
NEAR_UNIQUE = 0.98


def infer_spec(table: pa.Table, name: str, target: str | None, **options: Any) -> DatasetSpec:
    """A starting spec for a sample table (see :func:`infer_dataset` for the options)."""
    return infer_dataset(table, name, target, **options).spec


def _duplicate_share(table: pa.Table, columns: list[str]) -> tuple[int, int]:
    """(rows repeating an earlier row's values in ``columns``, rows with all of them present)."""
    present = table.select(columns)
    for c in columns:
        col = present.column(c)
        if pa.types.is_string(col.type):
            present = present.filter(pc.invert(missing_text(pc.utf8_trim_whitespace(col.combine_chunks()), "float")))
        else:
            present = present.filter(col.is_valid())
    distinct = present.group_by(columns, use_threads=False).aggregate([]).num_rows
    return present.num_rows - distinct, present.num_rows


def infer_dataset(table: pa.Table, name: str, target: str | None, *, entity_key: str | None = None,
                  source: SourceSpec | None = None, generated_key: Literal["row", "content"] | None = None,
                  allow_duplicate_keys: bool = False) -> Inferred:
    """A starting spec for a sample table: names, types, key, timestamp, target and problem type, with
    notes on what was seen. ``entity_key`` and ``generated_key`` exclude each other; a given key that
    repeats in the sample (with the event timestamp, as ingestion de-duplicates) is refused unless
    ``allow_duplicate_keys``."""
    if entity_key is not None and generated_key is not None:
        raise UsageError("give --entity-key or --generated-key, not both")
    headers = [c.strip() for c in table.column_names]
    names = safe_identifiers(headers)
    origin = dict(zip(names, headers, strict=True))
    table = table.rename_columns(names)

    def resolve(col: str, what: str) -> str:
        if col in names:
            return col
        for safe, header in origin.items():
            if header == col:
                return safe
        raise UsageError(f"{what} {col!r} is not in the data (columns: {', '.join(headers)})")

    target = resolve(target, "target column") if target is not None else None
    entity_key = resolve(entity_key, "entity key") if entity_key is not None else None
    cols = {c: infer_column(table.column(c)) for c in names}
    messages: list[str] = []

    key: str | dict[str, str] | None = entity_key
    if key is None and generated_key is None:
        unique = [c for c, d in cols.items() if d["_unique"] and d["type"] in ("string", "integer") and c != target]
        named = [c for c in unique if _KEY_NAME.search(c)]
        if not (named or unique):
            # real exports repeat a few rows: an id-like column that is never empty and unique but for
            # a handful of repeats is still the key (ingestion drops the duplicate rows)
            rows = table.num_rows
            named = [c for c, d in cols.items() if _KEY_NAME.search(c) and not d["_has_missing"]
                     and d["type"] in ("string", "integer") and c != target and d["_distinct"] >= NEAR_UNIQUE * rows]
            if named:
                messages.append(f"entity key {named[0]!r} repeats in {rows - cols[named[0]]['_distinct']} of {rows} "
                                "sample rows: ingestion will drop the duplicates")
        if named or unique:
            key = (named or unique)[0]
        else:
            generated_key = "row"
            messages.append("no column is unique and never empty in the sample: the spec generates a key per row "
                            "(entity_key: {generated: row}); --generated-key content makes identical rows one, "
                            "--entity-key COLUMN names a key")
    times = [c for c, d in cols.items() if d["type"] == "datetime" and c not in (key, target)]
    timed = [c for c in times if _TIME_NAME.search(c)]
    event_ts = (timed or times)[0] if (timed or times) else None
    if generated_key is not None:
        key = {"generated": generated_key, "column": safe_identifier("row_id", names)}
    elif entity_key is not None:
        dups, present = _duplicate_share(table, [entity_key] + ([event_ts] if event_ts else []))
        if dups and not allow_duplicate_keys:
            by = f"{entity_key!r} with event timestamp {event_ts!r}" if event_ts else repr(entity_key)
            raise UsageError(
                f"entity key {by} is not unique in the sample: {dups:,} of {present:,} rows ({dups / present:.1%}) "
                "repeat an earlier row and ingestion would drop them as duplicates. Name a unique column, use "
                "--generated-key row (an id per row) or --generated-key content (identical rows become one), "
                "or pass --allow-duplicate-keys to keep this key", column=entity_key, duplicate_share=dups / present)
        if dups:
            messages.append(f"entity key {entity_key!r} repeats in {dups / present:.1%} of the sample rows: ingestion "
                            "will drop the duplicates")

    problem = None
    if target is not None:
        t = cols[target]
        if t["_distinct"] == 2:
            problem = "binary"
        elif t["type"] in ("integer", "float") and t["_distinct"] > MAX_CATEGORIES:
            problem = "regression"
        else:
            problem = "multiclass"
            if t["type"] == "string" and t["_distinct"] <= 1000:
                text = pc.utf8_trim_whitespace(table.column(target).combine_chunks().cast(pa.string()))
                present = text.filter(pc.invert(missing_text(text, "category")))
                t.update(type="category", allowed=sorted(pc.unique(present).to_pylist()))
                t.pop("sentinels", None)

    columns: dict[str, dict[str, Any]] = {}
    notes: dict[str, str] = {}
    for c, d in cols.items():
        rules = {k: v for k, v in d.items() if not k.startswith("_")}
        if origin[c] != c:
            rules["source_name"] = origin[c]
        if c in (key, target):
            rules.update(required=True, missing="reject")
        elif d["_has_missing"] and d["type"] in ("integer", "float"):
            rules.update(missing="impute", impute="median")
        if "_note" in d:
            notes[c] = d["_note"]
        columns[c] = rules
    raw = {
        "name": name,
        "entity_key": key,
        "event_timestamp": event_ts,
        "target": target,
        "problem_type": problem,
        "sources": [source.model_dump(mode="json", exclude_defaults=True) | {"type": source.type}]
        if source is not None else [],
        "columns": columns,
    }
    for m in messages:
        log.warning("%s", m)
    spec = parse_spec({k: v for k, v in raw.items() if v is not None}, origin=f"inferred spec {name!r}")
    return Inferred(spec=spec, notes=notes, messages=messages)
