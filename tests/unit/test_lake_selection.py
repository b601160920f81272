"""Which lake runs readers use (skiff.lake.Lake.select_runs): the current spec's runs, or one run."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skiff.errors import NotFoundError
from skiff.lake import MANIFEST, Lake
from skiff.storage import Store


def _run(lake: Lake, date: str, run_id: str, spec_hash: str | None, finished: str, rows: int = 2) -> None:
    with lake.publish_run("d", run_id, date) as staging:
        pq.write_table(pa.table({"id": [f"{run_id}-{i}" for i in range(rows)]}), staging / "part-00000.parquet")
        manifest = {"run_id": run_id, "finished_at": finished}
        if spec_hash is not None:
            manifest["spec_hash"] = spec_hash
        (staging / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture
def lake(tmp_path):
    lake = Lake(Store(str(tmp_path / "lake")))
    # 01: ingested under spec A, then again after the spec changed to B (the same date: runs stack)
    _run(lake, "2026-01-01", "a1", "A", "2026-01-01T10:00:00+00:00")
    _run(lake, "2026-01-01", "b1", "B", "2026-01-01T11:00:00+00:00")
    # 02: two increments under B (e.g. incremental database reads): both count
    _run(lake, "2026-01-02", "b3", "B", "2026-01-02T12:00:00+00:00")
    _run(lake, "2026-01-02", "b2", "B", "2026-01-02T09:00:00+00:00")
    # 03: only ever ingested under A
    _run(lake, "2026-01-03", "a2", "A", "2026-01-03T10:00:00+00:00")
    return lake


def test_current_spec_runs_supersede_other_specs_runs(lake):
    sel = lake.select_runs("d", "B")
    assert [(r.date, r.run_id) for r in sel.runs] == [
        ("2026-01-01", "b1"), ("2026-01-02", "b2"), ("2026-01-02", "b3"), ("2026-01-03", "a2")]
    assert sel.dates == ["2026-01-01", "2026-01-02", "2026-01-03"]
    described = sel.describe()
    assert described["spec_hash"] == "B"
    assert [r["current_spec"] for r in described["runs"]] == [True, True, True, False]
    assert any("2026-01-01: 1 run(s) written with another spec left out" in n for n in sel.notes)
    assert any("ingest_date=2026-01-03 has no run written with the current spec" in n for n in sel.notes)


def test_one_partition_and_the_same_answer_every_time(lake):
    first = lake.select_runs("d", "A", dates="2026-01-01")
    assert [r.run_id for r in first.runs] == ["a1"]
    assert lake.select_runs("d", "A", dates=["2026-01-01"]) == first


def test_explicit_run_id(lake):
    sel = lake.select_runs("d", "B", run_id="a1")
    assert [(r.date, r.run_id) for r in sel.runs] == [("2026-01-01", "a1")]
    with pytest.raises(NotFoundError, match="no committed run 'zz'"):
        lake.select_runs("d", "B", run_id="zz")
    with pytest.raises(NotFoundError, match="no committed run 'a1'"):
        lake.select_runs("d", "B", dates="2026-01-02", run_id="a1")


def test_runs_without_a_recorded_spec_are_used_without_a_note(tmp_path):
    lake = Lake(Store(str(tmp_path / "lake")))
    _run(lake, "2026-01-01", "old", None, "2026-01-01T10:00:00+00:00")
    sel = lake.select_runs("d", "B")
    assert [r.run_id for r in sel.runs] == ["old"] and sel.notes == ()
    with pytest.raises(NotFoundError, match="no ingested partitions"):
        lake.select_runs("nope", "B")
    with pytest.raises(NotFoundError, match="ingest_date=2026-02-01"):
        lake.select_runs("d", "B", dates="2026-02-01")


def test_run_files_are_one_runs_data(lake):
    (ref,) = lake.select_runs("d", "B", run_id="b2").runs
    files = lake.run_files(ref)
    assert len(files) == 1 and "/run=b2/" in files[0]
