"""SQL sources through SQLAlchemy: a table or a query, read in chunks, incrementally by a watermark.

With ``watermark: COL`` a run reads the rows whose ``COL`` is above the highest value the previous
committed run of the same dataset and source took (its state, kept in the lake under ``state/``: see
:meth:`SqlReader.resume` and :meth:`SqlReader.commit_state`), ordered by ``COL``. The first run reads everything, rows with a
null watermark included; later runs never see those again. The column must grow monotonically:
a row inserted later with a smaller value than one already taken is not read.

Credentials never appear in the spec, logs or manifests: give them in the URL held by the environment
variable named by ``url_env``. A URL in the spec holding a password (``user:pw@``, or a query parameter
such as ``?password=``, ``?sslpassword=``, ``?token=``) is refused; the manifest, the watermark state
and errors show the URL through :func:`skiff.redact.redact_url`.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from skiff.errors import InputError, SourceError, SpecError
from skiff.manifest import SqlSourceEntry
from skiff.redact import is_secret_param, redact_text, redact_url, url_secrets
from skiff.sources import ColumnCheck, SourceBatch
from skiff.spec import SqlSource

__all__ = ["SqlReader", "masked_url", "url_credentials", "source_key", "encode_watermark", "decode_watermark"]

log = logging.getLogger("skiff.ingest")


def masked_url(url: str) -> str:
    """The URL as SQLAlchemy reads it, every credential (userinfo password, secret parameters) masked."""
    try:
        return redact_url(make_url(url).render_as_string(hide_password=True))
    except (sa.exc.ArgumentError, ValueError):
        return "<invalid database URL>"


def url_credentials(url: str) -> list[str]:
    """The credential-bearing parts of a database URL (empty when it holds none)."""
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return url_secrets(url)
    found = ["user:password@"] if parsed.password else []
    return found + [f"?{k}=" for k in parsed.query if is_secret_param(k)]


def encode_watermark(value: Any) -> dict[str, Any] | None:
    """A watermark value as JSON that keeps its type (for the state file and the manifest)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return {"kind": "int", "value": int(value)}
    if isinstance(value, int):
        return {"kind": "int", "value": value}
    if isinstance(value, float):
        return {"kind": "float", "value": value}
    if isinstance(value, decimal.Decimal):
        return {"kind": "decimal", "value": str(value)}
    if isinstance(value, dt.datetime):
        return {"kind": "datetime", "value": value.isoformat()}
    if isinstance(value, dt.date):
        return {"kind": "date", "value": value.isoformat()}
    return {"kind": "str", "value": str(value)}


def decode_watermark(obj: dict[str, Any] | None) -> Any:
    if not obj:
        return None
    kind, value = obj["kind"], obj["value"]
    decoders: dict[str, Callable[[Any], Any]] = {
        "int": int,
        "float": float,
        "decimal": decimal.Decimal,
        "datetime": dt.datetime.fromisoformat,
        "date": dt.date.fromisoformat,
        "str": str,
    }
    return decoders[kind](value)


def _watermark_key(value: Any) -> tuple[Any]:
    """Order watermarks of one kind (aware and naive datetimes compare as UTC)."""
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return (value,)


