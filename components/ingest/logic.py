"""Batch ingestion: sources → cleansed, typed Parquet in the lake, with a quarantine and a manifest.

:func:`ingest` is the one code path behind ``skiff ingest`` and the KFP ingest component. A run:

1. opens every source as a :class:`~skiff.sources.SourceReader` (files: format detection and content
   hashes; SQL: the watermark of the last committed run; REST: auth from the environment) and checks
   the columns it can see up front;
2. if the input's fingerprint (see :func:`ingest`) equals that of a committed run of the dataset,
   writes nothing and reports ``unchanged``;
3. streams every batch through :class:`~skiff.cleansing.Cleanser`, writing accepted rows to
   ``part-NNNNN.parquet`` and rejected rows to ``_quarantine.parquet`` in a staging folder;
4. imputes ``mean``/``median``/``mode`` columns with statistics of **all accepted rows of the run**
   (every source and batch, after de-duplication), computed in a second pass over the staged parts;
5. checks rows read = rows written + rows quarantined + duplicates dropped (a mismatch is a bug and
   raises), and publishes the folder with its :class:`~skiff.manifest.RunManifest` through
   :meth:`skiff.lake.Lake.publish_run` (whole, or not at all);
6. only then records what stateful sources took (SQL watermarks) through
   :meth:`skiff.lake.Lake.save_source_state`.

**The accepted-share gate.** A run that accepts less than ``min_accepted_fraction`` of its rows (read
minus duplicates; the spec's, or the caller's), and always one that accepts no row out of some, fails
with :class:`~skiff.errors.GateFailed` (exit 1) naming the commonest quarantine reasons with an example
value each. Nothing of it enters ``raw/``: a partition is either good or absent, so validation,
features and training can never read a half-rejected run, and no reader needs to know a "failed"
flag. Its quarantine is kept for inspection under ``failed/<dataset>/run=<run_id>/`` (quarantine plus
a manifest with ``status: failed``, :meth:`skiff.lake.Lake.keep_failed_run`), a folder no reader of the
lake lists; no SQL watermark moves.

A duplicate share above :data:`DUPLICATE_WARNING_SHARE` (usually an entity key that is not unique) is a
warning in the summary and the manifest (``warnings``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.engine import Engine

from components.ingest.files import FileReader
from components.ingest.rest import RestReader
from components.ingest.sql import SqlReader, masked_url, url_credentials
from skiff import __version__
from skiff.cleansing import Cleanser, ReasonTally, impute_statistic
from skiff.errors import GateFailed, InvariantError, SkiffError, SpecError, StorageError, UsageError
from skiff.lake import QUARANTINE, Lake, RunRef
from skiff.manifest import Imputation, PartFile, RunCounts, RunManifest
from skiff.sources import SourceReader, run_fingerprint
from skiff.spec import (
    DatasetSpec,
    FileSource,
    MqttSource,
    Pagination,
    RestAuth,
    RestSource,
    SourceSpec,
    SqlSource,
    spec_fingerprint,
)

__all__ = [
    "ingest",
    "IngestResult",
    "IngestSummary",
    "new_run_id",
    "open_reader",
    "source_from_arg",
    "coerce_sources",
    "ROWS_PER_PART",
    "DUPLICATE_WARNING_SHARE",
]

log = logging.getLogger("skiff.ingest")

#: Accepted rows per Parquet part file (a part holds several row groups, one per batch).
ROWS_PER_PART = 1_000_000
#: Accepted rows held in memory for statistic imputation before spilling to a second pass.
IMPUTE_BUFFER_BYTES = 256 * 1024 * 1024
#: Share of rows dropped as duplicates above which the run summary and manifest carry a warning.
DUPLICATE_WARNING_SHARE = 0.05
_RUN_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


class _NothingNew(Exception):
    """Raised inside the staging block to discard it: the input holds nothing new."""

    def __init__(self, ref: RunRef | None, reason: str) -> None:
        super().__init__(reason)
        self.ref, self.reason = ref, reason


class _IngestSummaryExtras(TypedDict, total=False):
    cleaned_staging: list[str]  # abandoned staging folders of killed runs this run removed
    reason: str  # why nothing was written (status "unchanged")


class IngestSummary(_IngestSummaryExtras):
    """What ``skiff ingest --json`` prints (scripts read it: a contract)."""

    status: str  # "ingested" or "unchanged"
    dataset: str
    run_id: str
    ingest_date: str
    partition: str
    counts: dict[str, int]
    quarantine_reasons: dict[str, int]
    quarantine_top: list[dict[str, Any]]
    imputed: dict[str, int]  # column -> values filled
    warnings: list[str]
    duration_s: float


@dataclass
class IngestResult:
    status: str  # "ingested" or "unchanged"
    dataset: str
    run_id: str
    ingest_date: str
    partition_uri: str
    #: the manifest of the run written, or of the committed run with the same input (None: no run)
    manifest: RunManifest | None
    #: rows of this run (status "unchanged": of the run found, or of the read that found nothing new)
    counts: dict[str, int]
    duration_s: float
    reason: str | None = None  # why nothing was written (status "unchanged")
    cleaned_staging: list[str] = field(default_factory=list)  # abandoned staging folders this run removed

    def manifest_json(self) -> str:
        """The run's manifest as written in the lake (just the counts when no run matched)."""
        if self.manifest is None:
            return json.dumps({"counts": self.counts}, indent=2)
        return self.manifest.to_json()

    def summary(self) -> IngestSummary:
        """What ``skiff ingest --json`` prints."""
        m = self.manifest or RunManifest(dataset=self.dataset, run_id=self.run_id, ingest_date=self.ingest_date)
        out: IngestSummary = {
            "status": self.status,
            "dataset": self.dataset,
            "run_id": self.run_id,
            "ingest_date": self.ingest_date,
            "partition": self.partition_uri,
            "counts": self.counts,
            "quarantine_reasons": m.quarantine_reasons,
            "quarantine_top": m.quarantine_top,
            "imputed": {k: v.count for k, v in m.imputed.items()},
            "warnings": m.warnings,
            "duration_s": round(self.duration_s, 3),
        }
        if self.cleaned_staging:
            out["cleaned_staging"] = self.cleaned_staging
        if self.reason:
            out["reason"] = self.reason
        return out


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def open_reader(source: SourceSpec, *, http_transport: httpx.BaseTransport | None = None,
                sql_engine: Engine | None = None, block_bytes: int | None = None) -> SourceReader:
    """A reader for one source spec (files are listed and detected now)."""
    if isinstance(source, FileSource):
        return FileReader(source, block_bytes) if block_bytes else FileReader(source)
    if isinstance(source, SqlSource):
        return SqlReader(source, engine=sql_engine)
    if isinstance(source, RestSource):
        return RestReader(source, transport=http_transport)
    if isinstance(source, MqttSource):
        raise UsageError(f"MQTT source {source.topic!r}: batch ingestion reads files, SQL and REST sources; "
                         "stream MQTT topics with `skiff stream`")
    raise UsageError(f"unknown source {source!r}")  # pragma: no cover - the spec union forbids it


