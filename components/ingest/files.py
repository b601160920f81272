"""File sources: paths, globs and folders (local or any fsspec URI), with the format read from the content.

Detection looks at the bytes, not the name: gzip and bzip2 by their magic numbers (then the content
inside), Parquet by ``PAR1``, JSON by the first non-space character (``[`` a document, ``{`` a JSON
Lines file when its first line is a whole object, else a document), and delimited text by
:class:`csv.Sniffer` over the first 64 KiB (``,`` ``;`` tab ``|``). A file whose extension says
otherwise is read as what it is (with a warning); an explicit ``format`` in the spec that the content
contradicts is an error.

A file must not change while it is read. Each file's state (size, modification and change times,
inode; on object stores size, time and ETag) is taken when it is listed and compared again after its
content hash is computed and after its rows are read: any difference fails the run with a
:class:`SourceError` before anything is committed, so the manifest's size and hash are those of the
bytes the rows came from. (Writers should write to a temporary name and rename when done.)

Everything is streamed in batches (``pyarrow.csv.open_csv``, ``ParquetFile.iter_batches``, JSON Lines in
blocks of lines), so memory stays bounded whatever the file size. JSON documents (one array or object)
are the exception: they are parsed whole; use JSON Lines for big data.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import itertools
import json
import logging
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, ClassVar

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from skiff.errors import InputError, SourceError
from skiff.manifest import FileRecord, FileSourceEntry
from skiff.redact import redact_text, redact_url
from skiff.sources import ColumnCheck, SourceBatch, StatelessSource
from skiff.spec import FileSource

__all__ = ["FileReader", "FileEntry", "detect_format", "records_to_table", "find_records"]

log = logging.getLogger("skiff.ingest")

SAMPLE_BYTES = 64 * 1024
CSV_BLOCK_BYTES = 16 * 1024 * 1024  # rows handed to the cleanser at a time (as Arrow data)
CSV_PARSE_BLOCK_BYTES = 2 * 1024 * 1024  # what the CSV parser reads at a time
JSONL_BLOCK_BYTES = 8 * 1024 * 1024
PARQUET_BATCH_ROWS = 128 * 1024
_EXT_FORMAT = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".psv": "csv", ".json": "json",
               ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


@dataclass
class FileEntry:
    """One file of a file source, with what detection found."""

    uri: str
    path: str  # path on the file system
    size: int
    mtime: float | None
    format: str = ""
    compression: str | None = None
    delimiter: str | None = None
    columns: list[str] = field(default_factory=list)
    sha256: str | None = None
    rows: int = 0
    state: tuple[Any, ...] = ()  # what says the file is unchanged (see FileReader._state)
    header: list[str] = field(default_factory=list)  # CSV: every column as read, blank names made positional
    notes: list[str] = field(default_factory=list)  # what reading changed (blank columns dropped or named)

    def describe(self) -> FileRecord:
        record = FileRecord(uri=self.uri, size=self.size, mtime=self.mtime, sha256=self.sha256, format=self.format,
                            compression=self.compression, delimiter=self.delimiter, rows=self.rows)
        if self.notes:
            record["notes"] = self.notes
        return record


def _decompress_sample(raw: bytes, compression: str | None) -> bytes:
    if compression == "gzip":
        return zlib.decompressobj(wbits=31).decompress(raw, SAMPLE_BYTES * 4)
    if compression == "bz2":
        return bz2.BZ2Decompressor().decompress(raw, SAMPLE_BYTES * 4)
    return raw


def _complete_stream(raw: bytes, compression: str) -> bool:
    """Whether ``raw`` holds a whole compressed stream (one of empty content is an empty file, not a
    corrupt one)."""
    d = zlib.decompressobj(wbits=31) if compression == "gzip" else bz2.BZ2Decompressor()
    try:
        d.decompress(raw)
    except (zlib.error, OSError, EOFError):
        return False
    return d.eof


def _compression_of(raw: bytes) -> str | None:
    if raw[:2] == b"\x1f\x8b":
        return "gzip"
    if raw[:3] == b"BZh":
        return "bz2"
    return None


def detect_format(sample: bytes, label: str, encoding: str = "utf-8") -> tuple[str, str | None]:
    """The format of decompressed leading bytes: (csv|json|jsonl|parquet, delimiter for csv)."""
    if sample[:4] == b"PAR1":
        return "parquet", None
    if sample[:4] == b"PK\x03\x04":
        raise InputError(f"{label}: unknown format: a ZIP archive (an Excel workbook?); export it as CSV or "
                         "Parquet", source=label)
    if sample[:2] in (b"\x1f\x8b",) or sample[:3] == b"BZh":
        raise InputError(f"{label}: unknown format: compressed twice", source=label)
    text: str | None
    try:
        text = sample.decode(encoding)
    except UnicodeDecodeError as e:
        # the sample may end inside a multi-byte character; judge the bytes before it
        try:
            text = sample[: e.start].decode(encoding) if e.start > len(sample) - 4 else None
        except UnicodeDecodeError:
            text = None
        if text is None:
            hint = _encoding_hint(sample, encoding)
            if hint:
                raise InputError(f"{label}: not {encoding} text (byte {sample[e.start]:#04x} at offset {e.start}); "
                                 f"it reads as {hint}: set `encoding: {hint.split()[0]}` on this source in the "
                                 "spec", source=label) from e
            raise InputError(f"{label}: unknown format: binary data, not {encoding} text, Parquet or "
                             "gzip/bzip2", source=label) from e
    assert text is not None  # decoded, or an InputError was raised above
    if "\x00" in text:
        raise InputError(f"{label}: unknown format: binary data (NUL bytes)", source=label)
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise InputError(f"{label}: empty file", source=label)
    if stripped[0] == "[":
        return "json", None
    if stripped[0] == "{":
        first_line = stripped.split("\n", 1)[0].strip()
        try:
            obj = json.loads(first_line)
        except json.JSONDecodeError:
            return "json", None  # an object spread over several lines
        rest = stripped[len(first_line):].strip()
        if isinstance(obj, dict) and (rest.startswith("{") or not rest):
            # one whole object per line (or a one-line document, read the same way below)
            return ("jsonl" if rest else "json"), None
        return "json", None
    return "csv", _sniff_delimiter(text, label)


def _encoding_hint(sample: bytes, encoding: str) -> str | None:
    """A legacy 8-bit encoding the sample is plainly text in (cp1252 first: it is what Excel exports)."""
    for cand, name in (("cp1252", "cp1252 (Windows Western European)"), ("latin-1", "latin-1 (ISO-8859-1)")):
        if cand == encoding.lower():
            continue
        try:
            text = sample.decode(cand)
        except UnicodeDecodeError:
            continue
        printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
        if text and "\x00" not in text and printable / len(text) > 0.98:
            return name
    return None


def _sniff_delimiter(text: str, label: str) -> str:
    """The delimiter that splits the sample's lines into as many fields as the header (> 1), mostly."""
    lines = text.lstrip("\ufeff").splitlines()
    if len(text) >= SAMPLE_BYTES - 16 and len(lines) > 1:
        lines = lines[:-1]  # the sample may cut the last line
    lines = [ln for ln in lines if ln.strip()][:500]
    try:
        sniffed = csv.Sniffer().sniff("\n".join(lines[:50]), delimiters=",;\t|").delimiter
    except csv.Error:
        sniffed = None
    best: tuple[float, int, bool, str] | None = None
    for cand in ",;\t|":
        rows = list(csv.reader(lines, delimiter=cand))
        width = len(rows[0])
        if width < 2:
            continue
        body = rows[1:]
        share = sum(len(r) == width for r in body) / len(body) if body else 1.0
        score = (share, width, cand == sniffed, cand)
        if best is None or score > best:
            best = score
    if best is None or best[0] < 0.5:
        raise InputError(
            f"{label}: unknown format: not Parquet, JSON or delimited text (no delimiter among , ; tab | "
            "splits the lines consistently; set format and delimiter in the spec if it is CSV)",
            source=label,
        )
    return best[3]


