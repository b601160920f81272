"""Whole ingestion runs into a real lake folder: layout, manifest, counts, atomicity, idempotence."""

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap

import pandas as pd
import pyarrow.parquet as pq
import pytest

from components.ingest import logic
from components.ingest.logic import ingest
from skiff.errors import GateFailed, InputError, InvariantError
from skiff.lake import Lake
from skiff.spec import parse_spec
from skiff.storage import Store
from tests.conftest import REPO

SPEC = {
    "name": "meters",
    "entity_key": "meter_id",
    "event_timestamp": "read_at",
    "target": "faulty",
    "problem_type": "binary",
    "columns": {
        "meter_id": {"type": "integer", "required": True},
        "read_at": {"type": "datetime", "required": True},
        "kwh": {"type": "float", "min": 0, "sentinels": [-200], "missing": "impute", "impute": "median"},
        "site": {"type": "category", "allowed": ["north", "south"]},
        "faulty": {"type": "boolean", "missing": "reject"},
    },
}

CSV = textwrap.dedent("""\
    meter_id;read_at;kwh;site;faulty
    1;2024-03-01 10:00:00;1,5;north;No
    2;2024-03-01 10:00:00; 2,5 ;south;Yes
    2;2024-03-01 10:00:00; 2,5 ;south;Yes
    3;2024-03-01T10:00:00Z;-200;north;no
    4;2024-03-01 10:00:00;-3;north;no
    5;2024-03-01 10:00:00;4;east;yes
    6;not a date;4;north;yes
    7;2024-03-01 10:00:00;6,5;south;
    """)


NO_IMPUTE = {**SPEC["columns"], "kwh": {"type": "float"}}  # rows go straight to the part files


@pytest.fixture
def lake(tmp_path):
    return Lake(Store(str(tmp_path / "lake")))


def spec_for(path, **changes):
    return parse_spec({**SPEC, **changes, "sources": [{"type": "file", "path": str(path)}]})


