"""Feast features from a dataset spec: definitions, the offline source, apply, materialize, retrieval.

The definitions — an entity per key column, the file source, the feature view, an on-demand view for
the spec's derived features, and a versioned feature service — are built as Feast objects directly
from the spec (:func:`build_definitions`); nothing is rendered and imported on the way. Every name is
held to skiff's identifier policy first (``skiff.identifiers``), and derived expressions are parsed
into a whitelist and evaluated by a tree walker (``skiff.expressions``), never ``eval``'d.

``skiff features generate`` writes the same definitions as a Python file for people and for the
``feast`` CLI (:func:`render_definitions`): there every value from the spec is a ``repr()`` literal of a
name that passed the policy, and variable names are fixed (``entity_0``, ``feature_view``), never
derived from data. A test imports that file and compares its objects with the directly built ones.

The offline source is one Parquet file per dataset, built from the lake's committed runs
(deduplicated on entity key + event timestamp); training rows come from Feast's point-in-time
historical retrieval against it, and serving reads what was materialized online.
"""

from __future__ import annotations

import ast
import datetime as dt
import io
import logging
import os
import sys
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from types import FunctionType
from typing import TYPE_CHECKING, Any, cast

import pandas as pd

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.on_demand_feature_view import OnDemandFeatureView

from skiff.errors import InputError, NotFoundError, SpecError, UsageError
from skiff.expressions import parse_expression
from skiff.feature_store import (
    DEFAULT_FEATURE_SOURCE_DIR,
    FEATURE_SOURCE_ENV,
    TIMESTAMP_FIELD,
    feature_service_name,
    feature_sources,
    open_store,
    timestamp_field,
)
from skiff.identifiers import check_identifier, check_name
from skiff.lake import Lake, RunSelection
from skiff.spec import DatasetSpec, spec_fingerprint
from skiff.storage import Store

__all__ = [
    "Definitions",
    "build_definitions",
    "render_definitions",
    "derived_udf_source",
    "derived_feature_view",
    "build_offline_source",
    "apply_definitions",
    "materialize",
    "training_frame",
    "FeaturesResult",
    "run_features",
    "definitions_file",
    "write_definitions",
    "entity_rows",
]

log = logging.getLogger(__name__)

_FEAST_TYPE = {"integer": "Int64", "float": "Float64", "string": "String", "category": "String",
               "boolean": "Bool", "datetime": "UnixTimestamp"}
_ENTITY_VALUE_TYPE = {"integer": "INT64", "string": "STRING", "category": "STRING"}
_DERIVED_FEAST_TYPE = {"float": "Float64", "integer": "Int64", "boolean": "Bool"}
#: The on-demand view's transformation as Feast stores it. Feast 0.67 rebuilds a UDF by exec'ing this
#: text (from the registry) before it falls back to the dill bytes, so it is fixed text whose only
#: variable part is one literal of names and expressions that passed the policy (see derived_udf_source).
_UDF_TEMPLATE = """def skiff_derived(inputs):
    from skiff.expressions import derived_frame

    return derived_frame(inputs, {features})
"""

@dataclass(frozen=True)
class _Plan:
    """What the definitions are made of: every name checked against the identifier policy."""

    dataset: str
    keys: list[tuple[str, str]]  # (column, Feast ValueType name)
    timestamp: str
    fields: list[tuple[str, str]]  # (column, feast.types name); join keys are not listed
    derived: tuple[tuple[str, str, str], ...]  # (name, expression, type)
    derived_fields: list[tuple[str, str]]
    service: str
    ttl_days: int


