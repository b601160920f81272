"""A starting dataset spec inferred from a sample of a source (``skiff init-dataset``).

The sample (first ~10k rows) is read with the same readers as ingestion and each column is judged
with the same coercion code, so what inference calls a float is what ingestion will parse as one:

- **boolean**: every value a true/false word (yes/no, true/false, y/n, t/f, on/off; not 1/0, which
  read as integers);
- **integer** / **float**: at least 95% of present values parse as numbers (stray spaces, decimal
  commas, thousands separators accepted); the rest will be quarantined by ingestion until the spec
  says what they are (sentinels are not guessed);
- **datetime**: at least 95% parse as ISO 8601, or as one of a few common day/month formats (then the
  spec gets ``format``);
- **category**: a string column with at most 20 distinct values that repeat (distinct ≤ half the
  present values), with ``allowed`` listing them;
- **string** otherwise.

The entity key is the given one, else a column unique and never empty in the sample (an id-like name
first); the event timestamp is a datetime column (a time-like name first); the problem type comes from
the target: two distinct values → binary, a number with more than 20 distinct values → regression,
otherwise multiclass. Numeric features with gaps get ``missing: impute`` with the median; the key and
the target get ``required: true`` and ``missing: reject``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy.engine import Engine

from components.ingest.logic import open_reader
from skiff.cleansing import FALSE_WORDS, NULL_TOKENS, TRUE_WORDS, parse_datetimes, parse_numbers
from skiff.errors import InputError, UsageError
from skiff.spec import DatasetSpec, SourceSpec, parse_spec

log = logging.getLogger(__name__)

__all__ = ["sample_table", "infer_column", "infer_spec", "SAMPLE_ROWS"]

SAMPLE_ROWS = 10_000
SHARE = 0.95
MAX_CATEGORIES = 20
DATE_FORMATS = [
    "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d", "%d-%m-%Y",
    "%d/%m/%Y %H:%M:%S", "%m/%d/%Y %H:%M:%S", "%d.%m.%Y %H:%M:%S", "%Y/%m/%d %H:%M:%S",
    "%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M", "%d.%m.%Y %H:%M", "%d/%m/%Y %H.%M.%S",
]
_KEY_NAME = re.compile(r"(?i:^id$|_id$|^id_|uuid|key$|^key)|[a-z](?:ID|Id)$")  # customer_id, customerID
_TIME_NAME = re.compile(r"(time|date|^ts$|_ts$|_at$|created|updated|timestamp)", re.IGNORECASE)
_BOOL_WORDS = {w for w in TRUE_WORDS + FALSE_WORDS if not w.isdigit()}


def sample_table(source: SourceSpec, rows: int = SAMPLE_ROWS, *, http_transport: httpx.BaseTransport | None = None,
                 sql_engine: Engine | None = None) -> pa.Table:
    """The first ``rows`` rows of a source, as its reader gives them (strings for text formats)."""
    reader = open_reader(source, http_transport=http_transport, sql_engine=sql_engine)
    if hasattr(reader, "source") and getattr(reader.source, "type", None) == "sql":
        reader.source = reader.source.model_copy(update={"chunk_rows": min(rows, reader.source.chunk_rows)})
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
        gen.close()
    if not tables:
        raise InputError(f"{getattr(reader, 'label', source)}: no rows to infer a spec from")
    return pa.concat_tables(tables, promote_options="permissive")


def _present_text(arr: pa.Array) -> pa.Array:
    s = pc.utf8_trim_whitespace(arr)
    keep = pc.and_(s.is_valid(), pc.invert(pc.is_in(pc.utf8_lower(s), value_set=pa.array(NULL_TOKENS))))
    return s.filter(pc.fill_null(keep, False))


def _share_valid(parsed: pa.Array) -> float:
    return 1.0 - parsed.null_count / len(parsed) if len(parsed) else 0.0


def infer_column(arr: pa.Array | pa.ChunkedArray) -> dict[str, Any]:
    """A column spec (as a dict) for one sampled column, plus ``_distinct``/``_has_missing`` hints."""
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
        return out
    present = _present_text(arr.cast(pa.string()) if not pa.types.is_null(t) else pa.nulls(n, pa.string()))
    m = len(present)
    distinct_values = pc.unique(present)
    distinct = len(distinct_values)
    hints = {"_distinct": distinct, "_has_missing": m < n, "_unique": distinct == n and m == n}
    if m == 0:
        return {"type": "string", **hints}
    lower = pc.utf8_lower(present)
    if pc.all(pc.is_in(lower, value_set=pa.array(sorted(_BOOL_WORDS)))).as_py():
        return {"type": "boolean", **hints}
    if _share_valid(parse_numbers(present, integer=True)) >= SHARE:
        return {"type": "integer", **hints}
    if _share_valid(parse_numbers(present, integer=False)) >= SHARE:
        return {"type": "float", **hints}
    looks_dated = pc.any(pc.match_substring_regex(present, pattern=r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}")).as_py()
    if looks_dated:
        if _share_valid(parse_datetimes(present, None)) >= SHARE:
            return {"type": "datetime", **hints}
        for fmt in DATE_FORMATS:
            if _share_valid(parse_datetimes(present, fmt)) >= SHARE:
                return {"type": "datetime", "format": fmt, **hints}
    if distinct <= MAX_CATEGORIES and distinct <= m / 2:
        return {"type": "category", "allowed": sorted(distinct_values.to_pylist()), **hints}
    return {"type": "string", **hints}


#: Share of distinct values that still makes an id-like column the entity key (the rest are duplicates).
NEAR_UNIQUE = 0.98


def infer_spec(table: pa.Table, name: str, target: str | None, *, entity_key: str | None = None,
               source: SourceSpec | None = None) -> DatasetSpec:
    """A starting spec for a sample table: types, key, timestamp, target and problem type."""
    names = [c.strip() for c in table.column_names]
    table = table.rename_columns(names)
    if target is not None and target not in names:
        raise UsageError(f"target column {target!r} is not in the data (columns: {', '.join(names)})")
    if entity_key is not None and entity_key not in names:
        raise UsageError(f"entity key {entity_key!r} is not in the data (columns: {', '.join(names)})")
    cols = {c: infer_column(table.column(c)) for c in names}

    if entity_key is None:
        unique = [c for c, d in cols.items() if d["_unique"] and d["type"] in ("string", "integer") and c != target]
        named = [c for c in unique if _KEY_NAME.search(c)]
        if not (named or unique):
            # real exports repeat a few rows: an id-like column that is never empty and unique but for
            # a handful of repeats is still the key (ingestion drops the duplicate rows)
            rows = table.num_rows
            named = [c for c, d in cols.items() if _KEY_NAME.search(c) and not d["_has_missing"]
                     and d["type"] in ("string", "integer") and c != target and d["_distinct"] >= NEAR_UNIQUE * rows]
            if named:
                log.warning("entity key %r repeats in %d of %d sample rows: ingestion will drop the duplicates",
                            named[0], rows - cols[named[0]]["_distinct"], rows)
        if not (named or unique):
            raise UsageError("no column is unique and never empty in the sample: name the entity key with "
                             "--entity-key (several columns can be joined in the spec as a list)")
        entity_key = (named or unique)[0]
    times = [c for c, d in cols.items() if d["type"] == "datetime" and c not in (entity_key, target)]
    timed = [c for c in times if _TIME_NAME.search(c)]
    event_ts = (timed or times or [None])[0]

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
                present = _present_text(table.column(target).combine_chunks().cast(pa.string()))
                t.update(type="category", allowed=sorted(pc.unique(present).to_pylist()))

    columns: dict[str, dict[str, Any]] = {}
    for c, d in cols.items():
        spec = {k: v for k, v in d.items() if not k.startswith("_")}
        if c in (entity_key, target):
            spec.update(required=True, missing="reject")
        elif d["_has_missing"] and d["type"] in ("integer", "float"):
            spec.update(missing="impute", impute="median")
        columns[c] = spec
    raw = {
        "name": name,
        "entity_key": entity_key,
        "event_timestamp": event_ts,
        "target": target,
        "problem_type": problem,
        "sources": [source.model_dump(mode="json", exclude_defaults=True) | {"type": source.type}]
        if source is not None else [],
        "columns": columns,
    }
    return parse_spec({k: v for k, v in raw.items() if v is not None}, origin=f"inferred spec {name!r}")
