"""The lake: ingested data, partitioned by dataset and ingest date.

Layout (under the lake URI, ``<root>/lake`` by default)::

    raw/<dataset>/ingest_date=YYYY-MM-DD/run=<run_id>/
        part-00000.parquet ...   accepted rows, typed by the dataset spec
        _quarantine.parquet      rejected rows with _source, _row, _page, _column, _reason, _problems
        _manifest.json           source, counts, schema, content hash, started/finished
        _COMMITTED               written last (see skiff.storage)

A partition is one ingest date; one date may hold several runs (e.g. incremental database reads).
Only committed runs exist for readers. Files starting with ``_`` or ``.`` are not data (pyarrow's
dataset discovery skips them too).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skiff.config import Settings
from skiff.errors import NotFoundError
from skiff.storage import Store

__all__ = ["Lake", "RunRef", "MANIFEST", "QUARANTINE"]

MANIFEST = "_manifest.json"
QUARANTINE = "_quarantine.parquet"
_DATE_DIR = re.compile(r"^ingest_date=(\d{4}-\d{2}-\d{2})$")
_RUN_DIR = re.compile(r"^run=([A-Za-z0-9_.\-]+)$")


@dataclass(frozen=True)
class RunRef:
    dataset: str
    date: str
    run_id: str

    @property
    def parts(self) -> tuple[str, ...]:
        return ("raw", self.dataset, f"ingest_date={self.date}", f"run={self.run_id}")


class Lake:
    """Read and publish lake partitions through a :class:`~skiff.storage.Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @classmethod
    def from_settings(cls, settings: Settings) -> Lake:
        return cls(Store(settings.lake_uri, settings.storage_options))

    # -- listing -------------------------------------------------------------------------------------
    def datasets(self) -> list[str]:
        return self.store.listdir("raw")

    def partitions(self, dataset: str) -> list[str]:
        """Ingest dates (YYYY-MM-DD, ascending) that hold at least one committed run."""
        dates = []
        for name in self.store.listdir("raw", dataset):
            m = _DATE_DIR.match(name)
            if m and self.runs(dataset, m.group(1)):
                dates.append(m.group(1))
        return dates

    def runs(self, dataset: str, date: str) -> list[RunRef]:
        refs = []
        for name in self.store.listdir("raw", dataset, f"ingest_date={date}"):
            m = _RUN_DIR.match(name)
            if m:
                ref = RunRef(dataset, date, m.group(1))
                if self.store.is_committed(*ref.parts):
                    refs.append(ref)
        return refs

    def all_runs(self, dataset: str) -> list[RunRef]:
        return [r for d in self.partitions(dataset) for r in self.runs(dataset, d)]

    def manifest(self, ref: RunRef) -> dict[str, Any]:
        return self.store.read_json(*ref.parts, MANIFEST)

    def find_run(self, dataset: str, fingerprint: str) -> RunRef | None:
        """The committed run whose manifest has this input fingerprint (idempotent re-ingestion)."""
        for ref in self.all_runs(dataset):
            if self.manifest(ref).get("fingerprint") == fingerprint:
                return ref
        return None

    def latest_partition(self, dataset: str) -> str:
        dates = self.partitions(dataset)
        if not dates:
            raise NotFoundError(f"dataset {dataset!r} has no ingested partitions in {self.store.uri('raw')}")
        return dates[-1]

    def previous_partition(self, dataset: str, date: str) -> str | None:
        earlier = [d for d in self.partitions(dataset) if d < date]
        return earlier[-1] if earlier else None

    def data_files(self, dataset: str, dates: list[str] | str | None = None) -> list[str]:
        """URIs of the accepted-row Parquet files of committed runs (all dates when None)."""
        if isinstance(dates, str):
            dates = [dates]
        chosen = self.partitions(dataset) if dates is None else dates
        files: list[str] = []
        for date in chosen:
            refs = self.runs(dataset, date)
            if not refs:
                raise NotFoundError(f"dataset {dataset!r} has no committed partition ingest_date={date}")
            for ref in refs:
                files += [
                    self.store.uri(*ref.parts, n)
                    for n in self.store.listdir(*ref.parts)
                    if n.endswith(".parquet") and not n.startswith(("_", "."))
                ]
        return files

    def read(self, dataset: str, dates: list[str] | str | None = None, columns: list[str] | None = None):
        """Accepted rows as a pyarrow Table (columns unified across runs)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        files = self.data_files(dataset, dates)
        if not files:
            raise NotFoundError(f"dataset {dataset!r} has no data in the lake")
        tables = [pq.read_table(f, columns=columns, filesystem=self.store.fs if not self.store.is_local else None)
                  for f in (self._fs_path(u) for u in files)]
        return pa.concat_tables(tables, promote_options="default")

    def _fs_path(self, uri: str) -> str:
        return uri if self.store.is_local else self.store.fs._strip_protocol(uri)

    # -- writing -------------------------------------------------------------------------------------
    def clean_staging(self, dataset: str) -> list[str]:
        """Remove the staging folders of a dataset's runs whose writer died (see
        :meth:`skiff.storage.Store.clean_abandoned_staging`); returns their URIs."""
        return self.store.clean_abandoned_staging("raw", dataset, depth=1)

    @contextlib.contextmanager
    def publish_run(self, dataset: str, run_id: str, date: str | None = None) -> Iterator[Path]:
        """Stage one run's files in a local folder; they appear in the lake whole, or not at all."""
        date = date or dt.date.today().isoformat()
        ref = RunRef(dataset, date, run_id)
        with self.store.atomic_dir(*ref.parts) as staging:
            yield staging