def _plan(spec: DatasetSpec, ttl_days: int) -> _Plan:
    name = check_name(spec.name, "dataset")
    keys = []
    for k in spec.key_columns:
        vt = _ENTITY_VALUE_TYPE.get(spec.columns[k].type)
        if vt is None:
            raise SpecError(f"entity key {k!r} must be a string, category or integer column", column=k)
        keys.append((check_identifier(k, "entity key column"), vt))
    ts = check_identifier(timestamp_field(spec), "event timestamp column")
    if spec.event_timestamp is None and TIMESTAMP_FIELD in spec.columns:
        raise SpecError(f"column {TIMESTAMP_FIELD!r} is the event time skiff adds when the spec names none: "
                        f"set event_timestamp: {TIMESTAMP_FIELD} (a datetime column) or rename the column",
                        column=TIMESTAMP_FIELD)
    join_keys = {k for k, _ in keys}
    # a key column that is also a feature (feature: true) reaches the model as the join key Feast
    # returns with every row; Feast refuses a join key in a view's schema
    fields = [(check_identifier(c, "feature column"), _FEAST_TYPE[spec.columns[c].type])
              for c in spec.feature_columns if c not in join_keys]
    derived = tuple((check_identifier(d.name, "derived feature"), d.expr, d.type) for d in spec.derived)
    for _, expr, _ in derived:
        parse_expression(expr)
    return _Plan(dataset=name, keys=keys, timestamp=ts, fields=fields, derived=derived,
                 derived_fields=[(n, _DERIVED_FEAST_TYPE[t]) for n, _, t in derived],
                 service=feature_service_name(spec), ttl_days=ttl_days)


def derived_udf_source(features: tuple[tuple[str, str, str], ...]) -> str:
    """Feast's source text of the derived-feature transformation for ``features``.

    Each name must meet the identifier policy and each expression the whitelist, and the literal
    must read back (``ast.literal_eval``) as exactly ``features``, before the text is returned.
    """
    clean = tuple((check_identifier(n, "derived feature"), str(e), str(t)) for n, e, t in features)
    for _, expr, _ in clean:
        parse_expression(expr)
    literal = repr(clean)
    if ast.literal_eval(literal) != clean:  # a repr of str tuples is a literal; say so if that ever breaks
        raise SpecError("derived features do not round-trip as a literal")
    return _UDF_TEMPLATE.format(features=literal)


@dataclass
class Definitions:
    """The Feast objects of one dataset, in the order ``apply`` takes them."""

    entities: list[Any]
    source: Any
    feature_view: Any
    derived_view: Any | None
    feature_service: Any

    def objects(self) -> list[Any]:
        return [*self.entities, self.source, self.feature_view,
                *([self.derived_view] if self.derived_view is not None else []), self.feature_service]


def derived_feature_view(name: str, source_view: Any, schema: list[Any],
                         features: tuple[tuple[str, str, str], ...]) -> OnDemandFeatureView:
    """The on-demand view computing ``features`` (name, expression, type) from ``source_view``.

    Its UDF is a closure over the features (data in its cells) and its Feast source text is
    :func:`derived_udf_source`: both call ``skiff.expressions.derived_frame``.
    """
    from feast.on_demand_feature_view import OnDemandFeatureView

    from skiff.expressions import derived_udf

    udf = cast(FunctionType, derived_udf(features))  # Feast annotates FunctionType; any callable works
    return OnDemandFeatureView(name=name, sources=[source_view], schema=schema, mode="pandas",
                               udf=udf, udf_string=derived_udf_source(features))


