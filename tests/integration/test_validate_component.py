"""The validation component under kfp.local: a real TFDV run, its artifacts, and a dsl.If gate on ``passed``."""

import json
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kfp import dsl, local
from kfp.dsl import HTML, Artifact, Dataset, Output

from components._image import BASE_IMAGE
from components.validate.component import validate
from components.validate.logic import resolve_tfdv_python
from skiff.config import load_settings
from skiff.errors import EnvironmentMissing
from skiff.lake import Lake
from skiff.spec_text import spec_to_text
from skiff.storage import Store

pytestmark = [pytest.mark.tfdv, pytest.mark.integration, pytest.mark.slow]

SPEC = {
    "name": "plans",
    "entity_key": "id",
    "columns": {
        "id": {"type": "string", "required": True, "unique": True},
        "plan": {"type": "category", "allowed": ["basic", "pro"]},
        "seats": {"type": "integer", "min": 1},
    },
}
DATE = "2026-04-01"


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def announce_partition(dataset: str, ingest_date: str, partition: Output[Dataset]):
    """Stands in for the ingest step: the run manifest and the metadata validate reads."""
    import json

    with open(partition.path, "w") as f:
        json.dump({"dataset": dataset, "ingest_date": ingest_date, "run_id": "run1"}, f)
    partition.metadata.update({"dataset": dataset, "ingest_date": ingest_date, "run_id": "run1"})


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def mark(path: str, text: str):
    with open(path, "w") as f:
        f.write(text)


class GateOutputs(NamedTuple):
    report: HTML
    statistics: Artifact
    blocking: int


@dsl.pipeline
def gate(spec: str, lake_uri: str, marker: str) -> GateOutputs:
    announced = announce_partition(dataset="plans", ingest_date=DATE)
    checked = validate(ingested=announced.outputs["partition"], spec=spec, lake_uri=lake_uri)
    with dsl.If(checked.outputs["passed"] == True):  # noqa: E712 - a KFP condition, not a Python test
        mark(path=marker, text="passed")
    with dsl.Else():
        mark(path=marker, text="blocked")
    return GateOutputs(checked.outputs["report"], checked.outputs["statistics"], checked.outputs["blocking"])


def test_component_reports_and_gates(tmp_path, monkeypatch):
    try:
        resolve_tfdv_python(load_settings().tfdv_python)
    except EnvironmentMissing as e:  # a laptop without `make setup`
        pytest.skip(f"TFDV environment missing: {e.message}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SKIFF_CONFIG", raising=False)
    lake = Lake(Store(str(tmp_path / "lake")))
    frame = pd.DataFrame({"id": [f"u{i}" for i in range(200)],
                          "plan": ["basic", "pro"] * 95 + ["enterprise"] * 10,  # 5 % outside 'allowed'
                          "seats": list(range(1, 201))})
    with lake.publish_run("plans", "run1", DATE) as staging:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), staging / "part-00000.parquet")

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               raise_on_error=True)
    marker = tmp_path / "marker.txt"
    run = gate(spec=spec_to_text(SPEC), lake_uri=str(tmp_path / "lake"), marker=str(marker))

    # the spec's domain applies from the first run: the partition is blocked, and the gate takes Else
    assert marker.read_text() == "blocked"
    assert run.outputs["blocking"] == 1
    report = run.outputs["report"]
    page = Path(report.path).read_text()
    assert "enterprise" in page and "<td>plan</td>" in page and "<script" not in page
    assert report.metadata["status"] == "failed" and report.metadata["ingest_date"] == DATE
    stats = run.outputs["statistics"]
    assert Path(stats.path).stat().st_size > 0
    assert stats.metadata["blocking"] == ["plan: ENUM_TYPE_UNEXPECTED_STRING_VALUES"]
    assert [r["run_id"] for r in stats.metadata["runs"]] == ["run1"]  # the runs validated, for the summary
    result = json.loads(lake.store.read_text("validation", "plans", f"ingest_date={DATE}", "result.json"))
    assert result["status"] == "failed" and result["schema_inferred"] is True
