"""The three batch readers through the SourceReader protocol alone, as an ingestion run uses them."""

from __future__ import annotations

import sqlite3

import pytest

from components.ingest.files import FileReader
from components.ingest.sql import SqlReader
from skiff.errors import InputError
from skiff.spec import FileSource, SqlSource


def _db(tmp_path, rows):
    path = tmp_path / "m.db"
    con = sqlite3.connect(path)
    con.execute("create table m (id integer, seq integer)")
    con.executemany("insert into m values (?, ?)", rows)
    con.commit()
    con.close()
    return f"sqlite:///{path}"


def test_sql_reader_resumes_above_the_highest_committed_watermark_and_reports_its_new_state(tmp_path):
    url = _db(tmp_path, [(i, i) for i in range(1, 8)])
    reader = SqlReader(SqlSource(url=url, table="m", watermark="seq"))
    assert reader.state_key == reader.key and not reader.fingerprint_before_read
    earlier = [{"type": "sql", "key": reader.key, "watermark": {"to": {"kind": "int", "value": 5}}},
               {"type": "sql", "key": "another-source", "watermark": {"to": {"kind": "int", "value": 7}}},
               {"type": "file", "path": "x.csv"}]
    # a state file behind the manifests (a crash after the publish): the manifests' higher value wins
    reader.resume({"watermark": {"kind": "int", "value": 3}}, earlier)
    batches = list(reader.batches())
    assert [r["id"] for b in batches for r in b.table.to_pylist()] == [6, 7]
    assert {b.key_scope for b in batches} == {f'["{reader.label}", {{"kind": "int", "value": 5}}]'}
    state = reader.commit_state()
    assert state["key"] == reader.key and state["watermark"] == {"kind": "int", "value": 7}
    assert "m.db" in state["source"]


def test_sql_reader_without_a_watermark_keeps_no_state(tmp_path):
    reader = SqlReader(SqlSource(url=_db(tmp_path, [(1, 1)]), table="m"))
    assert reader.state_key is None
    assert [b.key_scope for b in reader.batches()] == [None]
    assert reader.commit_state() is None


def test_file_reader_prechecks_each_header_before_reading(tmp_path):
    (tmp_path / "a.csv").write_text("id,x\n1,2\n")
    (tmp_path / "b.csv").write_text("id,y\n1,2\n")
    reader = FileReader(FileSource(path=str(tmp_path / "*.csv")))
    assert reader.fingerprint_before_read and reader.state_key is None
    seen = []

    def check(columns, where):
        seen.append((where.rsplit("/", 1)[-1], columns))
        if "x" not in columns:
            raise InputError(f"{where}: column x missing")

    with pytest.raises(InputError, match="b.csv: column x missing"):
        reader.precheck(check)
    assert seen == [("a.csv", ["id", "x"]), ("b.csv", ["id", "y"])]
