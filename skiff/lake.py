"""The lake: ingested data, partitioned by dataset and ingest date.

Layout (under the lake URI, ``<root>/lake`` by default)::

    raw/<dataset>/ingest_date=YYYY-MM-DD/run=<run_id>/
        part-00000.parquet ...   accepted rows, typed by the dataset spec
        _quarantine.parquet      rejected rows with _source, _row, _page, _column, _reason, _problems
        _manifest.json           a skiff.manifest.RunManifest: sources, counts, schema, hashes, times
        _COMMITTED               written last (see skiff.storage)
    failed/<dataset>/run=<run_id>/   a run refused by ingestion: _quarantine.parquet and _manifest.json
                                     (status "failed"); no reader of raw/ lists it
    state/<dataset>/<key>.json       what a source keeps between runs (a SQL source's watermark)

The lake alone writes manifests, when it publishes a run (:meth:`Lake.publish_run`,
:meth:`Lake.keep_failed_run`): it adds the part files' hashes and the finish time, so every writer's
manifest carries them. Readers get the typed model from :meth:`Lake.manifest`.

A partition is one ingest date; one date may hold several runs (e.g. incremental database reads,
stream batches, or a re-ingestion after a spec change). Only committed runs exist for readers. Files
starting with ``_`` or ``.`` are not data (pyarrow's dataset discovery skips them too).

Which runs a reader uses is decided in one place, :meth:`Lake.select_runs`, so validation, features and
training read the same rows: per partition, the runs written under the current spec (their manifests'
``spec_hash`` is :func:`skiff.spec.spec_fingerprint` of it), or one explicit run. A re-ingestion after
a spec change thus supersedes the runs the old rules wrote, while increments under one spec add up.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skiff.config import Settings
from skiff.errors import InvariantError, NotFoundError
from skiff.manifest import RunManifest
from skiff.spec import json_sha256
from skiff.storage import Store

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Lake", "RunRef", "RunSelection", "StagedRun", "MANIFEST", "QUARANTINE"]

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


@dataclass
class StagedRun:
    """A run being written (see :meth:`Lake.publish_run`): its files go in :attr:`folder` (``staged / name``
    is the path of one), and the :attr:`manifest` set before the block ends is what the lake writes."""

    ref: RunRef
    folder: Path
    manifest: RunManifest | None = None

    def __truediv__(self, name: str) -> Path:
        return self.folder / name

    def __fspath__(self) -> str:
        return str(self.folder)


@dataclass(frozen=True)
class SelectedRun:
    ref: RunRef
    spec_hash: str | None
    finished_at: str | None


@dataclass(frozen=True)
class RunSelection:
    """The committed runs a reader uses, and why (see :meth:`Lake.select_runs`)."""

    dataset: str
    spec_hash: str | None
    chosen: tuple[SelectedRun, ...]
    notes: tuple[str, ...] = ()

    @property
    def runs(self) -> list[RunRef]:
        return [c.ref for c in self.chosen]

    @property
    def dates(self) -> list[str]:
        return sorted({c.ref.date for c in self.chosen})

    def describe(self) -> dict[str, Any]:
        """What a summary or a model version records: the runs used, each with its spec hash."""
        return {
            "spec_hash": self.spec_hash,
            "runs": [{"ingest_date": c.ref.date, "run_id": c.ref.run_id, "spec_hash": c.spec_hash,
                      "current_spec": self.spec_hash is not None and c.spec_hash == self.spec_hash}
                     for c in self.chosen],
            "notes": list(self.notes),
        }


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

    def manifest(self, ref: RunRef) -> RunManifest:
        """A committed run's manifest (:class:`FileNotFoundError` if it was published without one). A
        manifest of an older version may lack the run's identity: it comes from the run's folder."""
        return _read_manifest(self.store.read_json(*ref.parts, MANIFEST), ref.dataset, ref.run_id, ref.date)

    def failed_manifest(self, dataset: str, run_id: str) -> RunManifest:
        """The manifest of a run kept under ``failed/`` (see :meth:`keep_failed_run`)."""
        data = self.store.read_json("failed", dataset, f"run={run_id}", MANIFEST)
        return _read_manifest(data, dataset, run_id, data.get("ingest_date", ""))

    def find_run(self, dataset: str, fingerprint: str) -> RunRef | None:
        """The committed run whose manifest has this input fingerprint (idempotent re-ingestion)."""
        for ref in self.all_runs(dataset):
            if self.manifest(ref).fingerprint == fingerprint:
                return ref
        return None

    def source_state(self, dataset: str, key: str) -> dict[str, Any] | None:
        """What a source recorded after the last run that published (None: nothing yet)."""
        parts = ("state", dataset, f"{key}.json")
        return self.store.read_json(*parts) if self.store.exists(*parts) else None

    def save_source_state(self, dataset: str, key: str, state: dict[str, Any]) -> None:
        """Record a source's state; call it only after the run that took it is published."""
        self.store.write_json(state, "state", dataset, f"{key}.json")

    def select_runs(
        self,
        dataset: str,
        spec_hash: str | None = None,
        dates: list[str] | str | None = None,
        run_id: str | None = None,
    ) -> RunSelection:
        """The runs a reader of ``dates`` (all partitions when None) uses.

        ``run_id``: that run alone (:class:`NotFoundError` if no committed run of those dates has it).
        Otherwise, per partition, every run whose manifest's ``spec_hash`` is ``spec_hash`` (runs of one
        spec are increments that add up; runs of another spec were superseded by a re-ingestion). A
        partition with no run of ``spec_hash`` (not re-ingested since the spec changed) keeps the runs of
        the spec its newest run was written with, and a note says so.
        """
        if isinstance(dates, str):
            dates = [dates]
        chosen_dates = self.partitions(dataset) if dates is None else list(dates)
        if not chosen_dates:
            raise NotFoundError(f"dataset {dataset!r} has no ingested partitions in {self.store.uri('raw')}; "
                                "run `skiff ingest` first", dataset=dataset)
        candidates: dict[str, list[SelectedRun]] = {}
        for date in chosen_dates:
            refs = self.runs(dataset, date)
            if not refs:
                raise NotFoundError(f"dataset {dataset!r} has no committed partition ingest_date={date}",
                                    dataset=dataset, date=date)
            described = []
            for ref in refs:
                try:
                    manifest = self.manifest(ref)
                except FileNotFoundError:  # a run published without one (older tools, hand-made runs)
                    described.append(SelectedRun(ref, None, None))
                    continue
                described.append(SelectedRun(ref, manifest.spec_hash, manifest.finished_at))
            # oldest first, so the newest run of a spec decides a fallback and readers see runs in order
            candidates[date] = sorted(described, key=lambda r: (r.finished_at or "", r.ref.run_id))
        if run_id is not None:
            for runs in candidates.values():
                for r in runs:
                    if r.ref.run_id == run_id:
                        return RunSelection(dataset, spec_hash, (r,))
            known = [f"{r.ref.date}/{r.ref.run_id}" for runs in candidates.values() for r in runs]
            raise NotFoundError(f"dataset {dataset!r} has no committed run {run_id!r} in ingest_date "
                                f"{', '.join(chosen_dates)}; its runs: {', '.join(known[-20:])}"
                                f"{' (the last 20)' if len(known) > 20 else ''}", dataset=dataset, run_id=run_id)
        chosen: list[SelectedRun] = []
        notes: list[str] = []
        for date, runs in candidates.items():
            current = [r for r in runs if spec_hash is not None and r.spec_hash == spec_hash]
            if not current:
                newest = runs[-1].spec_hash
                current = [r for r in runs if r.spec_hash == newest]
                if spec_hash is not None and newest is not None:
                    notes.append(f"ingest_date={date} has no run written with the current spec; its runs of an "
                                 "earlier spec are used (ingest it again to apply the current rules)")
            left_out = len(runs) - len(current)
            if left_out:
                notes.append(f"ingest_date={date}: {left_out} run(s) written with another spec left out")
            chosen += current
        return RunSelection(dataset, spec_hash, tuple(chosen), tuple(notes))

    def run_files(self, ref: RunRef) -> list[str]:
        """URIs of one committed run's accepted-row Parquet files."""
        return [self.store.uri(*ref.parts, n) for n in self.store.listdir(*ref.parts)
                if n.endswith(".parquet") and not n.startswith(("_", "."))]

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
                files += self.run_files(ref)
        return files

    def read(self, dataset: str, dates: list[str] | str | None = None,
             columns: list[str] | None = None) -> pa.Table:
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
    def publish_run(self, dataset: str, run_id: str, date: str | None = None) -> Iterator[StagedRun]:
        """Stage one run's files in a local folder; they appear in the lake whole, or not at all.

        Set ``staged.manifest`` inside the block: when the block ends without an error the lake
        completes it (part files' hashes, content hash, finish time), writes it and commits the run;
        ``staged.manifest`` is then the manifest as written.
        """
        date = date or dt.date.today().isoformat()
        ref = RunRef(dataset, date, run_id)
        with self.store.atomic_dir(*ref.parts) as folder:
            staged = StagedRun(ref, folder)
            yield staged
            if staged.manifest is not None:
                staged.manifest = _write_manifest(folder, staged.manifest, ref)

    def keep_failed_run(self, manifest: RunManifest, quarantine: Path) -> str:
        """Keep a refused run's quarantine file and manifest (status ``failed``) under
        ``failed/<dataset>/run=<run_id>/``, whole or not at all; returns the quarantine's URI."""
        parts = ("failed", manifest.dataset, f"run={manifest.run_id}")
        ref = RunRef(manifest.dataset, manifest.ingest_date, manifest.run_id)
        with self.store.atomic_dir(*parts) as folder:
            os.replace(quarantine, folder / QUARANTINE)
            _write_manifest(folder, manifest.model_copy(update={"status": "failed", "quarantine_file": QUARANTINE}),
                            ref)
        return self.store.uri(*parts, QUARANTINE)


def _read_manifest(data: dict[str, Any], dataset: str, run_id: str, date: str) -> RunManifest:
    return RunManifest.model_validate({"dataset": dataset, "run_id": run_id, "ingest_date": date, **data})


def _write_manifest(folder: Path, manifest: RunManifest, ref: RunRef) -> RunManifest:
    """Complete a run's manifest from its staged files and write it; returns it as written."""
    if (manifest.dataset, manifest.run_id, manifest.ingest_date) != (ref.dataset, ref.run_id, ref.date):
        raise InvariantError(f"manifest of run {manifest.dataset}/{manifest.run_id} ({manifest.ingest_date}) "
                             f"staged as {ref.dataset}/{ref.run_id} ({ref.date})")
    files = [f if f.sha256 else f.model_copy(update={"sha256": _file_sha256(folder / f.name)})
             for f in manifest.files]
    done = manifest.model_copy(update={
        "files": files,
        "content_hash": json_sha256([f.sha256 for f in files]) if files else manifest.content_hash,
        "finished_at": manifest.finished_at or dt.datetime.now(dt.UTC).isoformat(),
    })
    (folder / MANIFEST).write_text(done.to_json())
    return done


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest()

