"""Format detection from content, and every file reader, on real files."""

import bz2
import gzip
import json
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.ingest.files import FileReader, detect_format, records_to_table
from skiff.errors import InputError
from skiff.spec import FileSource

ROWS = [{"id": 1, "x": 1.5, "name": "a"}, {"id": 2, "x": 2.5, "name": "b"}, {"id": 3, "x": None, "name": "c"}]
CSV = "id,x,name\n1,1.5,a\n2,2.5,b\n3,,c\n"


def read_all(path, **kw):
    reader = FileReader(FileSource(path=str(path), **kw))
    batches = list(reader.batches())
    table = pa.concat_tables([b.table for b in batches if b.table.num_rows], promote_options="permissive")
    return reader, table, batches


def write(path, data: bytes | str):
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


@pytest.mark.parametrize(
    ("name", "content", "fmt", "delim"),
    [
        ("a.csv", CSV, "csv", ","),
        ("a.csv", CSV.replace(",", ";"), "csv", ";"),
        ("a.tsv", CSV.replace(",", "\t"), "csv", "\t"),
        ("a.txt", CSV.replace(",", "|"), "csv", "|"),
        ("a.json", json.dumps(ROWS), "json", None),
        ("a.json", json.dumps({"meta": {"n": 3}, "data": ROWS}, indent=2), "json", None),
        ("a.jsonl", "\n".join(json.dumps(r) for r in ROWS) + "\n", "jsonl", None),
    ],
)
def test_text_formats_are_detected_and_read(tmp_path, name, content, fmt, delim):
    reader, table, _ = read_all(write(tmp_path / name, content))
    entry = reader.entries[0]
    assert (entry.format, entry.delimiter) == (fmt, delim)
    assert table.num_rows == 3
    assert table.column("name").to_pylist() == ["a", "b", "c"]
    assert table.column("x").to_pylist()[:2] in (["1.5", "2.5"],)


def test_semicolon_csv_with_decimal_commas_is_not_mistaken_for_comma_separated(tmp_path):
    path = write(tmp_path / "eu.csv", "id;amount;city\n1;1,5;Lyon\n2;2,25;Nice\n3;10,0;Metz\n")
    reader, table, _ = read_all(path)
    assert reader.entries[0].delimiter == ";"
    assert table.column("amount").to_pylist() == ["1,5", "2,25", "10,0"]


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress])
def test_compressed_files_are_detected_by_magic_not_name(tmp_path, compress):
    path = write(tmp_path / "data.csv", compress(CSV.encode()))  # no .gz in the name
    reader, table, _ = read_all(path)
    assert reader.entries[0].compression in ("gzip", "bz2")
    assert reader.entries[0].format == "csv"
    assert table.num_rows == 3


def test_gzipped_jsonl(tmp_path):
    data = "".join(json.dumps(r) + "\n" for r in ROWS)
    reader, table, _ = read_all(write(tmp_path / "a.jsonl.gz", gzip.compress(data.encode())))
    assert (reader.entries[0].format, reader.entries[0].compression) == ("jsonl", "gzip")
    assert table.column("id").to_pylist() == ["1", "2", "3"]


def test_parquet_keeps_its_types(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    reader, table, _ = read_all(path)
    assert reader.entries[0].format == "parquet"
    assert table.schema.field("x").type == pa.float64()


@pytest.mark.parametrize(
    ("name", "writer", "expected"),
    [
        ("lies.csv", lambda p: pq.write_table(pa.Table.from_pylist(ROWS), p), "parquet"),
        ("lies.json", lambda p: p.write_text(CSV), "csv"),
        ("lies.parquet", lambda p: p.write_text("\n".join(json.dumps(r) for r in ROWS)), "jsonl"),
        ("lies.csv.gz", lambda p: p.write_text(CSV), "csv"),  # says gzip, is plain text
    ],
)
def test_lying_extensions_are_read_as_what_the_content_is(tmp_path, name, writer, expected, caplog):
    path = tmp_path / name
    writer(path)
    reader, table, _ = read_all(path)
    assert reader.entries[0].format == expected
    assert reader.entries[0].compression is None
    assert table.num_rows == 3
    if not name.endswith(".gz"):
        assert "the name says" in caplog.text


def test_explicit_format_contradicted_by_content_is_an_error(tmp_path):
    path = tmp_path / "x.csv"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    with pytest.raises(InputError, match=r"x\.csv: the spec says csv but the content is parquet"):
        FileReader(FileSource(path=str(path), format="csv"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"  \n\n \t\n", "empty file"),
        (b"\x00\x01\x02\xff\xfe binary \x00", "unknown format"),
        (b"just one line of prose without structure\nand another one, longer than the first\n", "unknown format"),
        (gzip.compress(b""), "empty file"),
    ],
)
def test_unusable_files_raise_input_error_naming_the_file(tmp_path, content, message):
    path = write(tmp_path / "bad.csv", content)
    with pytest.raises(InputError, match=message) as err:
        FileReader(FileSource(path=str(path)))
    assert "bad.csv" in err.value.message