def _is_sql_url(text: str) -> bool:
    from sqlalchemy.dialects import registry
    from sqlalchemy.engine import make_url

    try:
        url = make_url(text)
        registry.load(url.get_backend_name())
    except Exception:  # noqa: BLE001 - anything SQLAlchemy cannot take is not a SQL URL
        return False
    return True


def source_from_arg(text: str, *, table: str | None = None, query: str | None = None,
                    watermark: str | None = None, auth_env: str | None = None,
                    pagination: str | None = None, records_path: str | None = None) -> SourceSpec:
    """A source spec from a command-line SOURCE: a path/glob/folder/fsspec URI, an http(s) URL (REST), or
    a SQLAlchemy URL (``postgresql+psycopg://user@host/db``, ``sqlite:///file.db``) with a table or query."""
    if text.startswith(("http://", "https://")):
        if table or query or watermark:
            raise UsageError(f"{text}: --table, --query and --watermark apply to database sources only")
        try:
            pages = Pagination.model_validate({"type": pagination or "none"})
        except ValidationError as e:
            raise UsageError(f"--pagination {pagination!r}: use none, page, cursor or link") from e
        return RestSource(url=text, auth=RestAuth(env=auth_env) if auth_env else None, pagination=pages,
                          records_path=records_path)
    if "://" in text and _is_sql_url(text):
        secrets = url_credentials(text)
        if secrets:
            raise UsageError(f"{masked_url(text)}: a database URL on the command line must not hold credentials "
                             f"({', '.join(secrets)}; shell history, process lists): put the URL in an "
                             "environment variable and name it with url_env in the dataset spec")
        if (table is None) == (query is None):
            raise UsageError(f"{masked_url(text)}: give --table or --query")
        return SqlSource(url=text, table=table, query=query, watermark=watermark)
    if table or query or watermark:
        raise UsageError(f"{text}: --table, --query and --watermark apply to database sources only")
    if auth_env or pagination or records_path:
        raise UsageError(f"{text}: --auth-env, --pagination and --records-path apply to http(s) sources only")
    return FileSource(path=text)


