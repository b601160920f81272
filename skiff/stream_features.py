"""Stream features in Feast: one push-source view per window of the spec, and the online writer of the stream.

Generated from the spec's ``windows:`` section (:class:`skiff.stream_spec.StreamWindows`), like the batch
definitions are generated from its columns; nothing is rendered and imported:

* per window ``w``: a ``PushSource`` ``<dataset>_<w>_push`` whose batch source is the offline file
  ``<lake>/features/<dataset>/window_<w>.parquet`` (timestamp ``window_end``), and a feature view
  ``<dataset>_<w>`` over it with the window's features (``<w>_<column>_<aggregation>``) — a
  stream-feature-view in all but Feast's Kafka/Kinesis binding, which an MQTT stream has no use for;
* a feature service ``<dataset>_windows`` serving every window view.

:class:`FeastStreamWriter` writes what the consumer produces: each closed window through its push source
(online), and each device's latest reading into the dataset's batch view ``<dataset>_features`` (the one
the model's feature service and ``skiff serve --with-features`` read), so served features are seconds old.
The offline side is the lake: each stream run keeps its closed windows (``_window_<w>.parquet``) and
:func:`build_window_sources` gathers them into the views' offline files for point-in-time training.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from skiff.errors import SpecError
from skiff.feature_store import feature_sources, timestamp_field
from skiff.identifiers import check_identifier, check_name
from skiff.lake import Lake
from skiff.windows import WINDOW_END, WINDOW_START

if TYPE_CHECKING:
    from feast import FeatureStore

    from skiff.spec import DatasetSpec

__all__ = ["StreamDefinitions", "stream_definitions", "window_view_name", "window_push_name", "window_file",
           "run_window_file", "FeastStreamWriter", "build_window_sources", "WINDOWS_SERVICE_SUFFIX"]

log = logging.getLogger(__name__)

WINDOWS_SERVICE_SUFFIX = "_windows"
_ENTITY_VALUE_TYPE = {"integer": "INT64", "string": "STRING", "category": "STRING"}


def window_view_name(spec: DatasetSpec, window: str) -> str:
    return f"{check_name(spec.name, 'dataset')}_{check_identifier(window, 'window')}"


def window_push_name(spec: DatasetSpec, window: str) -> str:
    return f"{window_view_name(spec, window)}_push"


def window_file(window: str) -> str:
    """The offline file of a window view, in ``<lake>/features/<dataset>/``."""
    return f"window_{check_identifier(window, 'window')}.parquet"


def run_window_file(window: str) -> str:
    """The closed windows of one stream run, in the run's folder (underscore: not rows of the dataset)."""
    return f"_window_{check_identifier(window, 'window')}.parquet"


@dataclass
class StreamDefinitions:
    entity: Any
    sources: list[Any]
    views: list[Any]
    service: Any

    def objects(self) -> list[Any]:
        return [self.entity, *self.sources, *self.views, self.service]


def stream_definitions(spec: DatasetSpec, source_dir: str, ttl_days: int = 3650) -> StreamDefinitions:
    """The spec's window views as Feast objects (push sources over the offline window files)."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType, types

    if spec.windows is None:
        raise SpecError(f"dataset {spec.name!r} declares no windows")
    key = check_identifier(spec.key_columns[0], "entity key column")
    vt = _ENTITY_VALUE_TYPE[spec.columns[key].type]
    entity = Entity(name=key, join_keys=[key], value_type=getattr(ValueType, vt))
    sources: list[Any] = []
    views: list[Any] = []
    for w in spec.windows.define:
        batch = FileSource(name=f"{window_view_name(spec, w.name)}_source",
                           path=os.path.join(source_dir, check_name(spec.name, "dataset"), window_file(w.name)),
                           timestamp_field=WINDOW_END)
        push = PushSource(name=window_push_name(spec, w.name), batch_source=batch)
        schema = [Field(name=check_identifier(f, "window feature"), dtype=types.Int64 if a == "count" else types.Float64)
                  for f, _, a in w.feature_names()]
        views.append(FeatureView(name=window_view_name(spec, w.name), entities=[entity],
                                 ttl=dt.timedelta(days=ttl_days), schema=schema, source=push, online=True))
        sources += [batch, push]
    service = FeatureService(name=f"{check_name(spec.name, 'dataset')}{WINDOWS_SERVICE_SUFFIX}", features=views)
    return StreamDefinitions(entity=entity, sources=sources, views=views, service=service)


class FeastStreamWriter:
    """Writes a consumer's closed windows and latest readings to the Feast online store (opened once)."""

    def __init__(self, store: FeatureStore, spec: DatasetSpec, lake: Lake, *, apply: bool = True) -> None:
        self.store, self.spec = store, spec
        self.ts = timestamp_field(spec)
        self.definitions = stream_definitions(spec, feature_sources(lake).uri())
        if apply:
            store.apply(self.definitions.objects())
        self.latest_view = f"{spec.name}_features"
        try:
            view = store.get_feature_view(self.latest_view)
            self.latest_columns: list[str] | None = [*spec.key_columns, self.ts, *(f.name for f in view.features)]
        except Exception as e:  # noqa: BLE001 - Feast raises its own FeatureViewNotFoundException
            log.warning("%s: no feature view %s yet (run `skiff features` once): latest readings are not written "
                        "online until it exists (%s)", spec.name, self.latest_view, type(e).__name__)
            self.latest_columns = None
        self.last_push_s = 0.0

    def write(self, latest: pa.Table, closed: dict[str, pa.Table]) -> float:
        """Push closed windows and the latest readings; returns the seconds it took."""
        from feast.data_source import PushMode

        started = time.perf_counter()
        for name, table in closed.items():
            if table.num_rows:
                df = table.drop_columns([WINDOW_START]).to_pandas()
                self.store.push(window_push_name(self.spec, name), df, to=PushMode.ONLINE)
        if self.latest_columns is not None and latest.num_rows:
            cols = [c for c in self.latest_columns if c in latest.column_names]
            self.store.write_to_online_store(self.latest_view, df=latest.select(cols).to_pandas())
        self.last_push_s = time.perf_counter() - started
        return self.last_push_s


def build_window_sources(lake: Lake, spec: DatasetSpec) -> dict[str, int]:
    """Gather the closed windows of every committed stream run into the window views' offline files
    (``<lake>/features/<dataset>/window_<w>.parquet``, written atomically); returns rows per window.
    A window closed twice (a run published again after a crash before its acknowledgement) keeps its
    first result."""
    if spec.windows is None:
        raise SpecError(f"dataset {spec.name!r} declares no windows")
    out: dict[str, int] = {}
    target = feature_sources(lake).child(check_name(spec.name, "dataset"))
    key = spec.key_columns[0]
    for w in spec.windows.define:
        name = run_window_file(w.name)
        tables = []
        for ref in lake.all_runs(spec.name):
            if lake.store.exists(*ref.parts, name):
                with lake.store.open(*ref.parts, name) as f:
                    tables.append(pq.read_table(f))
        if not tables:
            out[w.name] = 0
            continue
        table = pa.concat_tables(tables, promote_options="default")
        idx = table.select([key, WINDOW_START]).to_pandas().drop_duplicates(keep="first").index.to_numpy()
        table = table.take(pa.array(idx)).sort_by([(key, "ascending"), (WINDOW_END, "ascending")])
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        target.write_bytes(sink.getvalue().to_pybytes(), window_file(w.name))
        out[w.name] = table.num_rows
    return out