def build_definitions(spec: DatasetSpec, source_dir: str, ttl_days: int = 3650) -> Definitions:
    """The spec's Feast objects, built directly; the offline source is ``<source_dir>/<dataset>/offline.parquet``."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType, types

    plan = _plan(spec, ttl_days)
    entities = [Entity(name=k, join_keys=[k], value_type=getattr(ValueType, vt)) for k, vt in plan.keys]
    source = FileSource(name=f"{plan.dataset}_source", path=os.path.join(source_dir, plan.dataset, "offline.parquet"),
                        timestamp_field=plan.timestamp)
    view = FeatureView(
        name=f"{plan.dataset}_features", entities=entities, ttl=dt.timedelta(days=plan.ttl_days),
        schema=[Field(name=c, dtype=getattr(types, t)) for c, t in plan.fields], source=source, online=True,
    )
    derived = None
    if plan.derived:
        derived = derived_feature_view(f"{plan.dataset}_derived", view,
                                [Field(name=n, dtype=getattr(types, t)) for n, t in plan.derived_fields],
                                plan.derived)
    service = FeatureService(name=plan.service, features=[view, *([derived] if derived is not None else [])])
    return Definitions(entities=entities, source=source, feature_view=view, derived_view=derived,
                       feature_service=service)


def render_definitions(spec: DatasetSpec, ttl_days: int = 3650) -> str:
    """Python source of the same definitions, for people and the ``feast`` CLI (deterministic).

    Every value from the spec is a ``repr()`` literal of a name that passed the identifier policy;
    variable names are fixed (``entity_0``…), never taken from data.
    """
    plan = _plan(spec, ttl_days)
    entity_vars = [f"entity_{i}" for i in range(len(plan.keys))]
    lines = [
        '"""Feast definitions of one skiff dataset, generated by skiff from its spec; do not edit by hand.',
        "",
        "Regenerate with `skiff features generate --spec <spec file>`. The offline source is",
        f"<lake>/features/<dataset>/offline.parquet ({FEATURE_SOURCE_ENV} = <lake>/features).",
        '"""',
        "",
        "import datetime",
        "import os",
        "",
        "from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType",
        "from feast.types import Bool, Float64, Int64, String, UnixTimestamp  # noqa: F401",
        *(["", "from components.features.logic import derived_feature_view"] if plan.derived else []),
        "",
        f"DATASET = {plan.dataset!r}",
        f'SOURCE_PATH = os.path.join(os.environ.get("{FEATURE_SOURCE_ENV}", {DEFAULT_FEATURE_SOURCE_DIR!r}), DATASET, '
        '"offline.parquet")',
        "",
    ]
    for var, (k, vt) in zip(entity_vars, plan.keys, strict=True):
        lines.append(f"{var} = Entity(name={k!r}, join_keys=[{k!r}], value_type=ValueType.{vt})")
    lines += [
        "",
        f'source = FileSource(name=DATASET + "_source", path=SOURCE_PATH, timestamp_field={plan.timestamp!r})',
        "",
        "feature_view = FeatureView(",
        '    name=DATASET + "_features",',
        f"    entities=[{', '.join(entity_vars)}],",
        f"    ttl=datetime.timedelta(days={int(plan.ttl_days)}),",
        "    schema=[",
    ]
    lines += [f"        Field(name={c!r}, dtype={t})," for c, t in plan.fields]
    lines += ["    ],", "    source=source,", "    online=True,", ")", ""]
    views = ["feature_view"]
    if plan.derived:
        lines += [
            "# the derived features: (name, expression, type); expressions are parsed into a whitelist and",
            "# evaluated by skiff.expressions, never eval'd",
            "DERIVED = (",
            *[f"    {item!r}," for item in plan.derived],
            ")",
            "",
            'derived_view = derived_feature_view(DATASET + "_derived", feature_view, [',
            *[f"    Field(name={n!r}, dtype={t})," for n, t in plan.derived_fields],
            "], DERIVED)",
            "",
        ]
        views.append("derived_view")
    lines += [f"feature_service = FeatureService(name={plan.service!r}, features=[{', '.join(views)}])", ""]
    return "\n".join(lines)


@dataclass
class FeaturesResult:
    dataset: str
    feature_service: str
    rows: int
    entities: int
    partitions: list[str]
    source_uri: str
    materialized_until: str
    online_store: str
    definitions: list[str]  # names of the Feast objects applied
    timings: dict[str, float] = field(default_factory=dict)
    #: the runs read (skiff.lake.RunSelection.describe()): what validation checked for the same spec
    runs: dict[str, Any] = field(default_factory=dict)