def coerce_sources(items: Sequence[str | Mapping[str, Any]]) -> list[SourceSpec]:
    """Source specs from dicts (as in a spec's ``sources``) or strings (as on the command line)."""
    adapter = TypeAdapter(SourceSpec)
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            out.append(source_from_arg(item))
            continue
        try:
            out.append(adapter.validate_python(item))
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise SpecError(f"sources[{i}]: {problems}") from e
    return out


class _PartWriter:
    """Accepted rows into part-NNNNN.parquet files of at most ``rows_per_part`` rows.

    With statistic-imputed columns, accepted rows are first held in memory (up to ``buffer_bytes``):
    when the whole run fits, the statistics are computed and applied before the one write; a bigger run
    spills to the part files and :meth:`finish` fills the nulls in a second pass over them.
    """

    def __init__(self, folder: Path, rows_per_part: int, impute: dict[str, str], buffer_bytes: int) -> None:
        self.folder = folder
        self.rows_per_part = rows_per_part
        self.impute = impute
        self.buffer_bytes = buffer_bytes if impute else 0
        self.parts: list[PartFile] = []
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self.spilled = False

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self.buffer_bytes and not self.spilled:
            self._buffer.append(table)
            self._buffered += table.nbytes
            if self._buffered > self.buffer_bytes:
                log.info("accepted rows exceed %d MiB: imputing in a second pass over the parts",
                         self.buffer_bytes >> 20)
                self.spilled = True
                self._flush_buffer()
            return
        self._write(table)

    def _flush_buffer(self, fills: dict[str, pa.Scalar] | None = None) -> None:
        while self._buffer:
            table = self._buffer.pop(0)
            for name, value in (fills or {}).items():
                i = table.schema.get_field_index(name)
                if i >= 0 and table.column(i).null_count:
                    table = table.set_column(i, name, pc.fill_null(table.column(i), value))
            self._write(table)
        self._buffered = 0

    def _write(self, table: pa.Table) -> None:
        start = 0
        while start < table.num_rows:
            if (self._writer is None or self.parts[-1].rows >= self.rows_per_part
                    or not table.schema.equals(self._schema)):
                self._roll(table.schema)
            chunk = table.slice(start, self.rows_per_part - self.parts[-1].rows)
            self._writer.write_table(chunk)  # type: ignore[union-attr]  # _roll opened it
            self.parts[-1].rows += chunk.num_rows
            start += chunk.num_rows

    def _roll(self, schema: pa.Schema) -> None:
        self._close_writer()
        name = f"part-{len(self.parts):05d}.parquet"
        self._writer = pq.ParquetWriter(self.folder / name, schema)
        self._schema = schema
        self.parts.append(PartFile(name=name, rows=0))

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def finish(self, schema: pa.Schema) -> dict[str, Imputation]:
        """Impute, close the parts, and report per imputed column its strategy, value and count."""
        report: dict[str, Imputation] = {}
        if self.impute and not self.spilled:
            fills = {}
            for name, how in self.impute.items():
                col = pa.chunked_array([t.column(name) for t in self._buffer], type=schema.field(name).type)
                value = impute_statistic(col, how, schema.field(name).type)
                report[name] = Imputation(strategy=how, value=value,
                                          count=col.null_count if value is not None else 0)
                if value is None:
                    log.warning("column %s: no value to compute the %s from; it stays null", name, how)
                elif col.null_count:
                    fills[name] = pa.scalar(value, schema.field(name).type)
            self._flush_buffer(fills)
        self._close_writer()
        if self.impute and self.spilled:
            report = _impute_parts(self.folder, self.parts, self.impute, schema)
        return report  # a run reaches here with accepted rows only (the accepted-share gate)


