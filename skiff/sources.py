"""What a source gives a lake run: :class:`SourceBatch` (rows read) and the :class:`SourceReader`
protocol every source implements — the batch readers (files, SQL, REST) and each segment of an MQTT
stream (``components.stream.segment.StreamSegment``) alike.

A reader turns one source into batches of raw rows; the :class:`~skiff.cleansing.Cleanser` types and
checks them. Batch ingestion and the stream consumer talk to sources only through the protocol, and
both derive a run's fingerprint with :func:`run_fingerprint` and its manifest's source entries from
:meth:`SourceReader.describe`, so a new kind of source is one new class, not another branch in a run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import pyarrow as pa

from skiff.manifest import SourceEntry
from skiff.spec import json_sha256

__all__ = ["SourceBatch", "SourceReader", "StatelessSource", "ColumnCheck", "run_fingerprint"]

#: ``check(columns, where)``: raises when ``columns`` (seen at ``where``) break the spec
ColumnCheck = Callable[[list[str], str], None]


@dataclass
class SourceBatch:
    """Rows read from one source: raw columns (strings for text formats, typed for Parquet/SQL)."""

    table: pa.Table
    source: str
    row_offset: int = 0
    page: int | None = None
    #: rows the parser could not split into fields: (problem, raw text); quarantined as malformed
    malformed: list[tuple[str, str]] = field(default_factory=list)
    #: what makes generated row ids of this batch unique beyond ``source`` and ``page`` (e.g. a SQL
    #: watermark range, whose offsets start again at 0 on every incremental run); None: source and page
    key_scope: str | None = None

    @property
    def rows_read(self) -> int:
        return int(self.table.num_rows) + len(self.malformed)


class SourceReader(Protocol):
    """One source as a lake run uses it.

    The run calls, in order: :meth:`precheck`; :meth:`resume` (sources with a :attr:`state_key`);
    :meth:`batches`; :meth:`fingerprint` and :meth:`describe` for the manifest; and, once the run is
    published, :meth:`commit_state` (never before: a run that fails to publish commits nothing, so its
    input is read again). Errors are :class:`~skiff.errors.SkiffError` subclasses naming :attr:`label`.
    """

    #: the source type as manifests record it: ``file``, ``sql``, ``rest``, ``mqtt``
    kind: ClassVar[str]
    #: True when :meth:`fingerprint` is known before :meth:`batches` runs (files: content hashes), so a
    #: run on an input ingested before is skipped without reading it
    fingerprint_before_read: ClassVar[bool]

    @property
    def label(self) -> str:
        """How the source is named in manifests, logs and errors (credentials redacted)."""
        ...

    @property
    def state_key(self) -> str | None:
        """The name of the state this source keeps between runs (a SQL watermark); None: none."""
        ...

    def precheck(self, check_columns: ColumnCheck) -> None:
        """Check what the source shows before reading (a CSV header, a Parquet schema)."""
        ...

    def resume(self, saved: Mapping[str, Any] | None, earlier: Iterable[Mapping[str, Any]]) -> None:
        """Continue after the committed runs: ``saved`` is the state last recorded under
        :attr:`state_key`, ``earlier`` the source entries of committed manifests (which cover a crash
        between publishing a run and recording its state)."""
        ...

    def batches(self) -> Iterator[SourceBatch]:
        """The rows, batch by batch."""
        ...

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the input read (its content, never its name or time)."""
        ...

    def describe(self) -> SourceEntry:
        """The source's entry in the run manifest (redacted)."""
        ...

    def commit_state(self) -> dict[str, Any] | None:
        """Commit what the published run took: the source's own side of the commit (a stream segment
        acknowledges its messages to the broker), and the state to record under :attr:`state_key` (a
        SQL watermark); None: nothing to record."""
        ...


def run_fingerprint(spec_hash: str, readers: Sequence[SourceReader]) -> str:
    """The fingerprint of a run: the spec's rules (:func:`skiff.spec.spec_fingerprint`) and what each
    source read (:meth:`SourceReader.fingerprint`); a committed run with an equal one is the same input."""
    return json_sha256({"spec": spec_hash, "sources": [r.fingerprint() for r in readers]})


class StatelessSource:
    """The :class:`SourceReader` defaults of a source that keeps no state between runs and shows
    nothing to check before reading (a reader overrides what applies to it)."""

    state_key: str | None = None

    def precheck(self, check_columns: ColumnCheck) -> None:
        return None

    def resume(self, saved: Mapping[str, Any] | None, earlier: Iterable[Mapping[str, Any]]) -> None:
        return None

    def commit_state(self) -> dict[str, Any] | None:
        return None
