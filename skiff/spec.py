"""The dataset spec: how users bring their own data to skiff.

A spec is a YAML file (``datasets/<name>.yaml`` by default) naming the sources, the entity key, the
event timestamp, the target and problem type, and per column a type and the rules a value must meet.
Nothing in skiff is tied to one data set: ingestion, validation, features and training read the spec.

Example::

    name: churn
    entity_key: customer_id
    event_timestamp: signup_date
    target: churn
    problem_type: binary
    sources:
      - {type: file, path: data/churn.csv}
    columns:
      customer_id: {type: string, required: true, unique: true, missing: reject}
      tenure: {type: integer, min: 0, max: 120}
      total_charges: {type: float, missing: impute, impute: median, sentinels: [-200]}
      contract: {type: category, allowed: [Month-to-month, One year, Two year]}
      churn: {type: boolean, required: true, missing: reject}
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from skiff.errors import SpecError
from skiff.expressions import expression_names, parse_expression
from skiff.identifiers import NAME_RE, check_identifier, quote_name
from skiff.stream_spec import StreamWindows
from skiff.yamlio import load_user_yaml

__all__ = [
    "ColumnType",
    "ProblemType",
    "ColumnSpec",
    "FileSource",
    "SqlSource",
    "RestSource",
    "MqttSource",
    "Pagination",
    "DerivedFeature",
    "RestAuth",
    "SourceSpec",
    "DatasetSpec",
    "GeneratedKey",
    "KEY_TYPES",
    "load_spec",
    "dump_spec",
    "save_spec",
    "spec_path",
    "spec_fingerprint",
    "json_sha256",
]

ColumnType = Literal["string", "integer", "float", "boolean", "datetime", "category"]
ProblemType = Literal["binary", "multiclass", "regression", "recommendation"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ColumnSpec(_Strict):
    """One column: its type and the rules each value must meet."""

    type: ColumnType = Field(description="Logical type values are coerced to.")
    description: str | None = Field(default=None, description="Free text for people and model cards.")
    source_name: str | None = Field(
        default=None,
        description="The column's header in the sources when it differs from the column name: a header that "
        "is not a valid name (skiff.identifiers) is mapped to one, and ingestion reads this header as the "
        "column. `skiff init-dataset` records it.",
    )
    required: bool = Field(default=False, description="The column must be present in every source.")
    missing: Literal["reject", "impute", "keep"] = Field(
        default="keep", description="What a missing value does: reject the row, impute it, or keep it null."
    )
    impute: Any = Field(
        default=None,
        description="With missing=impute: 'mean', 'median', 'mode', or a constant value.",
    )
    sentinels: list[Any] = Field(
        default_factory=list,
        description="Values that mean 'missing' (e.g. -200, -999, 'N/A'), compared with the trimmed text (and "
        "as numbers in numeric columns). In numeric, boolean and datetime columns NA, N/A, NaN, null, None "
        "and #N/A (any case) are always missing; in string and category columns they are values (an export's "
        "'NA' often means 'none') unless listed here. `skiff init-dataset` writes the ones it saw.",
    )
    min: float | str | None = Field(
        default=None,
        description="Smallest allowed value: a number; for datetime columns an ISO date/time (UTC unless it "
        "has an offset) or seconds since the Unix epoch. Stored as a number.",
    )
    max: float | str | None = Field(default=None, description="Largest allowed value (as min).")
    allowed: list[Any] | None = Field(default=None, description="The only values allowed.")
    regex: str | None = Field(default=None, description="Pattern a string value must match in full.")
    unique: bool = Field(default=False, description="Values must be unique within a partition.")
    format: str | None = Field(default=None, description="strptime format for datetime columns.")
    true_values: list[str] | None = Field(default=None, description="Spellings of true (boolean columns).")
    false_values: list[str] | None = Field(default=None, description="Spellings of false (boolean columns).")
    pii: Literal["hash", "drop"] | None = Field(
        default=None,
        description="Personal data: the inference log of a served model writes this input as a keyed hash "
        "(HMAC-SHA-256 with the key from the SKIFF_INFERENCE_LOG_KEY secret; equal values stay joinable) or "
        "drops it. Ingestion and training are unchanged.",
    )
    drift_threshold: float | None = Field(
        default=None, gt=0,
        description="Serving drift threshold of this feature: `skiff monitor run` flags a window whose "
        "population stability index (PSI) against the training data is above it (and a chi-square test "
        "agrees); default 0.02, which catches a shift of 0.2 standard deviations in 2,000 requests.",
    )
    feature: bool | None = Field(
        default=None,
        description="Whether the column is a model feature. Unset: every column but the entity key, the event "
        "timestamp and the target. Set true on an entity-key column to use the key as a feature too.",
    )

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, v: str | None) -> str | None:
        # ingest matches with RE2 (pyarrow, vectorised), not Python's re: validate against that engine, so a
        # pattern RE2 lacks (lookaround, backreferences) fails here, naming the column, not mid-ingest
        if v is not None:
            import pyarrow as pa
            import pyarrow.compute as pc

            try:
                pc.match_substring_regex(pa.array([""]), pattern=f"^(?:{v})$")
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                why = str(e).split(":", 1)[-1].strip()
                raise ValueError(f"regex {v!r} is not supported by the engine ingest matches with (RE2: no "
                                 f"lookahead/lookbehind or backreferences): {why}; rewrite it without them") from e
        return v

    @model_validator(mode="after")
    def _check(self) -> ColumnSpec:
        for bound in ("min", "max"):
            value = getattr(self, bound)
            if isinstance(value, str):
                if self.type != "datetime":
                    try:
                        value = float(value)
                    except ValueError as e:
                        raise ValueError(f"{bound} must be a number for a {self.type} column, got {value!r}") from e
                else:
                    import datetime as dt

                    try:
                        when = dt.datetime.fromisoformat(value)
                    except ValueError as e:
                        raise ValueError(f"{bound} {value!r} is not an ISO date/time") from e
                    if when.tzinfo is None:
                        when = when.replace(tzinfo=dt.UTC)
                    value = when.timestamp()
                object.__setattr__(self, bound, value)
        if self.missing == "impute" and self.impute is None:
            raise ValueError("missing=impute needs 'impute' (mean, median, mode or a constant)")
        if self.impute in ("mean", "median") and self.type not in ("integer", "float"):
            raise ValueError(f"impute={self.impute} needs a numeric column, not {self.type}")
        lo, hi = self.min, self.max  # numbers by now: the loop above converted every text bound
        if isinstance(lo, int | float) and isinstance(hi, int | float) and lo > hi:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class FileSource(_Strict):
    """Files or folders: CSV/TSV/delimited, JSON, JSON Lines, Parquet, optionally gzip-compressed."""

    type: Literal["file"] = "file"
    path: str = Field(description="Path, glob or folder; local or any fsspec URI (s3://, abfs://).")
    format: Literal["auto", "csv", "json", "jsonl", "parquet"] = Field(
        default="auto", description="File format; 'auto' detects it from the content."
    )
    delimiter: str | None = Field(default=None, description="Field delimiter for CSV; sniffed when unset.")
    encoding: str = Field(default="utf-8", description="Text encoding.")
    records_path: str | None = Field(
        default=None, description="For JSON documents: dotted path to the list of records."
    )


class SqlSource(_Strict):
    """A table or query in a SQL database, read through SQLAlchemy, incrementally by a watermark."""

    type: Literal["sql"] = "sql"
    url: str | None = Field(
        default=None, description="SQLAlchemy URL without a password (e.g. postgresql+psycopg://u@h/db)."
    )
    url_env: str | None = Field(
        default=None, description="Environment variable holding the full URL (use it for credentials)."
    )
    table: str | None = Field(default=None, description="Table to read (schema.table allowed).")
    query: str | None = Field(default=None, description="SELECT to read instead of a table.")
    watermark: str | None = Field(
        default=None, description="Monotonic column (timestamp or id); a re-run takes only rows above it."
    )
    chunk_rows: int = Field(default=50_000, ge=1, description="Rows fetched per batch.")

    @model_validator(mode="after")
    def _one_target(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of 'url' or 'url_env'")
        return self


class Pagination(_Strict):
    """How a REST API splits its results."""

    type: Literal["none", "page", "cursor", "link"] = Field(default="none", description="Pagination style.")
    page_param: str = Field(default="page", description="Query parameter of the page number (type=page).")
    start_page: int = Field(default=1, description="First page number (type=page).")
    size_param: str | None = Field(default=None, description="Query parameter of the page size.")
    size: int | None = Field(default=None, ge=1, description="Page size to ask for.")
    cursor_param: str = Field(default="cursor", description="Query parameter carrying the cursor.")
    cursor_path: str = Field(default="next_cursor", description="Dotted path of the next cursor in a page.")
    max_pages: int = Field(default=10_000, ge=1, description="Safety stop.")


class RestAuth(_Strict):
    """An auth header whose value comes from an environment variable (never from the spec, never logged)."""

    header: str = Field(default="Authorization", description="Header name.")
    env: str = Field(description="Environment variable holding the secret.")
    scheme: str | None = Field(default="Bearer", description="Prefix of the value, e.g. Bearer; null for none.")


class RestSource(_Strict):
    """A REST API returning JSON."""

    type: Literal["rest"] = "rest"
    url: str = Field(description="Endpoint URL.")
    params: dict[str, Any] = Field(default_factory=dict, description="Extra query parameters.")
    records_path: str | None = Field(default=None, description="Dotted path of the record list in a page.")
    pagination: Pagination = Field(default_factory=Pagination)
    auth: RestAuth | None = Field(default=None, description="Auth header from an environment variable.")
    timeout: float = Field(default=30.0, gt=0, description="Seconds per request.")
    max_retries: int = Field(default=5, ge=0, description="Retries on 429/5xx and connection errors.")
    backoff: float = Field(default=0.5, ge=0, description="First retry delay in seconds (doubles).")


class MqttSource(_Strict):
    """An MQTT topic of JSON sensor messages."""

    type: Literal["mqtt"] = "mqtt"
    host: str = Field(default="127.0.0.1", description="Broker host.")
    port: int = Field(default=1883, description="Broker port.")
    topic: str = Field(description="Topic filter, e.g. sensors/+/telemetry; $share/<group>/... to share.")
    qos: Literal[0, 1, 2] = Field(default=1, description="Subscription QoS.")
    client_id: str | None = Field(default=None, description="Client id; fixed for a persistent session.")
    username_env: str | None = Field(default=None, description="Variable holding the user name.")
    password_env: str | None = Field(default=None, description="Variable holding the password.")


class DerivedFeature(_Strict):
    """A feature computed from other columns at request and training time (a Feast on-demand view)."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Name of the derived feature.")
    expr: str = Field(description="Expression over feature columns, e.g. 'a / (b + 1)': column names, numbers, "
                      "+ - * / // % **, comparisons, and/or/not, parentheses (skiff.expressions; never eval'd).")
    type: Literal["float", "integer", "boolean"] = Field(default="float", description="Result type.")

    @field_validator("expr")
    @classmethod
    def _safe_expr(cls, v: str) -> str:
        try:
            parse_expression(v)
        except SpecError as e:
            raise ValueError(e.message) from None
        return v