def test_run_layout_manifest_counts_and_types(tmp_path, lake):
    src = tmp_path / "m.csv"
    src.write_text(CSV)
    res = ingest(spec_for(src), lake, ingest_date="2024-03-02", run_id="r1")
    run_dir = tmp_path / "lake" / "raw" / "meters" / "ingest_date=2024-03-02" / "run=r1"
    assert res.status == "ingested" and res.partition_uri == str(run_dir)
    assert sorted(os.listdir(run_dir)) == ["_COMMITTED", "_manifest.json", "_quarantine.parquet", "part-00000.parquet"]

    m = json.loads((run_dir / "_manifest.json").read_text())
    assert m["counts"] == {"read": 8, "accepted": 3, "quarantined": 4, "duplicates": 1}
    assert m["quarantine_reasons"] == {"below_min": 1, "missing": 1, "not_a_datetime": 1, "not_allowed": 1}
    assert m["schema"] == {"meter_id": "int64", "read_at": "timestamp[us, tz=UTC]", "kwh": "double",
                           "site": "string", "faulty": "bool"}
    (file_desc,) = m["sources"][0]["files"]
    assert file_desc["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert file_desc["size"] == src.stat().st_size and file_desc["mtime"] == pytest.approx(src.stat().st_mtime)
    part_sha = hashlib.sha256((run_dir / "part-00000.parquet").read_bytes()).hexdigest()
    assert m["files"] == [{"name": "part-00000.parquet", "rows": 3, "sha256": part_sha}]
    assert m["content_hash"] == hashlib.sha256(json.dumps([part_sha]).encode()).hexdigest()
    assert m["dataset"] == "meters" and m["run_id"] == "r1" and m["ingest_date"] == "2024-03-02"
    assert m["started_at"] <= m["finished_at"] and m["skiff_version"]
    assert m["imputed"] == {"kwh": {"strategy": "median", "value": 2.0, "count": 1}}

    df = lake.read("meters").to_pandas()
    assert df["meter_id"].tolist() == [1, 2, 3]
    assert df["kwh"].tolist() == [1.5, 2.5, 2.0]  # -200 is a sentinel, imputed with the median of 1.5 and 2.5
    assert df["faulty"].tolist() == [False, True, False]
    assert str(df["read_at"].dt.tz) == "UTC"

    q = pq.read_table(run_dir / "_quarantine.parquet").to_pylist()
    assert [(r["_row"], r["_column"], r["_reason"], r["meter_id"]) for r in q] == [
        (4, "kwh", "below_min", "4"), (5, "site", "not_allowed", "5"), (6, "read_at", "not_a_datetime", "6"),
        (7, "faulty", "missing", "7")]
    assert all(r["_source"] == str(src) for r in q)
    assert len(q) == m["counts"]["quarantined"]


def test_rerun_of_the_same_input_writes_nothing(tmp_path, lake):
    src = tmp_path / "m.csv"
    src.write_text(CSV)
    first = ingest(spec_for(src), lake)
    os.utime(src, (1_000_000, 1_000_000))  # a touch or copy changes mtime, not content
    again = ingest(spec_for(src), lake)
    assert again.status == "unchanged" and again.run_id == first.run_id
    assert "same input" in again.reason
    assert len(lake.all_runs("meters")) == 1

    changed_rules = ingest(spec_for(src, columns={**SPEC["columns"], "kwh": {"type": "float"}}), lake)
    assert changed_rules.status == "ingested"
    src.write_text(CSV + "8;2024-03-01 10:00:00;1;north;no\n")
    grown = ingest(spec_for(src), lake)
    assert grown.status == "ingested" and grown.counts["read"] == 9
    forced = ingest(spec_for(src), lake, force=True)
    assert forced.status == "ingested"
    assert len(lake.all_runs("meters")) == 4


def test_crash_mid_write_leaves_no_partition_no_manifest_no_staging(tmp_path, lake, monkeypatch):
    src = tmp_path / "big.csv"
    src.write_text("meter_id;read_at;kwh;site;faulty\n" +
                   "".join(f"{i};2024-03-01 10:00:00;1;north;no\n" for i in range(20_000)))
    real = logic.Cleanser.process
    calls = []

    def crash_on_third_batch(self, batch):
        calls.append(list((tmp_path / "lake").rglob("part-*.parquet")))
        if len(calls) == 3:
            raise OSError("disk full")
        return real(self, batch)

    monkeypatch.setattr(logic.Cleanser, "process", crash_on_third_batch)
    with pytest.raises(Exception, match="disk full"):
        ingest(spec_for(src, columns=NO_IMPUTE), lake, block_bytes=32 * 1024, rows_per_part=1_000)
    assert len(calls) == 3 and calls[-1]  # parts were staged when it crashed
    date_dirs = list((tmp_path / "lake" / "raw" / "meters").glob("*"))
    assert all(os.listdir(d) == [] for d in date_dirs)  # no run folder, no staging folder
    assert not list((tmp_path / "lake").rglob("_manifest.json"))
    assert not list((tmp_path / "lake").rglob("*.parquet"))
    assert lake.all_runs("meters") == []


def test_killed_process_leaves_nothing_readers_can_see(tmp_path, lake):
    src = tmp_path / "big.csv"
    src.write_text("meter_id;read_at;kwh;site;faulty\n" +
                   "".join(f"{i};2024-03-01 10:00:00;1;north;no\n" for i in range(20_000)))
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from components.ingest.logic import ingest
        from skiff.lake import Lake
        from skiff.spec import parse_spec
        from skiff.storage import Store
        spec = parse_spec({ {**SPEC, "sources": [{"type": "file", "path": str(src)}], "columns": NO_IMPUTE}!r})
        seen = []
        def progress(n):
            seen.append(n)
            if len(seen) == 2:  # some parts are written in the staging folder by now
                os.kill(os.getpid(), signal.SIGKILL)
        ingest(spec, Lake(Store({str(tmp_path / "lake")!r})), block_bytes=32 * 1024, rows_per_part=1_000,
               progress=progress)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    staged = list((tmp_path / "lake").rglob("part-*.parquet"))
    assert staged and all(".staging-" in str(p) for p in staged)  # it really died mid-write
    assert lake.all_runs("meters") == [] and lake.partitions("meters") == []
    assert not list((tmp_path / "lake").rglob("_manifest.json"))
    res = ingest(spec_for(src, columns=NO_IMPUTE), lake)  # the next run is not disturbed by the leftovers
    assert res.status == "ingested" and res.counts["accepted"] == 20_000


def test_count_mismatch_is_a_bug_and_publishes_nothing(tmp_path, lake, monkeypatch):
    src = tmp_path / "m.csv"
    src.write_text(CSV)
    real = logic._PartWriter._write
    monkeypatch.setattr(logic._PartWriter, "_write", lambda self, t: real(self, t.slice(1)))
    with pytest.raises(InvariantError, match=r"rows read 8 != written 2 \(counted 3\)"):
        ingest(spec_for(src), lake)
    assert lake.all_runs("meters") == []


@pytest.mark.parametrize(("content", "message"), [
    ("", "empty file"),
    ("meter_id;read_at;kwh;site;faulty\n", "no rows"),
    ("meter_id;kwh\n1;2\n", r"required columns 'read_at', 'faulty'|required column 'read_at'"),
])
def test_bad_input_raises_and_writes_nothing(tmp_path, lake, content, message):
    src = tmp_path / "bad.csv"
    src.write_text(content)
    spec = spec_for(src, columns={**SPEC["columns"], "faulty": {"type": "boolean", "required": True}})
    with pytest.raises(InputError, match=message) as err:
        ingest(spec, lake)
    assert str(src) in err.value.message
    assert not (tmp_path / "lake").exists() or not list((tmp_path / "lake").rglob("*.parquet"))


def test_streaming_many_batches_dedups_across_batches_and_imputes_over_the_whole_run(tmp_path):
    n = 30_000
    rows = ["meter_id;read_at;kwh;site;faulty"]
    for i in range(n):
        kwh = "-200" if i % 7 == 0 else f"{(i * 37) % 1000 / 10}".replace(".", ",")
        rows.append(f"{i % 25_000};2024-03-01 10:00:00;{kwh};north;no")  # 5,000 duplicates, far apart
    src = tmp_path / "s.csv"
    src.write_text("\n".join(rows) + "\n")
    spec = spec_for(src)
    streamed = ingest(spec, Lake(Store(str(tmp_path / "a"))), block_bytes=16 * 1024, rows_per_part=7_000,
                      impute_buffer_bytes=1)  # forces the second imputation pass
    in_memory = ingest(spec, Lake(Store(str(tmp_path / "b"))))
    assert streamed.counts == in_memory.counts == {"read": n, "accepted": 25_000, "quarantined": 0,
                                                   "duplicates": 5_000}
    assert len(streamed.manifest.files) == 4  # 7,000 rows per part
    assert streamed.manifest.imputed == in_memory.manifest.imputed
    a = Lake(Store(str(tmp_path / "a"))).read("meters").to_pandas()
    b = Lake(Store(str(tmp_path / "b"))).read("meters").to_pandas()
    pd.testing.assert_frame_equal(a, b)
    assert a["meter_id"].is_unique
    raw = pd.Series([(i * 37) % 1000 / 10 for i in range(25_000) if i % 7 != 0])
    assert streamed.manifest.imputed["kwh"].model_dump() == {"strategy": "median", "value": raw.median(),
                                                  "count": sum(1 for i in range(25_000) if i % 7 == 0)}


def test_sqlite_source_is_incremental_by_watermark(tmp_path, lake):
    db = tmp_path / "m.db"
    con = sqlite3.connect(db)
    con.execute("create table readings (meter_id integer, read_at text, kwh real, site text, faulty text, seq integer)")
    con.executemany("insert into readings values (?,?,?,?,?,?)",
                    [(i, "2024-03-01 10:00:00", i * 1.5, "north", "no", i) for i in range(1, 6)])
    con.commit()
    spec = parse_spec({**SPEC, "sources": [{"type": "sql", "url": f"sqlite:///{db}", "table": "readings",
                                            "watermark": "seq"}]})
    first = ingest(spec, lake)
    assert first.counts == {"read": 5, "accepted": 5, "quarantined": 0, "duplicates": 0}
    (state,) = (tmp_path / "lake" / "state" / "meters").glob("*.json")
    assert json.loads(state.read_text())["watermark"] == {"kind": "int", "value": 5}
    con.executemany("insert into readings values (?,?,?,?,?,?)",
                    [(i, "2024-03-01 10:00:00", 1.0, "south", "yes", i) for i in range(6, 9)])
    con.commit()
    second = ingest(spec, lake)
    assert second.counts["read"] == 3
    assert second.manifest.sources[0]["watermark"] == {"column": "seq", "after": {"kind": "int", "value": 5},
                                                          "to": {"kind": "int", "value": 8}}
    third = ingest(spec, lake)
    assert third.status == "unchanged" and third.reason == "the sources returned no new rows"
    assert sorted(lake.read("meters").column("meter_id").to_pylist()) == list(range(1, 9))


def test_lost_state_file_falls_back_to_the_manifests(tmp_path, lake):
    db = tmp_path / "m.db"
    con = sqlite3.connect(db)
    con.execute("create table r (meter_id integer, read_at text, kwh real, site text, faulty text)")
    con.executemany("insert into r values (?,?,?,?,?)", [(i, f"2024-03-0{i} 00:00:00", 1.0, "north", "no")
                                                         for i in range(1, 4)])
    con.commit()
    spec = parse_spec({**SPEC, "sources": [{"type": "sql", "url": f"sqlite:///{db}", "table": "r",
                                            "watermark": "read_at"}]})
    ingest(spec, lake)
    for f in (tmp_path / "lake" / "state").rglob("*.json"):  # as if the run died right after publishing
        f.unlink()
    assert ingest(spec, lake).status == "unchanged"


def test_sources_argument_overrides_the_spec(tmp_path, lake):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(CSV)
    b.write_text(CSV.replace(";2024", ";2025"))  # other timestamps: not duplicates of a's rows
    spec = spec_for(tmp_path / "missing.csv")
    res = ingest(spec, lake, sources=logic.coerce_sources([str(a), {"type": "file", "path": str(b)}]))
    assert [s["path"] for s in res.manifest.sources] == [str(a), str(b)]
    assert res.counts["read"] == 16 and res.counts["accepted"] == 6


def test_a_run_that_accepts_no_row_fails_commits_nothing_and_keeps_its_quarantine(tmp_path, lake):
    src = tmp_path / "m.csv"
    src.write_text("meter_id;read_at;kwh;site;faulty\n1;x;1;north;no\n2;y;1;north;no\n3;2024-03-01;1;NA;no\n")
    with pytest.raises(GateFailed) as err:
        ingest(spec_for(src), lake, run_id="bad")
    e = err.value
    assert e.exit_code == 1
    assert "0 of 3 rows accepted" in e.message and "nothing was committed" in e.message
    assert "read_at not_a_datetime ×2 (e.g. 'x')" in e.message and "site not_allowed ×1 (e.g. 'NA')" in e.message
    assert e.detail["reasons"][0] == {"column": "read_at", "reason": "not_a_datetime", "count": 2}
    assert lake.all_runs("meters") == []  # readers see no partition at all
    failed = tmp_path / "lake" / "failed" / "meters" / "run=bad"
    assert pq.read_table(failed / "_quarantine.parquet").num_rows == 3
    assert json.loads((failed / "_manifest.json").read_text())["status"] == "failed"
    assert not list((tmp_path / "lake").glob("raw/meters/*/*"))


def test_min_accepted_fraction_from_the_spec_or_the_caller(tmp_path, lake):
    src = tmp_path / "m.csv"
    src.write_text(CSV)  # 8 read, 1 duplicate, 3 accepted of the 7 others (43%)
    with pytest.raises(GateFailed, match=r"3 of 7 rows accepted \(42.9%, minimum 50.0%\)"):
        ingest(spec_for(src, min_accepted_fraction=0.5), lake)
    assert lake.all_runs("meters") == []
    res = ingest(spec_for(src, min_accepted_fraction=0.5), lake, min_accepted_fraction=0.4)
    assert res.status == "ingested" and res.counts["accepted"] == 3
    assert res.summary()["quarantine_top"][0] == {"column": "faulty", "reason": "missing", "count": 1}


def test_many_duplicates_warn_in_the_summary_and_the_manifest(tmp_path, lake):
    src = tmp_path / "m.csv"
    rows = [f"{i % 5};2024-03-01 10:00:00;1;north;no" for i in range(20)]  # 5 keys, 15 repeats
    src.write_text("meter_id;read_at;kwh;site;faulty\n" + "\n".join(rows) + "\n")
    res = ingest(spec_for(src), lake)
    assert res.counts["duplicates"] == 15
    (warning,) = res.summary()["warnings"]
    assert "15 of 20 rows (75.0%) were dropped as duplicates" in warning
    assert res.manifest.warnings == [warning]
    src.write_text("meter_id;read_at;kwh;site;faulty\n1;2024-03-01;1;north;no\n")
    assert ingest(spec_for(src), lake).manifest.warnings == []


KEYLESS = {"name": "sensor", "entity_key": {"generated": "row"},
           "columns": {"temp": {"type": "float"}, "room": {"type": "string"}}}


def test_generated_row_key_is_stable_across_reingests_and_unique_per_source(tmp_path, lake):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("temp,room\n1,x\n1,x\n2,y\n")
    b.write_text("temp,room\n1,x\n")
    spec = parse_spec({**KEYLESS, "sources": [{"type": "file", "path": str(tmp_path / "*.csv")}]})
    first = ingest(spec, lake, run_id="one")
    assert first.counts == {"read": 4, "accepted": 4, "quarantined": 0, "duplicates": 0}  # equal rows kept
    assert first.manifest.columns["row_id"] == "string"
    ids = lake.read("sensor").column("row_id").to_pylist()
    assert len(set(ids)) == 4 and all(i.endswith(("-0", "-1", "-2")) for i in ids)
    again = ingest(spec, lake, run_id="two", force=True, ingest_date="2099-01-01")
    assert lake.read("sensor", again.ingest_date).column("row_id").to_pylist() == ids
    assert spec.key_columns == ["row_id"] and "row_id" not in spec.feature_columns


def test_generated_content_key_deduplicates_identical_rows(tmp_path, lake):
    src = tmp_path / "a.csv"
    src.write_text("temp;room\n1,5;x\n1.5;x\n1.5;y\n")  # rows 1 and 2 are equal once typed
    spec = parse_spec({**KEYLESS, "entity_key": {"generated": "content", "column": "rid"},
                       "sources": [{"type": "file", "path": str(src)}]})
    res = ingest(spec, lake)
    assert res.counts == {"read": 3, "accepted": 2, "quarantined": 0, "duplicates": 1}
    rid = lake.read("sensor").column("rid").to_pylist()
    assert len(set(rid)) == 2 and all(len(r) == 32 for r in rid)


def test_generated_key_with_an_incremental_sql_source_never_repeats_an_id(tmp_path, lake):
    db = tmp_path / "s.db"
    con = sqlite3.connect(db)
    con.execute("create table r (temp real, room text, seq integer)")
    con.executemany("insert into r values (?,?,?)", [(1.0, "x", 1), (2.0, "y", 2)])
    con.commit()
    spec = parse_spec({**KEYLESS, "sources": [{"type": "sql", "url": f"sqlite:///{db}", "table": "r",
                                               "watermark": "seq"}]})
    ingest(spec, lake)
    con.executemany("insert into r values (?,?,?)", [(3.0, "x", 3), (4.0, "y", 4)])
    con.commit()
    ingest(spec, lake)
    ids = lake.read("sensor").column("row_id").to_pylist()
    assert len(ids) == 4 and len(set(ids)) == 4


def test_a_data_column_named_like_the_generated_key_is_refused(tmp_path, lake):
    src = tmp_path / "a.csv"
    src.write_text("row_id,temp,room\n7,1,x\n")
    spec = parse_spec({**KEYLESS, "sources": [{"type": "file", "path": str(src)}]})
    with pytest.raises(InputError, match="entity_key.column"):
        ingest(spec, lake)


def test_the_json_summary_has_the_keys_its_typed_contract_names(tmp_path, lake):
    from components.ingest.logic import IngestSummary

    src = tmp_path / "m.csv"
    src.write_text(CSV)
    first = ingest(spec_for(src, min_accepted_fraction=0.0), lake).summary()
    optional = IngestSummary.__optional_keys__
    assert set(IngestSummary.__required_keys__) <= set(first) <= set(IngestSummary.__annotations__)
    assert "reason" not in first and first["status"] == "ingested"
    again = ingest(spec_for(src, min_accepted_fraction=0.0), lake).summary()
    assert again["status"] == "unchanged" and "reason" in optional and again["reason"].startswith("same input")