def max_watermark(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return a if _watermark_key(a) >= _watermark_key(b) else b


def source_key(source: SqlSource) -> str:
    """Stable id of a SQL source for its watermark state: masked URL (or variable), target, column."""
    ident = {
        "url": masked_url(source.url) if source.url else None,
        "url_env": source.url_env,
        "table": source.table,
        "query": " ".join(source.query.split()) if source.query else None,
        "watermark": source.watermark,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


class SqlReader:
    """Reads a :class:`SqlSource` in chunks of ``chunk_rows`` (a :class:`~skiff.sources.SourceReader`);
    with a watermark, its state is the highest watermark committed."""

    kind: ClassVar[str] = "sql"
    fingerprint_before_read: ClassVar[bool] = False  # the watermark range or a hash of the rows, known once read

    def __init__(self, source: SqlSource, engine: Engine | None = None) -> None:
        self.source = source
        if source.url_env:
            env_url = os.environ.get(source.url_env)
            if not env_url:
                raise SourceError(f"environment variable {source.url_env} (the database URL) is not set",
                                  source=source.url_env)
            url = env_url
        else:
            url = source.url or ""  # the spec requires url or url_env
            secrets = url_credentials(url)
            if secrets:
                raise SpecError(f"{masked_url(url)}: a database URL in a spec must not hold credentials "
                                f"({', '.join(secrets)}): put the whole URL in an environment variable and "
                                "name it with url_env", source=masked_url(url))
        self._url = url
        target = source.table or "query"
        self.label = f"{masked_url(url)} ({'table ' + target if source.table else 'query'})"
        self._engine = engine
        self.low: Any = None  # the watermark of the last committed run (exclusive)
        self.high: Any = None  # the highest watermark read now
        self.rows = 0
        self._hash = hashlib.sha256()
        self.key = source_key(source)

    @property
    def state_key(self) -> str | None:
        return self.key if self.source.watermark else None

    def precheck(self, check_columns: ColumnCheck) -> None:
        return None  # the columns are known once the statement runs

    def resume(self, saved: Mapping[str, Any] | None, earlier: Iterable[Mapping[str, Any]]) -> None:
        """Read above the highest watermark committed: the state file's, or a manifest's if higher."""
        best = decode_watermark(saved.get("watermark")) if saved else None
        for entry in earlier:
            if entry.get("type") == "sql" and entry.get("key") == self.key and entry.get("watermark"):
                best = max_watermark(best, decode_watermark(entry["watermark"].get("to")))
        self.low = best

    def commit_state(self) -> dict[str, Any] | None:
        if not self.source.watermark or self.high is None:
            return None
        return {"source": masked_url(self._url), "key": self.key,
                "watermark": encode_watermark(max_watermark(self.low, self.high))}

    def _get_engine(self) -> Engine:
        if self._engine is None:
            try:
                self._engine = sa.create_engine(self._url, pool_pre_ping=True)
            except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as e:
                raise SourceError(f"{self.label}: cannot use this database URL: {redact_text(str(e))}",
                                  source=self.label) from e
        return self._engine

    def _statement(self, conn: sa.Connection) -> sa.Select[Any] | sa.TextClause:
        src = self.source
        wm = src.watermark
        if src.table:
            schema, _, name = src.table.rpartition(".")
            try:
                table = sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=conn)
            except sa.exc.NoSuchTableError as e:
                raise InputError(f"{self.label}: table {src.table!r} does not exist", source=self.label) from e
            stmt = sa.select(table)
            if wm:
                if wm not in table.c:
                    raise InputError(f"{self.label}: watermark column {wm!r} is not in table {src.table!r} "
                                     f"(columns: {', '.join(table.c.keys())})", source=self.label, column=wm)
                col = table.c[wm]
                if self.low is not None:
                    stmt = stmt.where(col > self.low)
                stmt = stmt.order_by(col)
            return stmt
        inner = (src.query or "").strip().rstrip(";")  # the spec requires table or query
        if not wm:
            return sa.text(inner)
        quoted = conn.dialect.identifier_preparer.quote(wm)
        where = f" WHERE skiff_q.{quoted} > :skiff_low" if self.low is not None else ""
        text = sa.text(f"SELECT * FROM ({inner}) AS skiff_q{where} ORDER BY skiff_q.{quoted}")
        return text.bindparams(skiff_low=self.low) if self.low is not None else text

    def batches(self) -> Iterator[SourceBatch]:
        engine = self._get_engine()
        wm = self.source.watermark
        try:
            with engine.connect() as conn:
                stmt = self._statement(conn)
                result = conn.execution_options(stream_results=True, yield_per=self.source.chunk_rows).execute(stmt)
                names = list(result.keys())
                if wm and wm not in names:
                    raise InputError(f"{self.label}: watermark column {wm!r} is not in the query result "
                                     f"(columns: {', '.join(names)})", source=self.label, column=wm)
                # offsets restart at 0 on every incremental read: the range keeps generated row ids apart
                scope = json.dumps([self.label, encode_watermark(self.low)], default=str) if wm else None
                offset = 0
                for rows in result.partitions(self.source.chunk_rows):
                    table = _rows_to_table(names, rows)
                    self._hash.update(_table_digest(table))
                    if wm:
                        top = pc.max(table.column(wm)).as_py() if table.num_rows else None
                        self.high = max_watermark(self.high, top)
                    yield SourceBatch(table=table, source=self.label, row_offset=offset, key_scope=scope)
                    offset += table.num_rows
                    self.rows += table.num_rows
        except sa.exc.OperationalError as e:
            raise SourceError(f"{self.label}: database unreachable or query failed: "
                              f"{_first_line(e.orig or e)}", source=self.label) from e
        except sa.exc.ProgrammingError as e:
            raise InputError(f"{self.label}: query failed: {_first_line(e.orig or e)}", source=self.label) from e
        except sa.exc.DBAPIError as e:
            raise SourceError(f"{self.label}: database error: {_first_line(e.orig or e)}",
                              source=self.label) from e

    def fingerprint(self) -> dict[str, Any]:
        """Watermark range (incremental sources) or a hash of the rows read."""
        fp: dict[str, Any] = {"type": "sql", "source": self.key, "rows": self.rows}
        if self.source.watermark:
            fp["watermark"] = [encode_watermark(self.low), encode_watermark(self.high)]
        else:
            fp["sha256"] = self._hash.hexdigest()
        return fp

    def describe(self) -> SqlSourceEntry:
        d: SqlSourceEntry = {"type": "sql", "url": masked_url(self._url), "rows": self.rows, "key": self.key}
        if self.source.url_env:
            d["url_env"] = self.source.url_env
        if self.source.table:
            d["table"] = self.source.table
        else:
            d["query"] = self.source.query
        if self.source.watermark:
            d["watermark"] = {"column": self.source.watermark, "after": encode_watermark(self.low),
                              "to": encode_watermark(self.high or self.low)}
        else:
            d["sha256"] = self._hash.hexdigest()
        return d


def _first_line(e: BaseException) -> str:
    # a driver may quote the connection string back: redact it
    return redact_text(str(e).strip().splitlines()[0]) if str(e).strip() else type(e).__name__


def _rows_to_table(names: list[str], rows: Sequence[Sequence[Any]]) -> pa.Table:
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    arrays = []
    for values in cols:
        try:
            arr = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            arr = pa.array([None if v is None else str(v) for v in values], pa.string())
        if pa.types.is_null(arr.type):
            arr = pa.nulls(len(values), pa.string())
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, names=names)


def _table_digest(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return hashlib.sha256(sink.getvalue()).digest()