SourceSpec = Annotated[FileSource | SqlSource | RestSource | MqttSource, Field(discriminator="type")]

#: Column types an entity key may have (Feast joins on strings and integers; a float key is not an identity).
KEY_TYPES = ("string", "category", "integer")


class GeneratedKey(_Strict):
    """An entity key skiff makes for data with no id column (``entity_key: {generated: row}``).

    ``row``: an id from the source (file URI, database table/query and watermark range, API URL and page)
    and the record's offset in it, so re-ingesting the same file gives the same ids. ``content``: a hash
    of the row's typed values, so identical rows get one id and de-duplicate. The column is written to
    the lake as a string, is never a model feature, and is the Feast entity's join key.
    """

    generated: Literal["row", "content"] = Field(
        description="row: id from the source and row offset; content: hash of the row's values."
    )
    column: str = Field(
        default="row_id", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$",
        description="Name of the generated key column (must not be a column of the data).",
    )

    def column_spec(self) -> ColumnSpec:
        return ColumnSpec(type="string", required=True, missing="reject", feature=False,
                          description=f"generated entity key ({self.generated})")


class DatasetSpec(_Strict):
    """What a data set is and what a good row looks like."""

    name: str = Field(pattern=NAME_RE, description="Dataset name (lake folder, feature view prefix).")
    description: str | None = Field(default=None, description="Free text.")
    sources: list[SourceSpec] = Field(default_factory=list, description="Where the rows come from.")
    entity_key: str | list[str] | GeneratedKey = Field(
        description="Column(s) identifying an entity, e.g. customer_id (type string, category or integer), or "
        "{generated: row} / {generated: content} for data without an id column (see GeneratedKey)."
    )
    event_timestamp: str | None = Field(default=None, description="Column with the event time, if any.")
    target: str | None = Field(default=None, description="Label column (None for unlabeled feeds).")
    problem_type: ProblemType | None = Field(
        default=None, description="binary, multiclass or regression; recommendation for interaction events "
        "(user, item, event type, time: see skiff.recommend.events), which have no target.")
    positive_class: Any = Field(default=None, description="Positive label for binary targets.")
    dedupe: bool = Field(default=True, description="Drop duplicate rows on entity key (+ timestamp).")
    unknown_columns: Literal["keep", "drop", "reject"] = Field(
        default="drop", description="Columns in the data that the spec does not name."
    )
    min_accepted_fraction: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="Smallest share of rows (read minus duplicates) an ingest must accept; below it the run "
        "fails (exit 1) and nothing is committed. An ingest that accepts no row out of some always fails.",
    )
    columns: dict[str, ColumnSpec] = Field(description="Column name to its spec.")
    derived: list[DerivedFeature] = Field(
        default_factory=list, description="Derived features (computed online and offline alike)."
    )
    windows: StreamWindows | None = Field(
        default=None, description="Event-time windows per entity computed by `skiff stream`, with allowed "
        "lateness and alert rules (skiff.stream_spec)."
    )

    @model_validator(mode="after")
    def _check_windows(self) -> DatasetSpec:
        if self.windows is not None:
            try:
                self.windows.check({n: c.type for n, c in self.columns.items()}, self.key_columns,
                                   self.event_timestamp, self.generated_key is not None)
            except SpecError as e:
                raise ValueError(e.message) from None
        return self

    @model_validator(mode="after")
    def _check_names(self) -> DatasetSpec:
        """Column and derived names reach Feast, Parquet, ONNX and URLs: they meet skiff.identifiers' policy,
        and no two columns read the same source header."""
        try:
            for name in self.columns:
                check_identifier(name, "column")
            for d in self.derived:
                check_identifier(d.name, "derived feature")
        except SpecError as e:
            raise ValueError(e.message) from None
        readers: dict[str, str] = {}
        for name, col in self.columns.items():
            header = name if col.source_name is None else col.source_name
            if header in readers:
                raise ValueError(f"columns {readers[header]!r} and {name!r} both read the source column "
                                 f"{quote_name(header)}; give one of them another source_name")
            readers[header] = name
        return self

    @model_validator(mode="after")
    def _check_refs(self) -> DatasetSpec:
        gen = self.generated_key
        if gen is not None:
            col = self.columns.get(gen.column)
            if col is None:  # the generated column is part of the schema, listed first
                object.__setattr__(self, "columns", {gen.column: gen.column_spec(), **self.columns})
            elif col.type != "string" or col.feature:
                raise ValueError(f"generated entity key column {gen.column!r} is a string and never a feature; "
                                 "leave it out of columns or set entity_key.column to another name")
        for key in self.key_columns:
            if key not in self.columns:
                raise ValueError(f"entity_key column {key!r} is not in columns")
            if self.columns[key].type not in KEY_TYPES:
                raise ValueError(f"entity_key column {key!r} has type {self.columns[key].type}; a key must be "
                                 f"{', '.join(KEY_TYPES[:-1])} or {KEY_TYPES[-1]} (or use entity_key: "
                                 "{generated: row})")
        if self.event_timestamp is not None:
            col = self.columns.get(self.event_timestamp)
            if col is None:
                raise ValueError(f"event_timestamp column {self.event_timestamp!r} is not in columns")
            if col.type != "datetime":
                raise ValueError(f"event_timestamp column {self.event_timestamp!r} must have type datetime")
        if self.problem_type == "recommendation":  # interaction events: ranked, never labelled
            if self.target is not None:
                raise ValueError("a recommendation spec has no target: its rows are interaction events")
            if self.event_timestamp is None:
                raise ValueError("a recommendation spec needs event_timestamp (evaluation splits by time)")
        if self.target is not None:
            if self.target not in self.columns:
                raise ValueError(f"target column {self.target!r} is not in columns")
            if self.problem_type is None:
                raise ValueError("a spec with a target needs problem_type (binary, multiclass or regression)")
            ttype = self.columns[self.target].type
            if self.problem_type == "regression" and ttype not in ("integer", "float"):
                raise ValueError(f"regression needs a numeric target, {self.target!r} is {ttype}")
        for d in self.derived:
            if d.name in self.columns:
                raise ValueError(f"derived feature {d.name!r} has the name of a column")
            used = set(expression_names(d.expr))
            unknown = sorted(n for n in used if n not in self.columns)
            if unknown:
                raise ValueError(f"derived feature {d.name!r} uses unknown columns {unknown}")
            bad = sorted(n for n in used & set(self.columns) if n not in self.feature_columns)
            if bad:
                raise ValueError(f"derived feature {d.name!r} may only use feature columns, not {bad}")
        return self

    @property
    def generated_key(self) -> GeneratedKey | None:
        return self.entity_key if isinstance(self.entity_key, GeneratedKey) else None

    @property
    def key_columns(self) -> list[str]:
        """The entity key's column names (a generated key's column included)."""
        if isinstance(self.entity_key, GeneratedKey):
            return [self.entity_key.column]
        return [self.entity_key] if isinstance(self.entity_key, str) else list(self.entity_key)

    @property
    def feature_columns(self) -> list[str]:
        """Columns a model may use, in spec order: every column whose ``feature`` is not false, except the
        event timestamp, the target and the entity key; a key column only with ``feature: true``."""
        skip = {self.event_timestamp, self.target}
        keys = set(self.key_columns)
        return [n for n, c in self.columns.items()
                if n not in skip and (c.feature is True if n in keys else c.feature is not False)]

    def columns_of_type(self, *types: str) -> list[str]:
        return [n for n in self.feature_columns if self.columns[n].type in types]