def test_zip_archive_is_named_as_such(tmp_path):
    path = tmp_path / "book.xlsx"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("sheet.xml", "<x/>")
    with pytest.raises(InputError, match="ZIP archive"):
        FileReader(FileSource(path=str(path)))


def test_header_only_csv_has_no_rows(tmp_path):
    reader = FileReader(FileSource(path=str(write(tmp_path / "h.csv", "id,x\n"))))
    with pytest.raises(InputError, match="no rows"):
        list(reader.batches())


def test_missing_path_and_empty_glob(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        FileReader(FileSource(path=str(tmp_path / "nope.csv")))
    with pytest.raises(InputError, match="no files match"):
        FileReader(FileSource(path=str(tmp_path / "*.csv")))


def test_folder_and_glob_expand_to_sorted_data_files(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    write(tmp_path / "in" / "b.csv", CSV)
    write(tmp_path / "in" / "sub" / "a.csv", CSV)
    write(tmp_path / "in" / ".hidden.csv", "junk")
    write(tmp_path / "in" / "_SUCCESS", "")
    reader, table, _ = read_all(tmp_path / "in")
    assert [e.uri.rsplit("/", 1)[-1] for e in reader.entries] == ["b.csv", "a.csv"]
    assert table.num_rows == 6
    reader, _, _ = read_all(tmp_path / "in" / "*.csv")
    assert [e.uri.rsplit("/", 1)[-1] for e in reader.entries] == ["b.csv"]


def test_fsspec_uri(tmp_path):
    import fsspec

    with fsspec.open("memory://skiff-ingest-test/a.csv", "wb") as f:
        f.write(gzip.compress(CSV.encode()))
    try:
        reader, table, _ = read_all("memory://skiff-ingest-test/a.csv")
        assert reader.entries[0].uri == "memory:///skiff-ingest-test/a.csv"
        assert table.num_rows == 3
    finally:
        fsspec.filesystem("memory").rm("/skiff-ingest-test", recursive=True)


def test_csv_is_streamed_in_batches_with_offsets(tmp_path):
    body = "".join(f"{i},{i}.5,n{i}\n" for i in range(20_000))
    reader = FileReader(FileSource(path=str(write(tmp_path / "big.csv", "id,x,name\n" + body))), block_bytes=64 * 1024)
    batches = list(reader.batches())
    assert len(batches) > 3
    assert [b.row_offset for b in batches] == [sum(x.table.num_rows for x in batches[:i]) for i in range(len(batches))]
    assert sum(b.table.num_rows for b in batches) == 20_000
    assert reader.entries[0].rows == 20_000


def test_malformed_csv_rows_are_reported_not_dropped(tmp_path):
    path = write(tmp_path / "m.csv", "id,x\n1,2\n3,4,5\n6,7\n")
    _, table, batches = read_all(path)
    assert table.column("id").to_pylist() == ["1", "6"]
    malformed = [m for b in batches for m in b.malformed]
    assert malformed == [("expected 2 fields, got 3", "3,4,5")]


def test_malformed_jsonl_lines_are_reported_with_their_line(tmp_path):
    path = write(tmp_path / "m.jsonl", '{"id": 1}\n\n{"id": 2,\n[1, 2]\n{"id": 3}\n')
    _, table, batches = read_all(path)
    assert table.column("id").to_pylist() == ["1", "3"]
    problems = [p for b in batches for p, _ in b.malformed]
    assert problems[0].startswith("line 3: not JSON") and problems[1] == "line 4: not a JSON object"


def test_records_to_table_handles_mixed_and_nested_values():
    t = records_to_table([{"a": 1, "b": {"k": 1}, "c": True}, {"a": "N/A", "b": None, "d": 2.5}])
    assert t.column("a").to_pylist() == ["1", "N/A"]
    assert t.column("b").to_pylist() == ['{"k": 1}', None]
    assert t.column("c").to_pylist() == ["true", None]
    assert t.column("d").to_pylist() == [None, "2.5"]


def test_detect_format_json_document_versus_lines():
    assert detect_format(b'{"a": 1}\n{"a": 2}\n', "x")[0] == "jsonl"
    assert detect_format(b'{\n  "data": [{"a": 1}]\n}\n', "x")[0] == "json"
    assert detect_format(b'  [{"a": 1}]', "x")[0] == "json"
    assert detect_format(b"PAR1....", "x")[0] == "parquet"


# --- trailing delimiters: columns without a header name -------------------------------------------------


def test_trailing_delimiters_empty_columns_are_dropped_with_a_note(tmp_path, caplog):
    import logging

    from components.ingest.logic import ingest
    from skiff.lake import Lake
    from skiff.spec import parse_spec
    from skiff.storage import Store

    # a European export: ';' separated, decimal commas, two trailing ';' on every line
    f = write(tmp_path / "export.csv", "id;price;city;;\n1;12,5;Lyon;;\n2;1.234,75;Köln;;\n3;0,99;Gent;;\n")
    caplog.set_level(logging.INFO, logger="skiff.ingest")
    reader, table, _ = read_all(f)
    assert table.column_names == ["id", "price", "city"]
    assert reader.entries[0].notes and "dropped 2 column(s)" in reader.entries[0].notes[0]
    assert "positions 4, 5" in caplog.text

    spec = parse_spec({"name": "shop", "entity_key": "id", "sources": [{"type": "file", "path": str(f)}],
                       "columns": {"id": {"type": "integer"}, "price": {"type": "float"}, "city": {"type": "string"}}})
    res = ingest(spec, Lake(Store(str(tmp_path / "lake"))))
    assert res.counts == {"read": 3, "accepted": 3, "quarantined": 0, "duplicates": 0}
    got = Lake(Store(str(tmp_path / "lake"))).read("shop").to_pydict()
    assert got["price"] == [12.5, 1234.75, 0.99] and got["city"] == ["Lyon", "Köln", "Gent"]
    assert "dropped 2 column(s)" in res.manifest.sources[0]["files"][0]["notes"][0]


def test_unnamed_columns_with_values_get_positional_names_and_a_warning(tmp_path, caplog):
    f = write(tmp_path / "export.csv", "id;price;;note;\n1;12,5;x;a;\n2;3,0;;b;\n")
    reader, table, _ = read_all(f)
    assert table.column_names == ["id", "price", "column_3", "note"]
    assert table.column("column_3").to_pylist() == ["x", None]
    assert "column_3" in caplog.text and "without a header name" in caplog.text
    assert any("column_3" in n for n in reader.entries[0].notes) and any("dropped 1" in n for n in reader.entries[0].notes)


# --- messages name the file and the fix ------------------------------------------------------------------

GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"


@pytest.mark.parametrize("data", [
    GZIP_HEADER,  # a header and nothing else (cut off)
    b"\x1f\x8b\x08\x08\x00\x00\x00\x00\x00\x03" + b"garbage name without end " * 20,  # FNAME swallowing it all
    GZIP_HEADER + b"\xff" * 64,  # garbage where the deflate stream should be
])
def test_gzip_header_with_garbage_is_corrupt_gzip_not_empty(tmp_path, data):
    f = write(tmp_path / "a.csv.gz", data)
    with pytest.raises(InputError) as e:
        FileReader(FileSource(path=str(f)))
    msg = str(e.value)
    assert str(f) in msg and "corrupt gzip" in msg and "empty" not in msg and "re-export" in msg


def test_device_is_not_a_regular_file_rather_than_not_found():
    with pytest.raises(InputError) as e:
        FileReader(FileSource(path="/dev/zero"))
    assert "/dev/zero: not a regular file" in str(e.value) and "not found" not in str(e.value)


def test_latin1_bytes_suggest_an_encoding_that_then_reads(tmp_path):
    f = write(tmp_path / "cities.csv", "id;city\n1;Besançon\n2;Zürich\n3;Málaga\n".encode("latin-1"))
    with pytest.raises(InputError) as e:
        FileReader(FileSource(path=str(f)))
    msg = str(e.value)
    assert str(f) in msg and "not utf-8 text" in msg and "encoding: cp1252" in msg
    _, table, _ = read_all(f, encoding="cp1252")
    assert table.column("city").to_pylist() == ["Besançon", "Zürich", "Málaga"]


def test_binary_data_without_a_text_reading_keeps_the_binary_message(tmp_path):
    f = write(tmp_path / "blob.csv", bytes(range(256)) * 4)
    with pytest.raises(InputError, match="binary data"):
        FileReader(FileSource(path=str(f)))


@pytest.mark.parametrize("pattern", [r"(?!x)[a-z]+", r"(?<=a)b", r"(a)\1"])
def test_spec_refuses_regexes_the_ingest_engine_cannot_run_naming_the_column(pattern):
    from skiff.errors import SpecError
    from skiff.spec import parse_spec

    with pytest.raises(SpecError) as e:
        parse_spec({"name": "d", "entity_key": "id", "columns": {"id": {"type": "integer"},
                    "code": {"type": "string", "regex": pattern}}})
    assert "columns.code.regex" in str(e.value) and "RE2" in str(e.value) and "rewrite it" in str(e.value)


def test_spec_regex_accepted_at_load_is_the_one_ingest_applies(tmp_path):
    from components.ingest.logic import ingest
    from skiff.lake import Lake
    from skiff.spec import parse_spec
    from skiff.storage import Store

    f = write(tmp_path / "c.csv", "id,code\n1,AB-12\n2,ab-12\n3,AB-123\n")
    spec = parse_spec({"name": "d", "entity_key": "id", "sources": [{"type": "file", "path": str(f)}],
                       "columns": {"id": {"type": "integer"}, "code": {"type": "string", "regex": r"[A-Z]{2}-\d{2}"}}})
    res = ingest(spec, Lake(Store(str(tmp_path / "lake"))))
    assert res.counts["accepted"] == 1 and res.manifest.quarantine_reasons == {"regex_mismatch": 2}