def _impute_parts(folder: Path, parts: list[PartFile], columns: dict[str, str],
                  schema: pa.Schema) -> dict[str, Imputation]:
    """Second pass: statistics over all staged parts (one column at a time), then nulls filled part by
    part, row group by row group (parts without nulls in those columns are left as they are)."""
    files = [folder / p.name for p in parts]
    fills: dict[str, pa.Scalar] = {}
    report: dict[str, Imputation] = {}
    for name, how in columns.items():
        typ = schema.field(name).type
        col = pq.read_table(files, columns=[name]).column(name)
        value = impute_statistic(col, how, typ)
        report[name] = Imputation(strategy=how, value=value, count=0)
        if value is None:
            log.warning("column %s: no value to compute the %s from; it stays null", name, how)
        elif col.null_count:
            fills[name] = pa.scalar(value, typ)
        del col
    for part in parts:
        path = folder / part.name
        pf = pq.ParquetFile(path)
        need = [c for c in fills if c in pf.schema_arrow.names]
        if not need:
            continue
        tmp = path.with_name("." + path.name + ".tmp")
        with pq.ParquetWriter(tmp, pf.schema_arrow) as w:
            for rg in range(pf.num_row_groups):
                t = pf.read_row_group(rg)
                for c in need:
                    i = t.schema.get_field_index(c)
                    if t.column(i).null_count:
                        report[c].count += t.column(i).null_count
                        t = t.set_column(i, c, pc.fill_null(t.column(i), fills[c]))
                w.write_table(t)
        os.replace(tmp, path)
    return report


def _warnings(counts: Counter[str]) -> list[str]:
    share = counts["duplicates"] / counts["read"] if counts["read"] else 0.0
    if share <= DUPLICATE_WARNING_SHARE:
        return []
    return [f"{counts['duplicates']:,} of {counts['read']:,} rows ({share:.1%}) were dropped as duplicates of "
            "an earlier row's entity key (+ event timestamp): is the key unique? Use another key, a list of "
            "columns, or entity_key: {generated: row}"]


def _accepted_gate(spec: DatasetSpec, lake: Lake, staging: Path, run_id: str, date: str, counts: Counter[str],
                   tally: ReasonTally, threshold: float) -> None:
    """Fail the run (nothing published in ``raw/``) when too few rows were accepted; keep its quarantine
    under ``failed/`` for inspection."""
    considered = counts["read"] - counts["duplicates"]
    share = counts["accepted"] / considered if considered else 1.0
    if counts["accepted"] > 0 and share >= threshold:
        return
    top = tally.top()
    quarantine = lake.keep_failed_run(RunManifest(
        dataset=spec.name, run_id=run_id, ingest_date=date, status="failed", counts=RunCounts(**counts),
        accepted_fraction=share, min_accepted_fraction=threshold, quarantine_top=top,
        skiff_version=__version__), staging / QUARANTINE)
    reasons = "; ".join(
        f"{t['column'] or 'record'} {t['reason']} ×{t['count']:,}"
        + (f" (e.g. {t['example']!r})" if t["example"] is not None else "") for t in top)
    raise GateFailed(
        f"{spec.name}: {counts['accepted']:,} of {considered:,} rows accepted ({share:.1%}, minimum "
        f"{threshold:.1%}); nothing was committed. Top quarantine reasons: {reasons}. The quarantined rows are "
        f"in {quarantine}; fix the spec (types, sentinels, allowed values) and ingest "
        "again", dataset=spec.name, run_id=run_id, counts=dict(counts), accepted_fraction=share,
        min_accepted_fraction=threshold, reasons=[{k: v for k, v in t.items() if k != "example"} for t in top],
        quarantine=quarantine)


