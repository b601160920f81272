"""The ingest component under kfp.local: the manifest artifact, its metadata and the outputs."""

import json
from pathlib import Path

import pytest
from kfp import compiler, local

from components.ingest.component import ingest_op
from skiff.lake import Lake
from skiff.storage import Store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPEC = {
    "name": "plans",
    "entity_key": "id",
    "columns": {
        "id": {"type": "string", "required": True},
        "plan": {"type": "category", "allowed": ["basic", "pro"]},
        "seats": {"type": "integer", "min": 1},
    },
}


def test_component_ingests_and_describes_the_partition(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SKIFF_CONFIG", raising=False)
    src = tmp_path / "plans.csv"
    src.write_text("id,plan,seats\nu1,basic,3\nu2,pro,0\nu3,enterprise,2\nu4,pro,10\n")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               raise_on_error=True)
    task = ingest_op(spec=json.dumps(SPEC),  # the steps' spec parameter is JSON text
                     sources=[str(src)], lake_uri=str(tmp_path / "lake"), run_id="kfp-run-1",
                     ingest_date="2026-04-01")

    assert task.outputs["status"] == "ingested"
    assert task.outputs["ingest_date"] == "2026-04-01"
    part = tmp_path / "lake" / "raw" / "plans" / "ingest_date=2026-04-01" / "run=kfp-run-1"
    assert task.outputs["partition_uri"] == str(part)
    artifact = task.outputs["manifest"]
    manifest = json.loads(Path(artifact.path).read_text())
    assert manifest == json.loads((part / "_manifest.json").read_text())
    assert artifact.metadata["counts"] == {"read": 4, "accepted": 2, "quarantined": 2, "duplicates": 0}
    assert artifact.metadata["dataset"] == "plans" and artifact.metadata["run_id"] == "kfp-run-1"
    assert artifact.metadata["ingest_date"] == "2026-04-01"
    assert artifact.metadata["quarantine_reasons"] == {"below_min": 1, "not_allowed": 1}
    assert Lake(Store(str(tmp_path / "lake"))).read("plans").column("id").to_pylist() == ["u1", "u4"]


def test_component_compiles_with_its_image_and_without_a_kfp_install(tmp_path):
    out = tmp_path / "ingest.yaml"
    compiler.Compiler().compile(ingest_op, str(out))
    text = out.read_text()
    from components._image import BASE_IMAGE

    assert f"image: {BASE_IMAGE}" in text
    assert "pip install" not in text  # install_kfp_package=False: the image (or the venv) has kfp
