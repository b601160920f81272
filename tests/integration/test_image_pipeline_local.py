"""The image pipeline end to end under kfp.local (SubprocessRunner) on the CPU: generated shapes with broken
files are ingested, a small backbone is trained in two phases, evaluated and registered as the champion;
fine-tuning beats the frozen-backbone phase; a second run is judged against that champion on its test images."""

import json
import os

import pytest

pytest.importorskip("tensorflow")

from pipelines.definitions import get_pipeline  # noqa: E402
from pipelines.runner import run_local  # noqa: E402
from skiff.config import Settings  # noqa: E402
from skiff.datagen_images import image_set  # noqa: E402
from skiff.registry import ModelRegistry  # noqa: E402
from skiff.spec import DatasetSpec  # noqa: E402
from skiff.storage import Store  # noqa: E402

#: small and quick on two busy cores: 32x32 images, a tiny backbone from random weights, one TF thread; no
#: augmentation: its random draws in tf.data's parallel map follow thread scheduling, so on a loaded machine
#: a run could differ from the last (the phases' comparison below must not depend on the machine's load)
TRAIN = {"backbone": "TinyConvNet", "weights": "", "image_size": 32, "batch_size": 32, "head_epochs": 4,
         "head_lr": 3e-3, "fine_tune_epochs": 25, "fine_tune_lr": 5e-3, "fine_tune_layers": 100, "patience": 6,
         "threads": 1, "augment": False}


@pytest.mark.timeout(600)
def test_image_pipeline_ingests_trains_in_two_phases_evaluates_and_registers(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    wrote = image_set(tmp_path / "data", per_class=60, size=32, broken=True)
    settings = Settings(root=str(tmp_path / "root"))
    spec = DatasetSpec.model_validate({"name": "shapes", "entity_key": "path",
                                       "columns": {"path": {"type": "string"}, "label": {"type": "string"}}})
    definition = get_pipeline("image")
    params = {"data": str(tmp_path / "data"), "train_config": TRAIN}
    run = run_local("image", {**definition.arguments(spec, params, settings, local=True), "run_id": "run-1"},
                    tmp_path / "runs")
    summary = definition.summarize(run, settings)
    assert summary["status"] == "SUCCESS", summary["error"]
    assert summary["registered"]["version"] == 1 and summary["registered"]["champion"] is True
    assert any(line.startswith("train fine_tune:") for line in definition.summary_lines(summary))
    models = tmp_path / "root" / "models"
    registry = ModelRegistry(Store(str(models)))
    assert registry.version_numbers("shapes") == [1] and registry.champion_version("shapes") == 1
    mv = registry.get("shapes", 1)
    meta = mv.metadata
    assert meta.flavor == "tensorflow" and meta.classes == ["circle", "square", "triangle"]
    phases = meta.extra["phases"]
    assert phases["fine_tune"]["val_accuracy"] > phases["head"]["val_accuracy"], phases
    assert phases["fine_tune"]["test_accuracy"] > phases["head"]["test_accuracy"], phases
    assert phases["fine_tune"]["trainable_backbone_layers"] > 0
    assert meta.metrics["top1_accuracy"] == pytest.approx(phases["fine_tune"]["test_accuracy"], abs=1e-6)
    assert meta.metrics["top3_accuracy"] == 1.0  # three classes: the true one is always in the top 3
    assert meta.extra["preprocessing"]["height"] == 32 and meta.extra["label_map"]["classes"] == meta.classes
    assert meta.extra["device"]["gpus"] == 0 and meta.extra["device"]["mixed_precision"] is False
    assert meta.pipeline_run_id == "run-1" and meta.dataset["run_id"] == "run-1"
    assert {"model.keras", "saved_model.tar.gz", "report.html", "confusion_matrix.png", "label_map.json",
            "preprocessing.json"} <= set(meta.files)
    report = (models / "shapes" / "1" / "report.html").read_text()
    assert "data:image/png;base64," in report and "Per class" in report
    # the ingest step's own record: every broken file quarantined, the counts reconcile
    lake_manifest = next((tmp_path / "root" / "lake" / "raw" / "shapes").glob("*/run=run-1/_manifest.json"))
    manifest = json.loads(lake_manifest.read_text())
    c = manifest["counts"]
    assert c["read"] == c["accepted"] + c["quarantined"] + c["duplicates"]
    assert c["quarantined"] == len(wrote.quarantined) and c["accepted"] == wrote.good

    # the same images again: ingestion names the first run, and the second model meets the first as champion
    second = run_local("image", {**definition.arguments(spec, {**params, "margin": 0.5}, settings, local=True),
                                 "run_id": "run-2"}, tmp_path / "runs")
    assert second.status == "SUCCESS" and registry.version_numbers("shapes") == [1, 2]
    gate = registry.get("shapes", 2).metadata.gate
    assert gate["champion"]["version"] == 1 and "same" in gate["reason"]
    assert registry.champion_version("shapes") == 1
    assert os.path.exists(models / "shapes" / "2" / "model.keras")