@dataclass
class _Plan:
    """What a run reads and by which rules, settled before any row is read."""

    spec: DatasetSpec
    lake: Lake
    readers: list[SourceReader]
    cleanser: Cleanser
    date: str
    threshold: float
    spec_hash: str
    force: bool
    rows_per_part: int
    impute_buffer_bytes: int
    progress: Callable[[int], None] | None
    started: float  # time.monotonic() at the start
    started_at: dt.datetime
    cleaned: list[str] = field(default_factory=list)  # abandoned staging folders removed

    def fingerprint(self) -> str:
        return run_fingerprint(self.spec_hash, self.readers)

    def result(self, status: str, ref: RunRef | None, manifest: RunManifest | None, counts: dict[str, int],
               reason: str | None = None) -> IngestResult:
        """The result naming run ``ref`` (None: no run was written or matched)."""
        return IngestResult(status=status, dataset=self.spec.name, run_id=ref.run_id if ref else "",
                            ingest_date=ref.date if ref else self.date,
                            partition_uri=self.lake.store.uri(*ref.parts) if ref else "", manifest=manifest,
                            counts=counts, duration_s=time.monotonic() - self.started, reason=reason,
                            cleaned_staging=self.cleaned)

    def unchanged(self, ref: RunRef, reason: str) -> IngestResult:
        found = self.lake.manifest(ref)
        return self.result("unchanged", ref, found, found.counts.model_dump() if found.counts else {}, reason)


@dataclass
class _Read:
    """What reading and cleansing every source of a run gave."""

    counts: Counter[str] = field(default_factory=lambda: Counter(read=0, accepted=0, quarantined=0, duplicates=0))
    reasons: Counter[str] = field(default_factory=Counter)
    tally: ReasonTally = field(default_factory=ReasonTally)
    per_source: list[dict[str, int]] = field(default_factory=list)


def ingest(
    spec: DatasetSpec,
    lake: Lake,
    *,
    sources: Sequence[SourceSpec] | None = None,
    run_id: str | None = None,
    ingest_date: str | None = None,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
    http_transport: httpx.BaseTransport | None = None,
    sql_engine: Engine | None = None,
    block_bytes: int | None = None,
    rows_per_part: int = ROWS_PER_PART,
    impute_buffer_bytes: int = IMPUTE_BUFFER_BYTES,
    min_accepted_fraction: float | None = None,
) -> IngestResult:
    """Ingest a dataset's sources (or ``sources``, overriding the spec's) into the lake.

    The input fingerprint combines the spec's rules with, per source: files' sizes and content hashes
    (SHA-256; names and mtimes are recorded but do not count), a SQL source's watermark range (or a
    hash of the rows without a watermark), and a hash of a REST source's pages. Files are fingerprinted
    before reading, so an unchanged file costs one hash pass; other sources after reading. ``force``
    ingests even when a committed run has the same fingerprint.

    ``progress`` is called with the number of rows of each batch read. ``min_accepted_fraction``
    overrides the spec's (see the module docstring: a run below it raises :class:`GateFailed`). Raises
    :class:`SkiffError` subclasses for bad input (nothing written) and :class:`InvariantError` on a
    count mismatch.
    """
    started, started_at = time.monotonic(), dt.datetime.now(dt.UTC)
    srcs = _batch_sources(spec, sources)
    if run_id is not None and not _RUN_ID.match(run_id):
        raise UsageError(f"run id {run_id!r}: use letters, digits, '_', '-' and '.' only")
    date = _ingest_date(ingest_date, started_at)
    threshold = spec.min_accepted_fraction if min_accepted_fraction is None else min_accepted_fraction
    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"min_accepted_fraction {threshold} must be between 0 and 1")
    cleanser = Cleanser(spec)
    readers = [open_reader(s, http_transport=http_transport, sql_engine=sql_engine, block_bytes=block_bytes)
               for s in srcs]
    plan = _Plan(spec, lake, readers, cleanser, date, threshold, spec_fingerprint(spec), force, rows_per_part,
                 impute_buffer_bytes, progress, started, started_at)
    _prepare(plan)
    if not force and all(r.fingerprint_before_read for r in readers):
        ref = lake.find_run(spec.name, plan.fingerprint())
        if ref is not None:
            log.info("%s: same input as run %s of %s; nothing to do", spec.name, ref.run_id, ref.date)
            return plan.unchanged(ref, f"same input and spec as run {ref.run_id} ({ref.date})")
    run_id = run_id or new_run_id()
    read = _Read()
    try:
        manifest = _write_run(plan, run_id, read)
    except _NothingNew as nothing:
        if nothing.ref is not None:
            return plan.unchanged(nothing.ref, nothing.reason)
        return plan.result("unchanged", None, None, dict(read.counts), nothing.reason)
    except SkiffError:
        raise
    except OSError as e:  # the readers turn their own I/O errors into SourceError: this is the lake
        raise StorageError(f"{spec.name}: writing run {run_id} to {lake.store.uri('raw')} failed: {e}") from e
    _commit_source_states(plan, run_id)
    for w in manifest.warnings:
        log.warning("%s: %s", spec.name, w)
    c = read.counts
    log.info("%s: run %s: read %d, accepted %d, quarantined %d, duplicates %d", spec.name, run_id,
             c["read"], c["accepted"], c["quarantined"], c["duplicates"])
    return plan.result("ingested", RunRef(spec.name, plan.date, run_id), manifest, dict(c))


