"""What a batch source gives ingestion: :class:`SourceBatch` (rows read) and the :class:`SourceReader`
protocol every reader (files, SQL, REST) implements.

A reader turns one source spec into batches of raw rows; the :class:`~skiff.cleansing.Cleanser` types
and checks them. Ingestion talks to readers only through the protocol, so a new kind of source is one
new class, not another branch in the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

__all__ = ["SourceBatch"]


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
        return self.table.num_rows + len(self.malformed)