def build_offline_source(lake: Lake, spec: DatasetSpec, out: Store,
                         selection: RunSelection | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Consolidate the lake's selected runs into ``<out>/<dataset>/offline.parquet``.

    ``selection`` defaults to :meth:`Lake.select_runs` for this spec (validation reads the same runs).
    Adds the event-time column from the run's ingest time when the spec names none, and keeps the last
    row per entity key and event time across runs. Returns the frame and the partitions it came from.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not lake.partitions(spec.name):
        raise NotFoundError(f"dataset {spec.name!r} has no ingested partitions; run `skiff ingest` first")
    selection = selection or lake.select_runs(spec.name, spec_fingerprint(spec))
    partitions = selection.dates
    frames = []
    for ref in selection.runs:
        files = lake.run_files(ref)
        if not files:
            continue
        part = pd.concat([pq.read_table(f, filesystem=None if lake.store.is_local else lake.store.fs).to_pandas()
                          for f in (_fs_path(lake.store, u) for u in files)], ignore_index=True)
        if spec.event_timestamp is None:
            finished = lake.manifest(ref).finished_at or f"{ref.date}T00:00:00+00:00"
            part[TIMESTAMP_FIELD] = pd.Timestamp(finished).tz_convert("UTC") if pd.Timestamp(finished).tzinfo \
                else pd.Timestamp(finished, tz="UTC")
        frames.append(part)
    df = pd.concat(frames, ignore_index=True)
    ts = timestamp_field(spec)
    missing = [c for c in [*spec.key_columns, ts] if c not in df.columns]
    if missing:
        raise InputError(f"dataset {spec.name!r}: lake data lacks columns {missing}")
    df[ts] = pd.to_datetime(df[ts], utc=True)
    before = len(df)
    df = df.dropna(subset=[*spec.key_columns, ts])
    if len(df) < before:
        log.warning("%s: %d rows without entity key or event time left out of the feature source",
                    spec.name, before - len(df))
    df = df.sort_values(ts, kind="stable").drop_duplicates([*spec.key_columns, ts], keep="last")
    df = df.reset_index(drop=True)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    out.write_bytes(buf.getvalue(), spec.name, "offline.parquet")
    return df, partitions


def _fs_path(store: Store, uri: str) -> str:
    return uri if store.is_local else store.fs._strip_protocol(uri)


def apply_definitions(store: FeatureStore, spec: DatasetSpec, source_dir: str) -> tuple[str, list[str]]:
    """Build the spec's definitions (offline source under ``source_dir``) and ``apply`` them.

    Returns the feature service's name and the names of the objects applied.
    """
    defs = build_definitions(spec, source_dir)
    objects = defs.objects()
    store.apply(objects)
    return defs.feature_service.name, [o.name for o in objects]


def materialize(store: FeatureStore, end: dt.datetime | None = None) -> dt.datetime:
    """Incrementally load new feature rows into the online store (up to ``end``, default now)."""
    end = end or dt.datetime.now(dt.UTC)
    with redirect_stdout(sys.stderr):  # Feast prints progress: keep stdout for results (--json)
        store.materialize_incremental(end_date=end)
    return end


def training_frame(store: FeatureStore, spec: DatasetSpec, service: str, labels: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time correct training rows: for each (key, event time, label) the feature values as of then.

    ``labels`` holds the entity key(s), the event time and the target; features come from Feast, so a
    value recorded after a label's time never leaks into its row.
    """
    ts = timestamp_field(spec)
    need = [*spec.key_columns, ts] + ([spec.target] if spec.target else [])
    missing = [c for c in need if c not in labels.columns]
    if missing:
        raise InputError(f"label frame lacks columns {missing}")
    entity_df = labels[need].copy()
    entity_df[ts] = pd.to_datetime(entity_df[ts], utc=True)
    fs = store.get_feature_service(service)
    out = store.get_historical_features(entity_df=entity_df.rename(columns={ts: "event_timestamp"})
                                        if ts != "event_timestamp" else entity_df, features=fs).to_df()
    if ts != "event_timestamp":
        out = out.rename(columns={"event_timestamp": ts})
    ordered: pd.DataFrame = out.sort_values([ts, *spec.key_columns], kind="stable").reset_index(drop=True)
    return ordered


def run_features(
    spec: DatasetSpec,
    lake: Lake,
    repo_path: str | Path,
    feast_dir: str | Path,
    yaml_name: str = "feature_store.yaml",
    training_out: Path | None = None,
    run_id: str | None = None,
) -> FeaturesResult:
    """The features step: offline source from the lake, apply, materialize, and (optionally) write the
    point-in-time training frame to ``training_out`` (Parquet). The source is the lake's runs of this
    spec (:meth:`Lake.select_runs`, as validation reads), or the run ``run_id`` alone."""
    import time

    timings: dict[str, float] = {}
    t = time.perf_counter()
    sources = feature_sources(lake)
    if not lake.partitions(spec.name):
        raise NotFoundError(f"dataset {spec.name!r} has no ingested partitions; run `skiff ingest` first")
    selection = lake.select_runs(spec.name, spec_fingerprint(spec), run_id=run_id)
    offline, partitions = build_offline_source(lake, spec, sources, selection)
    timings["offline_source_s"] = time.perf_counter() - t
    t = time.perf_counter()
    store = open_store(repo_path, feast_dir, sources.uri(), yaml_name)
    timings["open_store_s"] = time.perf_counter() - t
    t = time.perf_counter()
    service, defs = apply_definitions(store, spec, sources.uri())
    end = materialize(store)
    timings["apply_materialize_s"] = time.perf_counter() - t
    if training_out is not None:
        t = time.perf_counter()
        ts = timestamp_field(spec)
        labels = offline[[*spec.key_columns, ts] + ([spec.target] if spec.target else [])]
        if spec.target:
            labels = labels.dropna(subset=[spec.target])
        frame = training_frame(store, spec, service, labels)
        Path(training_out).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(training_out, index=False)
        timings["training_frame_s"] = time.perf_counter() - t
    return FeaturesResult(
        dataset=spec.name,
        feature_service=service,
        rows=len(offline),
        entities=int(offline[spec.key_columns].drop_duplicates().shape[0]),
        partitions=partitions,
        source_uri=sources.uri(spec.name, "offline.parquet"),
        materialized_until=end.isoformat(timespec="seconds"),
        online_store=type(store.config.online_store).__name__,
        definitions=defs,
        timings=timings,
        runs=selection.describe(),
    )


def definitions_file(spec: DatasetSpec, feature_repo: str | Path) -> Path:
    """Where the Feast definitions rendered from ``spec`` belong in the feature repo: ``<repo>/<dataset>.py``."""
    return Path(feature_repo) / f"{spec.name}.py"


def write_definitions(spec: DatasetSpec, path: str | Path) -> Path:
    """Write the definitions rendered from ``spec`` (:func:`render_definitions`) to ``path``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_definitions(spec))
    return out


def entity_rows(spec: DatasetSpec, keys: list[str]) -> list[dict[str, Any]]:
    """Entity rows of an online lookup from key values as text: a JSON object (``{"a": 1, "b": "x"}``)
    names every key column; a plain value is the one key column's (an integer column's parsed as one).
    A :class:`UsageError` names a value that cannot be a key of this dataset."""
    import json

    rows: list[dict[str, Any]] = []
    for k in keys:
        if k.startswith("{"):
            try:
                rows.append(json.loads(k))
            except json.JSONDecodeError as e:
                raise UsageError(f"not a JSON object: {k!r}") from e
        elif len(spec.key_columns) == 1:
            col = spec.key_columns[0]
            if spec.columns[col].type == "integer":
                if not (k.isascii() and k.lstrip("-").isdigit()):
                    raise UsageError(f"entity key {col!r} is an integer column: {k!r} is not an integer")
                rows.append({col: int(k)})
            else:
                rows.append({col: k})
        else:
            raise UsageError(f"composite key {spec.key_columns}: give JSON objects")
    return rows
