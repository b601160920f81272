"""A file that changes while it is read fails the run and commits nothing; restored, it ingests whole."""

from __future__ import annotations

import os

import pytest

from components.ingest.logic import ingest
from skiff.errors import SourceError
from skiff.lake import Lake
from skiff.spec import parse_spec
from skiff.storage import Store

ROWS = 3000


def _spec(path):
    return parse_spec({"name": "meters", "entity_key": "id", "columns": {"id": {"type": "integer"},
                       "kwh": {"type": "float"}}, "sources": [{"type": "file", "path": str(path)}]})


def _csv(n: int = ROWS) -> bytes:
    return ("id,kwh\n" + "".join(f"{i},{i * 0.5}\n" for i in range(n))).encode()


@pytest.mark.parametrize("change", ["truncate", "append", "rewrite_same_size"])
def test_file_changed_mid_read_fails_and_commits_nothing(tmp_path, change):
    src = tmp_path / "meters.csv"
    original = _csv()
    src.write_bytes(original)
    lake = Lake(Store(str(tmp_path / "lake")))
    calls = []

    def mid_read(rows: int) -> None:  # called after each batch: the first one changes the file
        calls.append(rows)
        if len(calls) == 1:
            if change == "truncate":
                os.truncate(src, len(original) // 3)
            elif change == "append":
                with open(src, "ab") as f:
                    f.write(b"99999,1.0\n")
            else:
                st = os.stat(src)
                src.write_bytes(original.replace(b"1,0.5\n", b"1,9.5\n", 1))
                os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the old mtime put back

    with pytest.raises(SourceError) as e:
        ingest(_spec(src), lake, progress=mid_read, block_bytes=4096)
    msg = str(e.value)
    assert str(src) in msg and "changed while skiff was reading it" in msg and "nothing was committed" in msg
    assert len(calls) >= 1
    assert lake.all_runs("meters") == []
    assert not [p for p in (tmp_path / "lake").rglob("*") if p.is_file() and p.suffix == ".parquet"]

    src.write_bytes(original)  # the writer finished: the next run takes every row
    res = ingest(_spec(src), lake, block_bytes=4096)
    assert res.status == "ingested" and res.counts["accepted"] == ROWS
    assert res.manifest.sources[0]["files"][0]["size"] == len(original)


def test_file_changed_between_listing_and_hashing_fails(tmp_path):
    from components.ingest.files import FileReader
    from skiff.spec import FileSource

    src = tmp_path / "meters.csv"
    src.write_bytes(_csv(10))
    reader = FileReader(FileSource(path=str(src)))
    with open(src, "ab") as f:
        f.write(b"10,5.0\n")
    with pytest.raises(SourceError, match="changed while skiff was hashing it"):
        reader.fingerprint()