def _batch_sources(spec: DatasetSpec, sources: Sequence[SourceSpec] | None) -> list[SourceSpec]:
    """The sources a run reads: ``sources``, else the spec's files, SQL and REST sources."""
    if sources is None:  # a spec may also name MQTT topics, which batch ingestion does not read
        srcs: list[SourceSpec] = [s for s in spec.sources if not isinstance(s, MqttSource)]
        if len(srcs) < len(spec.sources):
            log.info("%s: MQTT sources in the spec are read by `skiff stream`, not batch ingestion", spec.name)
    else:
        srcs = list(sources)
    if not srcs:
        raise SpecError(f"dataset {spec.name!r} has no batch sources (files, SQL or REST): add some to its "
                        "spec or name them on the command line")
    return srcs


def _ingest_date(ingest_date: str | None, started_at: dt.datetime) -> str:
    if ingest_date is None:
        return started_at.date().isoformat()
    try:
        return dt.date.fromisoformat(ingest_date).isoformat()
    except ValueError as e:
        raise UsageError(f"ingest date {ingest_date!r} is not YYYY-MM-DD") from e


def _prepare(plan: _Plan) -> None:
    """Check what the sources show up front, resume stateful ones, and clear killed runs' staging."""
    for r in plan.readers:  # fail before reading anything when a header already shows a missing column
        r.precheck(plan.cleanser.check_columns)
    plan.cleanser.extra_columns.clear()  # the batches decide the order of kept unknown columns
    lake, name = plan.lake, plan.spec.name
    stateful = [r for r in plan.readers if r.state_key is not None]
    earlier = [s for ref in lake.all_runs(name) for s in lake.manifest(ref).sources] if stateful else []
    for r in stateful:
        key = r.state_key
        if key is not None:
            r.resume(lake.source_state(name, key), earlier)
    # a writer killed mid-run (kill -9, OOM) left its staging folder: remove it now, and say so
    plan.cleaned = lake.clean_staging(name)
    if plan.cleaned:
        log.warning("%s: removed %d abandoned staging folder(s) of killed runs: %s", name, len(plan.cleaned),
                    ", ".join(plan.cleaned))


def _write_run(plan: _Plan, run_id: str, read: _Read) -> RunManifest:
    """Read, cleanse and stage the run, check it, and publish it with its manifest (whole or not at all)."""
    spec = plan.spec
    with plan.lake.publish_run(spec.name, run_id, plan.date) as staging:
        parts = _PartWriter(staging.folder, plan.rows_per_part, plan.cleanser.stat_imputed,
                            plan.impute_buffer_bytes)
        _read_sources(plan, read, parts, staging.folder / QUARANTINE)
        fp = plan.fingerprint()
        if read.counts["read"] == 0:
            raise _NothingNew(None, "the sources returned no new rows")
        if not plan.force:
            same = plan.lake.find_run(spec.name, fp)
            if same is not None:
                raise _NothingNew(same, f"same input and spec as run {same.run_id} ({same.date})")
        _accepted_gate(spec, plan.lake, staging.folder, run_id, plan.date, read.counts, read.tally, plan.threshold)
        imputed = _finish_parts(plan.cleanser, parts)
        _reconcile(spec.name, staging.folder, parts, read.counts)
        staging.manifest = _run_manifest(plan, run_id, fp, read, imputed, parts)
    return staging.manifest