def find_records(doc: Any, records_path: str | None, label: str) -> list[dict[str, Any]]:
    """The list of records in a JSON document or API page (dotted ``records_path``, or the only list)."""
    node = doc
    if records_path:
        for part in records_path.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise InputError(f"{label}: records_path {records_path!r} not found (at {part!r})", source=label)
    elif isinstance(node, dict):
        lists = [v for v in node.values() if isinstance(v, list) and (not v or isinstance(v[0], dict))]
        node = lists[0] if len(lists) == 1 else [node]
    if not isinstance(node, list):
        raise InputError(f"{label}: expected a list of records, found {type(node).__name__}", source=label)
    if node and not all(type(r) is dict for r in node):
        bad = next(type(r).__name__ for r in node if type(r) is not dict)
        raise InputError(f"{label}: records must be JSON objects, found a {bad}", source=label)
    return node


def records_to_table(records: list[dict[str, Any]]) -> pa.Table:
    """JSON records as a table of string columns (what text formats give the cleanser).

    Homogeneous columns convert in C (arrow); a column mixing types (a number and "N/A") or holding
    nested objects falls back to JSON text per value.
    """
    if not records:
        return pa.table({})
    df = pd.DataFrame.from_records(records)
    cols = {}
    for name in df.columns:
        values = df[name].to_numpy(dtype=object)
        try:
            arr = pa.array(values, from_pandas=True)
            if pa.types.is_nested(arr.type) or pa.types.is_binary(arr.type):
                raise pa.ArrowTypeError("nested")
            if pa.types.is_null(arr.type):
                arr = pa.nulls(len(values), pa.string())
            elif pa.types.is_boolean(arr.type):
                arr = arr.cast(pa.string())  # "true"/"false"
            elif not pa.types.is_string(arr.type):
                arr = arr.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            arr = pa.array([_json_text(v) for v in values], pa.string())
        cols[str(name)] = arr
    return pa.table(cols)


