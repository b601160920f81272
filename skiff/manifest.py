"""The run manifest: what one lake run holds and how it was made (``_manifest.json``).

One model for every writer (batch ingestion, the stream consumer, a failed run kept under
``failed/``); the lake writes it when it publishes the run (:meth:`skiff.lake.Lake.publish_run`,
:meth:`skiff.lake.Lake.keep_failed_run`) and readers get it from :meth:`skiff.lake.Lake.manifest`.

The JSON stays readable by older and newer skiff versions: every field but the run's identity is
optional, unknown fields are ignored on reading, and fields without a value are left out on writing
(so a manifest of one writer holds only what that writer knows).

A run's ``sources`` are the entries its sources describe (:meth:`skiff.sources.SourceReader.describe`):
one :data:`SourceEntry` per source, typed by kind below. The manifest model keeps them as plain mappings
on reading, so a manifest with a kind or field this version does not know still reads.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

__all__ = [
    "RunManifest",
    "RunCounts",
    "PartFile",
    "Imputation",
    "SourceEntry",
    "FileSourceEntry",
    "FileRecord",
    "SqlSourceEntry",
    "SqlWatermarkRange",
    "RestSourceEntry",
    "MqttSourceEntry",
]


# -- the source entries of a manifest, by kind -----------------------------------------------------------


class _Counted(TypedDict, total=False):
    #: the rows of this source in the run (batch ingestion adds them: read, accepted, quarantined, duplicates)
    counts: dict[str, int]


class _FileRecordNotes(TypedDict, total=False):
    notes: list[str]  # what reading changed (blank columns dropped or named)


class FileRecord(_FileRecordNotes):
    """One file of a file source as read (its size and hash are what the fingerprint counts)."""

    uri: str
    size: int
    mtime: float | None
    sha256: str | None
    format: str
    compression: str | None
    delimiter: str | None
    rows: int


class FileSourceEntry(_Counted):
    type: Literal["file"]
    path: str  # the source as the spec names it (a signed URL's key masked)
    files: list[FileRecord]
    rows: int


class SqlWatermarkRange(TypedDict):
    """The watermark values a run read above (``after``, exclusive) and up to (``to``), encoded."""

    column: str
    after: dict[str, Any] | None
    to: dict[str, Any] | None


class _SqlOptional(_Counted, total=False):
    url_env: str  # the environment variable the URL came from
    table: str | None
    query: str | None
    watermark: SqlWatermarkRange  # incremental sources
    sha256: str  # sources without a watermark: a hash of the rows read


class SqlSourceEntry(_SqlOptional):
    type: Literal["sql"]
    url: str  # credentials masked
    rows: int
    key: str  # names the source's watermark state


class _RestOptional(_Counted, total=False):
    truncated_at_max_pages: bool


class RestSourceEntry(_RestOptional):
    type: Literal["rest"]
    url: str  # a key in the query redacted
    pages: int
    rows: int
    sha256: str  # a hash of the pages


class MqttSourceEntry(_Counted):
    """The messages of one stream run (:class:`components.stream.segment.StreamSegment`)."""

    type: Literal["mqtt"]
    broker: str
    topic: str  # the subscription's topic filter
    qos: int
    client_id: str
    messages: list[int]  # the first and last message number of this consumer process
    topics: int  # how many topics the messages came on
    sha256: str  # a hash of the payloads, in arrival order


#: one source of a run as its manifest records it
SourceEntry = FileSourceEntry | SqlSourceEntry | RestSourceEntry | MqttSourceEntry


class _Record(BaseModel):
    """A manifest record: unknown fields ignored (other versions), fields without a value not written."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    @model_serializer(mode="wrap")
    def _omit_unset_values(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class RunCounts(_Record):
    """Rows of a run; they reconcile: read = accepted + quarantined + duplicates."""

    read: int = 0
    accepted: int = 0
    quarantined: int = 0
    #: rows dropped as repeats of an earlier row's entity key (+ event timestamp)
    duplicates: int = 0
    #: MQTT messages the rows came in (stream runs only)
    messages: int | None = None


class PartFile(_Record):
    """One accepted-row Parquet file of the run."""

    name: str
    rows: int
    #: SHA-256 of the file's bytes (the lake computes it when it publishes the run)
    sha256: str | None = None


class Imputation(BaseModel):
    """How a column's missing values were filled (``value`` is None when there was nothing to compute it
    from: the column then stays null)."""

    model_config = ConfigDict(extra="ignore")

    strategy: str
    value: Any = None
    count: int = 0


class RunManifest(_Record):
    """The manifest of one run, committed (``raw/``) or failed (``failed/``)."""

    dataset: str
    run_id: str
    ingest_date: str
    #: ``failed``: the run was refused (too few rows accepted) and kept under ``failed/`` for inspection
    status: Literal["committed", "failed"] = "committed"
    #: hash of the spec's rules and each source's content: a run with an equal one is the same input
    fingerprint: str | None = None
    #: :func:`skiff.spec.spec_fingerprint` of the spec the run was written with (see Lake.select_runs)
    spec_hash: str | None = None
    #: one entry per source, as its reader describes it (credentials redacted): a :data:`SourceEntry`
    #: when this version wrote it; kept as plain mappings so other versions' entries read
    sources: list[dict[str, Any]] = Field(default_factory=list)
    counts: RunCounts | None = None
    quarantine_reasons: dict[str, int] = Field(default_factory=dict)
    #: the commonest quarantine reasons (column, reason, count; a failed run's also an example value)
    quarantine_top: list[dict[str, Any]] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    imputed: dict[str, Imputation] = Field(default_factory=dict)
    #: column name -> Arrow type of the accepted rows as written
    columns: dict[str, str] = Field(default_factory=dict, alias="schema")
    files: list[PartFile] = Field(default_factory=list)
    quarantine_file: str | None = None
    #: hash of the part files' hashes (computed by the lake when it publishes the run)
    content_hash: str | None = None
    started_at: str | None = None  # ISO 8601, UTC
    #: when the run's files were complete (stamped by the lake when it publishes the run)
    finished_at: str | None = None
    skiff_version: str | None = None
    #: abandoned staging folders of killed runs that this run removed
    cleaned_staging: list[str] = Field(default_factory=list)
    #: failed runs: the share of rows accepted and the minimum it fell below
    accepted_fraction: float | None = None
    min_accepted_fraction: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON-ready data (field names as on disk)."""
        return self.model_dump(by_alias=True)

    def to_json(self) -> str:
        """The text of ``_manifest.json``."""
        return json.dumps(self.to_dict(), indent=2, default=str)