def _read_sources(plan: _Plan, read: _Read, parts: _PartWriter, quarantine: Path) -> None:
    """Every batch of every source through the cleanser: accepted rows to the parts, the rest to the
    quarantine file; counts per source and in all."""
    qwriter = pq.ParquetWriter(quarantine, plan.cleanser.quarantine_schema())
    try:
        for reader in plan.readers:
            src_counts = Counter(read=0, accepted=0, quarantined=0, duplicates=0)
            for batch in reader.batches():
                res = plan.cleanser.process(batch)
                parts.write(res.accepted)
                if res.quarantined:
                    qwriter.write_table(res.quarantine)
                src_counts.update(read=res.read, accepted=res.accepted.num_rows, quarantined=res.quarantined,
                                  duplicates=res.duplicates)
                read.reasons.update(res.reasons)
                read.tally.add(res.quarantine)
                if plan.progress is not None:
                    plan.progress(res.read)
            read.per_source.append(dict(src_counts))
            read.counts.update(src_counts)
    finally:
        qwriter.close()


def _finish_parts(cleanser: Cleanser, parts: _PartWriter) -> dict[str, Imputation]:
    """Impute with the run's statistics and close the parts; report every imputed column."""
    imputed = parts.finish(cleanser.output_schema())
    for r in cleanser.rules:  # constant imputation happened per batch; report it too
        if r.impute_value is not None:
            imputed[r.name] = Imputation(strategy="constant", value=r.impute_value.as_py(),
                                         count=cleanser.imputed_constant[r.name])
    return imputed


def _reconcile(dataset: str, folder: Path, parts: _PartWriter, counts: Counter[str]) -> None:
    """Rows read = written + quarantined + duplicates, counted and in the staged files (else a bug)."""
    written = sum(pq.ParquetFile(folder / p.name).metadata.num_rows for p in parts.parts)
    quarantined = pq.ParquetFile(folder / QUARANTINE).metadata.num_rows
    if not (counts["read"] == counts["accepted"] + counts["quarantined"] + counts["duplicates"]
            and written == counts["accepted"] and quarantined == counts["quarantined"]):
        raise InvariantError(
            f"{dataset}: rows read {counts['read']} != written {written} (counted "
            f"{counts['accepted']}) + quarantined {quarantined} (counted {counts['quarantined']}) "
            f"+ duplicates {counts['duplicates']}"
        )


def _run_manifest(plan: _Plan, run_id: str, fp: str, read: _Read, imputed: dict[str, Imputation],
                  parts: _PartWriter) -> RunManifest:
    sources = [{**r.describe(), "counts": c} for r, c in zip(plan.readers, read.per_source, strict=True)]
    file_schema = pq.read_schema(parts.folder / parts.parts[0].name)
    return RunManifest(
        dataset=plan.spec.name,
        run_id=run_id,
        ingest_date=plan.date,
        fingerprint=fp,
        spec_hash=plan.spec_hash,
        sources=sources,
        counts=RunCounts(**read.counts),
        quarantine_reasons=dict(sorted(read.reasons.items())),
        quarantine_top=[{k: v for k, v in t.items() if k != "example"} for t in read.tally.top()],
        warnings=_warnings(read.counts),
        imputed=imputed,
        schema={f.name: str(f.type) for f in file_schema},
        files=[p.model_copy() for p in parts.parts],
        quarantine_file=QUARANTINE,
        started_at=plan.started_at.isoformat(),
        skiff_version=__version__,
        cleaned_staging=plan.cleaned,
    )


def _commit_source_states(plan: _Plan, run_id: str) -> None:
    """After the publish: record what stateful sources took (SQL watermarks)."""
    for r in plan.readers:
        state = r.commit_state()
        if state is not None and r.state_key is not None:
            plan.lake.save_source_state(plan.spec.name, r.state_key,
                                        {"dataset": plan.spec.name, **state, "run_id": run_id,
                                         "ingest_date": plan.date})