def _json_text(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, str):
        return v
    return json.dumps(v, default=str)


class FileReader(StatelessSource):
    """Reads a :class:`FileSource`: expands it to files, detects each format, streams batches (a
    :class:`~skiff.sources.SourceReader`)."""

    kind: ClassVar[str] = "file"
    fingerprint_before_read: ClassVar[bool] = True  # the files' content hashes

    def __init__(self, source: FileSource, block_bytes: int = CSV_BLOCK_BYTES) -> None:
        self.source = source
        self.block_bytes = block_bytes
        try:
            self.fs, root = fsspec.core.url_to_fs(source.path)
        except (ImportError, ValueError) as e:
            raise SourceError(f"{redact_url(source.path)}: cannot open: {redact_text(str(e))}",
                              source=redact_url(source.path)) from e
        self.entries = self._expand(root)
        for entry in self.entries:
            self._detect(entry)

    @property
    def label(self) -> str:
        return redact_url(self.source.path)

    # -- discovery ---------------------------------------------------------------------------------------
    def _uri(self, path: str) -> str:
        """How a file is named in manifests, logs and errors (a signed URL's key masked)."""
        if isinstance(self.fs, LocalFileSystem):
            return path
        return redact_url(self.fs.unstrip_protocol(path))

    def _expand(self, root: str) -> list[FileEntry]:
        src = self.label
        try:
            if any(ch in root for ch in "*?["):
                paths = [p for p in self.fs.glob(root)
                         if not p.rsplit("/", 1)[-1].startswith((".", "_")) and self.fs.isfile(p)]
                if not paths:
                    raise InputError(f"{src}: no files match", source=src)
            elif self.fs.isdir(root):
                paths = [p for p in self.fs.find(root)
                         if not any(part.startswith((".", "_")) for part in p[len(root):].split("/") if part)]
                if not paths:
                    raise InputError(f"{src}: folder holds no data files", source=src)
            elif self.fs.isfile(root):
                paths = [root]
            elif isinstance(self.fs, LocalFileSystem) and os.path.exists(root):
                raise InputError(f"{src}: not a regular file (a device, pipe or socket, which may never end): "
                                 "give a file, a folder or a glob", source=src)
            else:
                raise InputError(f"{src}: file not found", source=src)
            entries = []
            for p in sorted(paths):
                info = self.fs.info(p)
                mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
                if hasattr(mtime, "timestamp"):
                    mtime = mtime.timestamp()
                entries.append(FileEntry(uri=self._uri(p), path=p, size=int(info.get("size") or 0),
                                         mtime=float(mtime) if mtime is not None else None,
                                         state=self._state(p, info)))
            return entries
        except InputError:
            raise
        except OSError as e:
            raise SourceError(f"{src}: cannot list: {redact_text(str(e))}", source=src) from e

    def _state(self, path: str, info: dict[str, Any] | None = None) -> tuple[Any, ...]:
        """Size and change markers of a file: equal before and after a read means the same bytes."""
        if isinstance(self.fs, LocalFileSystem):
            st = os.stat(path)
            return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)  # ctime moves even on utime()
        info = info if info is not None else self.fs.info(path)
        when = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
        return (int(info.get("size") or 0), str(when), info.get("ETag") or info.get("etag") or info.get("md5"))

    def _check_unchanged(self, entry: FileEntry, while_: str) -> None:
        try:
            now = self._state(entry.path)
        except FileNotFoundError:
            now = None
        except OSError as e:
            raise SourceError(f"{entry.uri}: cannot check the file after {while_}: {redact_text(str(e))}",
                              source=entry.uri) from e
        if now == entry.state:
            return
        if now is None:
            what = "it was deleted"
        elif now[0] != entry.state[0]:
            what = f"its size went from {entry.state[0]} to {now[0]} bytes"
        else:
            what = "it was rewritten (same size, new modification time or file)"
        raise SourceError(f"{entry.uri}: the file changed while skiff was {while_} ({what}); nothing was "
                          "committed. Re-run once its writer has finished (writers should write to a "
                          "temporary name and rename it when done)", source=entry.uri)

    def _open(self, entry: FileEntry) -> BinaryIO:
        try:
            f: BinaryIO = self.fs.open(entry.path, "rb")
        except OSError as e:
            raise SourceError(f"{entry.uri}: cannot open: {redact_text(str(e))}", source=entry.uri) from e
        return f

    def _detect(self, entry: FileEntry) -> None:
        if entry.size == 0:
            raise InputError(f"{entry.uri}: empty file", source=entry.uri)
        with self._open(entry) as f:
            raw = f.read(SAMPLE_BYTES)
        entry.compression = _compression_of(raw)
        try:
            sample = _decompress_sample(raw, entry.compression)
        except (zlib.error, OSError, EOFError) as e:
            raise InputError(f"{entry.uri}: corrupt {entry.compression} data ({e}); re-export or re-download it",
                             source=entry.uri) from e
        if not sample.strip():
            if entry.compression and not sample and not _complete_stream(raw, entry.compression):
                raise InputError(f"{entry.uri}: corrupt {entry.compression} data: a {entry.compression} header "
                                 "but no content could be decompressed (truncated or damaged file); "
                                 "re-export or re-download it", source=entry.uri)
            raise InputError(f"{entry.uri}: empty file", source=entry.uri)
        fmt, delim = detect_format(sample, entry.uri, self.source.encoding)
        if fmt == "parquet" and entry.compression:
            raise InputError(f"{entry.uri}: {entry.compression}-compressed Parquet is not supported "
                             "(Parquet compresses itself)", source=entry.uri)
        want = self.source.format
        if want != "auto" and want != fmt and not {want, fmt} <= {"json", "jsonl"}:
            raise InputError(f"{entry.uri}: the spec says {want} but the content is {fmt}", source=entry.uri)
        if fmt == "csv" and self.source.delimiter:
            delim = self.source.delimiter
        name = entry.path.rsplit("/", 1)[-1].lower()
        for suffix in (".gz", ".gzip", ".bz2"):
            name = name.removesuffix(suffix)
        ext = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        if ext in _EXT_FORMAT and _EXT_FORMAT[ext] != fmt and not {_EXT_FORMAT[ext], fmt} <= {"json", "jsonl"}:
            log.warning("%s: the name says %s but the content is %s; reading it as %s",
                        entry.uri, _EXT_FORMAT[ext], fmt, fmt)
        entry.format, entry.delimiter = fmt, delim
        if fmt == "csv":
            text = sample.decode(self.source.encoding, errors="replace")
            header = next(csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter=delim or ","), [])
            entry.columns = [h.strip() for h in header]
            blank = [i for i, c in enumerate(entry.columns) if not c]
            if blank:
                self._name_blank_columns(entry, blank)
            dupes = sorted({c for c in entry.columns if entry.columns.count(c) > 1})
            if dupes:
                raise InputError(f"{entry.uri}: duplicate column names {dupes}", source=entry.uri)
        elif fmt == "parquet":
            with self._open(entry) as f:
                try:
                    entry.columns = [c.strip() for c in pq.ParquetFile(f).schema_arrow.names]
                except (pa.ArrowInvalid, OSError) as e:
                    raise InputError(f"{entry.uri}: not a readable Parquet file: {e}", source=entry.uri) from e

    def _name_blank_columns(self, entry: FileEntry, blank: list[int]) -> None:
        """Columns without a header name (``a;b;c;;``, trailing delimiters of European exports): dropped
        with a note when empty in every row, else named by position (``column_5``) with a warning."""
        taken = set(entry.columns)
        names = list(entry.columns)
        for i in blank:
            name, n = f"column_{i + 1}", 1
            while name in taken:
                n += 1
                name = f"column_{i + 1}_{n}"
            names[i] = name
            taken.add(name)
        entry.header = names
        candidates = [names[i] for i in blank]
        filled: set[str] = set()
        read = pa_csv.ReadOptions(block_size=CSV_PARSE_BLOCK_BYTES, encoding=self.source.encoding,
                                  column_names=names, skip_rows=1)
        parse = pa_csv.ParseOptions(delimiter=entry.delimiter, newlines_in_values=True,
                                    invalid_row_handler=lambda row: "skip")
        conv = pa_csv.ConvertOptions(include_columns=candidates, column_types=dict.fromkeys(candidates, pa.string()),
                                     null_values=[""], strings_can_be_null=True)
        try:
            with self._stream(entry) as stream:
                for rb in pa_csv.open_csv(stream, read_options=read, parse_options=parse, convert_options=conv):
                    filled |= {c for c in candidates if rb.column(c).null_count < rb.num_rows}
                    if len(filled) == len(candidates):
                        break
        except (pa.ArrowInvalid, UnicodeDecodeError, OSError):
            filled = set(candidates)  # cannot tell here: keep them; reading reports the real problem
        empty = [c for c in candidates if c not in filled]
        if empty:
            entry.notes.append(f"dropped {len(empty)} column(s) without a header name, empty in every row "
                               f"(positions {', '.join(c.split('_')[1] for c in empty)}; trailing delimiters?)")
            log.info("%s: %s", entry.uri, entry.notes[-1])
        if filled:
            kept = [c for c in candidates if c in filled]
            entry.notes.append(f"named {len(kept)} column(s) without a header name by position: {', '.join(kept)}")
            log.warning("%s: columns without a header name hold values; read as %s (name them in the file's "
                        "header, or refer to them by these names in the spec)", entry.uri, ", ".join(kept))
        entry.columns = [c for c in names if c not in empty]

    def header_columns(self) -> dict[str, list[str]]:
        """Columns known before reading (CSV headers, Parquet schemas), per file URI."""
        return {e.uri: e.columns for e in self.entries if e.columns}

    def precheck(self, check_columns: ColumnCheck) -> None:
        """Each file's header (or Parquet schema), so a missing column fails before anything is read."""
        for uri, columns in self.header_columns().items():
            check_columns(columns, uri)

    # -- fingerprint -------------------------------------------------------------------------------------
    def hash_files(self) -> None:
        for entry in self.entries:
            if entry.sha256 is None:
                h = hashlib.sha256()
                size = 0
                with self._open(entry) as f:
                    while chunk := f.read(8 * 1024 * 1024):
                        h.update(chunk)
                        size += len(chunk)
                self._check_unchanged(entry, "hashing it")
                if size != entry.size:  # e.g. a file system whose listing lags its content
                    raise SourceError(f"{entry.uri}: listed with {entry.size} bytes but {size} were read; "
                                      "nothing was committed: re-run once its writer has finished",
                                      source=entry.uri)
                entry.sha256 = h.hexdigest()

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this input: each file's size and content hash (not its name or mtime)."""
        self.hash_files()
        return {"type": "file", "files": sorted([e.size, e.sha256] for e in self.entries)}

    def describe(self) -> FileSourceEntry:
        return {"type": "file", "path": self.label, "files": [e.describe() for e in self.entries],
                "rows": sum(e.rows for e in self.entries)}

    # -- reading -------------------------------------------------------------------------------------------
    def batches(self) -> Iterator[SourceBatch]:
        for entry in self.entries:
            reader = {"csv": self._csv, "parquet": self._parquet, "jsonl": self._jsonl, "json": self._json}
            got = 0
            for batch in reader[entry.format](entry):
                got += batch.rows_read
                yield batch
            # the rows must come from the bytes that were listed and hashed
            self._check_unchanged(entry, "reading it")
            entry.rows = got
            if got == 0:
                raise InputError(f"{entry.uri}: no rows (header only)" if entry.format == "csv"
                                 else f"{entry.uri}: no records", source=entry.uri)

    def _stream(self, entry: FileEntry) -> pa.NativeFile:
        if isinstance(self.fs, LocalFileSystem):  # arrow's own file reader, no Python in the loop
            return pa.input_stream(entry.path, compression=entry.compression)
        f = pa.PythonFile(self._open(entry), mode="r")
        return pa.CompressedInputStream(f, entry.compression) if entry.compression else f

    def _csv(self, entry: FileEntry) -> Iterator[SourceBatch]:
        malformed: list[tuple[str, str]] = []

        def on_invalid(row: pa_csv.InvalidRow) -> str:
            malformed.append((f"expected {row.expected_columns} fields, got {row.actual_columns}", row.text))
            return "skip"

        # a quoted field spanning lines needs the slower parser mode
        head = entry.columns
        named = {"column_names": entry.header, "skip_rows": 1} if entry.header else {}  # blank names filled
        read = pa_csv.ReadOptions(block_size=min(self.block_bytes, CSV_PARSE_BLOCK_BYTES),
                                  encoding=self.source.encoding, **named)
        parse = pa_csv.ParseOptions(delimiter=entry.delimiter, invalid_row_handler=on_invalid,
                                    newlines_in_values=True)
        conv = pa_csv.ConvertOptions(
            column_types=dict.fromkeys(head, pa.string()),
            null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=True,
            **({"include_columns": head} if entry.header else {}),
        )
        offset = 0
        try:
            with self._stream(entry) as stream:
                reader = pa_csv.open_csv(stream, read_options=read, parse_options=parse, convert_options=conv)
                pending: list[pa.RecordBatch] = []
                size = 0
                # the parser works on small blocks (its memory grows fast with the block size); the
                # cleanser gets batches of about block_bytes (its cost is per call, not per row)
                for rb in itertools.chain(reader, [None]):
                    if rb is not None:
                        pending.append(rb)
                        size += rb.nbytes
                        if size < self.block_bytes:
                            continue
                    if not pending and not malformed:
                        break
                    table = pa.Table.from_batches(pending, schema=reader.schema)
                    table = table.rename_columns([c.lstrip("\ufeff").strip() for c in table.column_names])
                    bad, malformed[:] = list(malformed), []
                    yield SourceBatch(table=table, source=entry.uri, row_offset=offset, malformed=bad)
                    offset += table.num_rows
                    pending, size = [], 0
        except (pa.ArrowInvalid, UnicodeDecodeError) as e:
            raise InputError(f"{entry.uri}: cannot parse as CSV (delimiter {entry.delimiter!r}): {e}",
                             source=entry.uri) from e
        except OSError as e:
            raise SourceError(f"{entry.uri}: read failed: {redact_text(str(e))}", source=entry.uri) from e

    def _parquet(self, entry: FileEntry) -> Iterator[SourceBatch]:
        offset = 0
        try:
            with self._open(entry) as f:
                pf = pq.ParquetFile(f)
                for rb in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
                    table = pa.Table.from_batches([rb])
                    table = table.rename_columns([c.strip() for c in table.column_names])
                    yield SourceBatch(table=table, source=entry.uri, row_offset=offset)
                    offset += table.num_rows
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"{entry.uri}: cannot read Parquet: {e}", source=entry.uri) from e

    def _jsonl(self, entry: FileEntry) -> Iterator[SourceBatch]:
        offset, line_no, rest = 0, 0, b""
        with self._stream(entry) as stream:
            while True:
                block = stream.read(JSONL_BLOCK_BYTES)
                data = rest + block
                if block:
                    cut = data.rfind(b"\n")
                    if cut < 0:
                        rest = data
                        continue
                    data, rest = data[: cut + 1], data[cut + 1:]
                else:
                    rest = b""
                if data:
                    lines = data.split(b"\n")
                    if data.endswith(b"\n"):
                        lines.pop()
                    batch = self._jsonl_block(entry, lines, line_no, offset)
                    line_no += len(lines)
                    offset += batch.table.num_rows
                    yield batch
                if not block:
                    break

    def _jsonl_block(self, entry: FileEntry, lines: list[bytes], first_line: int, offset: int) -> SourceBatch:
        enc = self.source.encoding
        keep = [ln for ln in lines if ln.strip()]
        malformed: list[tuple[str, str]] = []
        try:
            records = json.loads(b"[" + b",".join(keep) + b"]") if enc.lower().replace("-", "") == "utf8" \
                else json.loads("[" + ",".join(ln.decode(enc) for ln in keep) + "]")
            if not all(type(r) is dict for r in records):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError):
            # find the bad lines (this block only); a line holding several values is bad too
            records = []
            for i, ln in enumerate(lines):
                if not ln.strip():
                    continue
                try:
                    rec = json.loads(ln.decode(enc))
                except (ValueError, UnicodeDecodeError) as e:
                    malformed.append((f"line {first_line + i + 1}: not JSON ({e})", ln.decode(enc, "replace")))
                    continue
                if type(rec) is not dict:
                    malformed.append((f"line {first_line + i + 1}: not a JSON object",
                                      ln.decode(enc, "replace")))
                    continue
                records.append(rec)
        return SourceBatch(table=records_to_table(records), source=entry.uri, row_offset=offset, malformed=malformed)

    def _json(self, entry: FileEntry) -> Iterator[SourceBatch]:
        with self._stream(entry) as stream:
            data = stream.read()
        try:
            doc = json.loads(data.decode(self.source.encoding))
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(f"{entry.uri}: not valid JSON: {e}", source=entry.uri) from e
        records = find_records(doc, self.source.records_path, entry.uri)
        step = PARQUET_BATCH_ROWS
        for start in range(0, len(records), step):
            yield SourceBatch(table=records_to_table(records[start:start + step]), source=entry.uri, row_offset=start)
