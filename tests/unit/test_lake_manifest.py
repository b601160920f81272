"""The run manifest is one typed record the lake writes when it publishes a run and hands to readers."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skiff.errors import InvariantError
from skiff.lake import MANIFEST, QUARANTINE, Lake, RunRef
from skiff.manifest import PartFile, RunCounts, RunManifest
from skiff.storage import Store

# a manifest exactly as batch ingestion wrote it before the typed model (no status field)
OLD_INGEST = {
    "dataset": "meters", "run_id": "r1", "ingest_date": "2024-03-02", "fingerprint": "f" * 64,
    "spec_hash": "s" * 64, "sources": [{"type": "file", "path": "/data/m.csv", "files": [], "rows": 3,
                                        "counts": {"read": 3, "accepted": 3, "quarantined": 0, "duplicates": 0}}],
    "counts": {"read": 3, "accepted": 3, "quarantined": 0, "duplicates": 0}, "quarantine_reasons": {},
    "quarantine_top": [], "warnings": [], "imputed": {"kwh": {"strategy": "median", "value": None, "count": 0}},
    "schema": {"meter_id": "int64"}, "files": [{"name": "part-00000.parquet", "rows": 3, "sha256": "a" * 64}],
    "quarantine_file": "_quarantine.parquet", "content_hash": "c" * 64,
    "started_at": "2024-03-02T10:00:00+00:00", "finished_at": "2024-03-02T10:00:01+00:00",
    "skiff_version": "0.1.0", "cleaned_staging": [], "a_field_of_a_later_version": 1,
}


@pytest.fixture
def lake(tmp_path):
    return Lake(Store(str(tmp_path / "lake")))


def _hand_made(lake: Lake, run_id: str, manifest: dict | None) -> RunRef:
    with lake.publish_run("meters", run_id, "2024-03-02") as staged:
        pq.write_table(pa.table({"meter_id": [1]}), staged / "part-00000.parquet")
        if manifest is not None:
            (staged / MANIFEST).write_text(json.dumps(manifest))
    return staged.ref


def test_manifests_written_before_the_model_read_as_the_model(lake):
    ref = _hand_made(lake, "r1", OLD_INGEST)
    m = lake.manifest(ref)
    assert m.status == "committed" and m.counts == RunCounts(read=3, accepted=3)
    assert m.columns == {"meter_id": "int64"} and m.files[0].sha256 == "a" * 64
    assert m.imputed["kwh"].value is None and m.sources[0]["path"] == "/data/m.csv"
    assert lake.find_run("meters", "f" * 64) == ref
    # a hand-made run holding only a finish time: its identity comes from its folder
    bare = lake.manifest(_hand_made(lake, "r2", {"finished_at": "2024-03-02T11:00:00+00:00"}))
    assert (bare.dataset, bare.run_id, bare.ingest_date, bare.counts) == ("meters", "r2", "2024-03-02", None)
    selection = lake.select_runs("meters", "s" * 64)
    assert selection.runs == [ref] and selection.chosen[0].finished_at == OLD_INGEST["finished_at"]


def test_publish_writes_the_manifest_with_hashes_and_finish_time(lake):
    with lake.publish_run("meters", "r1", "2024-03-02") as staged:
        pq.write_table(pa.table({"meter_id": [1, 2]}), staged / "part-00000.parquet")
        staged.manifest = RunManifest(dataset="meters", run_id="r1", ingest_date="2024-03-02",
                                      counts=RunCounts(read=2, accepted=2), columns={"meter_id": "int64"},
                                      files=[PartFile(name="part-00000.parquet", rows=2)],
                                      started_at="2024-03-02T10:00:00+00:00")
    folder = lake.store.local_path(*staged.ref.parts)
    on_disk = json.loads((folder / MANIFEST).read_text())
    part_sha = hashlib.sha256((folder / "part-00000.parquet").read_bytes()).hexdigest()
    assert on_disk["files"] == [{"name": "part-00000.parquet", "rows": 2, "sha256": part_sha}]
    assert on_disk["content_hash"] == hashlib.sha256(json.dumps([part_sha]).encode()).hexdigest()
    assert on_disk["schema"] == {"meter_id": "int64"} and on_disk["status"] == "committed"
    assert on_disk["counts"] == {"read": 2, "accepted": 2, "quarantined": 0, "duplicates": 0}  # no "messages"
    assert "fingerprint" not in on_disk and on_disk["started_at"] < on_disk["finished_at"]
    assert lake.manifest(staged.ref) == staged.manifest


def test_publish_refuses_a_manifest_of_another_run_and_commits_nothing(lake):
    with pytest.raises(InvariantError, match="staged as meters/r1"), \
            lake.publish_run("meters", "r1", "2024-03-02") as staged:
        staged.manifest = RunManifest(dataset="meters", run_id="r9", ingest_date="2024-03-02")
    assert lake.all_runs("meters") == []


def test_a_failed_run_is_kept_apart_with_its_quarantine_and_read_through_the_lake(lake, tmp_path):
    quarantine = tmp_path / "q.parquet"
    pq.write_table(pa.table({"_reason": ["missing"]}), quarantine)
    uri = lake.keep_failed_run(RunManifest(dataset="meters", run_id="bad", ingest_date="2024-03-02",
                                           counts=RunCounts(read=1, quarantined=1), accepted_fraction=0.0,
                                           min_accepted_fraction=0.5), quarantine)
    assert uri == lake.store.uri("failed", "meters", "run=bad", QUARANTINE) and not quarantine.exists()
    m = lake.failed_manifest("meters", "bad")
    assert m.status == "failed" and m.quarantine_file == QUARANTINE and m.finished_at
    assert (m.counts.quarantined, m.min_accepted_fraction) == (1, 0.5)
    assert lake.datasets() == [] and lake.all_runs("meters") == []  # readers of raw/ never see it