def spec_path(name: str, datasets_dir: str | Path = "datasets") -> Path:
    return Path(datasets_dir) / f"{name}.yaml"


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and validate a spec; any problem is a :class:`SpecError` naming the file and field."""
    path = Path(path)
    raw = load_user_yaml(path, "dataset spec", error=SpecError)  # no aliases; errors never quote the file
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a dataset spec is a mapping, got {type(raw).__name__}", path=str(path))
    return parse_spec(raw, origin=str(path))


def parse_spec(raw: dict[str, Any], origin: str = "<spec>") -> DatasetSpec:
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as e:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg'].removeprefix('Value error, ')}"
            for err in e.errors()
        ]
        raise SpecError(f"{origin}: invalid dataset spec: " + "; ".join(problems), problems=problems) from e


def dump_spec(spec: DatasetSpec, comments: dict[str, str] | None = None) -> str:
    """The spec as YAML in the reading order people expect; ``comments`` (column name -> text) are
    written as ``# ...`` lines above their columns (what ``init-dataset`` saw), and loading ignores them."""
    data = spec.model_dump(mode="json", exclude_defaults=True)
    gen = spec.generated_key
    if gen is not None and spec.columns[gen.column] == gen.column_spec():
        del data["columns"][gen.column]  # implied by entity_key: {generated: ...}
    # keep the reading order people expect
    order = ["name", "description", "entity_key", "event_timestamp", "target", "problem_type",
             "positive_class", "dedupe", "unknown_columns", "sources", "columns"]
    ordered = {k: data[k] for k in order if k in data}
    ordered.setdefault("columns", {})
    ordered.update({k: v for k, v in data.items() if k not in ordered})
    if spec.sources:  # the discriminator is a default, but readers need it
        ordered["sources"] = [{"type": src.type, **d} for src, d in zip(spec.sources, ordered["sources"], strict=True)]
    text = yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, width=100)
    return _with_column_comments(text, comments or {})


def _with_column_comments(text: str, comments: dict[str, str]) -> str:
    """Insert one ``# comment`` line above each commented column of the ``columns:`` mapping.

    A column's key is found as PyYAML renders it (quoted where needed), at the mapping's indentation;
    comment text is flattened to one line so nothing from data can break out of the comment."""
    if not comments:
        return text
    lines = text.splitlines(keepends=True)
    try:
        start = lines.index("columns:\n")
    except ValueError:
        return text
    prefixes = {"  " + yaml.safe_dump({name: None}, allow_unicode=True, width=10_000).rsplit(": null", 1)[0] + ":":
                name for name in comments}
    out = lines[: start + 1]
    for line in lines[start + 1:]:
        if not line.startswith(" "):  # the next top-level key: the columns mapping is over
            prefixes = {}
        for prefix, name in prefixes.items():
            if line.startswith(prefix) and line[len(prefix):len(prefix) + 1] in (" ", "\n"):
                out.append("  # " + " ".join(str(comments[name]).split()) + "\n")
        out.append(line)
    return "".join(out)


def save_spec(spec: DatasetSpec, path: str | Path, comments: dict[str, str] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_spec(spec, comments))
    return path


def json_sha256(obj: Any) -> str:
    """SHA-256 of an object's canonical JSON (sorted keys): the same content always hashes the same."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def spec_fingerprint(spec: DatasetSpec) -> str:
    """Hash of what in a spec changes the written data: column types and rules, key, timestamp,
    de-duplication and the unknown-column policy (not sources, descriptions, target or derived features)."""
    # source_name only when set, so specs written before it existed keep their fingerprints
    # pii and drift_threshold act on the serving log and the monitor, not on the written data
    columns = {n: c.model_dump(mode="json", exclude={"description", "feature", "pii", "drift_threshold"}
                               | (set() if c.source_name is not None else {"source_name"}))
               for n, c in spec.columns.items()}
    gen = spec.generated_key
    key = gen.model_dump(mode="json") if gen is not None else spec.key_columns
    return json_sha256({"columns": columns, "entity_key": key, "event_timestamp": spec.event_timestamp,
                 "dedupe": spec.dedupe, "unknown_columns": spec.unknown_columns})
