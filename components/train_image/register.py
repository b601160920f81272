"""Registration of an image classifier: an immutable model version with the label map and preprocessing.

The version holds ``model.keras``, the SavedModel as ``saved_model.tar.gz`` (a version's files are flat),
``label_map.json``, ``preprocessing.json``, ``training.json``, the evaluation report and confusion matrix.
Its metadata (:class:`skiff.registry.VersionMetadata`, flavor ``tensorflow``) records the classes, the test
metrics, the gate, the training phases and, under ``extra``, the preprocessing and the label map the model
server applies. Every trained model is registered; it becomes the champion when the gate said so.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from components.train_image.evaluate import CONFUSION_FILE, REPORT_FILE, ImageEvaluation
from components.train_image.logic import (
    LABEL_MAP_FILE,
    MODEL_FILE,
    PREPROCESSING_FILE,
    SAVED_MODEL_DIR,
    TRAINING_FILE,
)
from skiff.registry import ModelRegistry, VersionMetadata

__all__ = ["register_image_model", "SAVED_MODEL_ARCHIVE"]

SAVED_MODEL_ARCHIVE = "saved_model.tar.gz"


def register_image_model(registry: ModelRegistry, name: str, model_dir: Path, eval_dir: Path,
                         evaluation: ImageEvaluation, *, dataset: dict[str, Any], margin: float = 0.0,
                         pipeline_run_id: str | None = None) -> dict[str, Any]:
    model_dir, eval_dir = Path(model_dir), Path(eval_dir)
    training = json.loads((model_dir / TRAINING_FILE).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / SAVED_MODEL_ARCHIVE
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(model_dir / SAVED_MODEL_DIR, arcname=SAVED_MODEL_DIR)
        files = {MODEL_FILE: model_dir / MODEL_FILE, SAVED_MODEL_ARCHIVE: archive,
                 LABEL_MAP_FILE: model_dir / LABEL_MAP_FILE, PREPROCESSING_FILE: model_dir / PREPROCESSING_FILE,
                 TRAINING_FILE: model_dir / TRAINING_FILE, REPORT_FILE: eval_dir / REPORT_FILE,
                 CONFUSION_FILE: eval_dir / CONFUSION_FILE}
        config = training["config"]
        meta = VersionMetadata(
            name=name, flavor="tensorflow", problem_type="image_classification", estimator=config["backbone"],
            params=config, classes=evaluation.classes, features=["image"], input_schema={"image": "bytes"},
            metrics=evaluation.metrics,
            gate={"metric": "top1_accuracy", "margin": margin, "promote": evaluation.promote,
                  "reason": evaluation.reason, "champion": evaluation.champion},
            dataset=dataset, data_fingerprint=dataset.get("content_hash"), pipeline_run_id=pipeline_run_id,
            extra={"preprocessing": training["preprocessing"], "label_map": {"classes": evaluation.classes},
                   "phases": training["phases"], "device": training["device"], "per_class": evaluation.per_class,
                   "confusion": evaluation.confusion, "counts": training["counts"],
                   "model_files": {"keras": MODEL_FILE, "saved_model": SAVED_MODEL_ARCHIVE}})
        # a file flavor: the model is model.keras among the files, nothing is pickled
        version = registry.register(name, None, meta, files)
    champion = False
    if evaluation.promote:
        registry.set_champion(name, version.version, evaluation.reason)
        champion = True
    return {"name": name, "version": version.version, "uri": version.uri, "champion": champion,
            "reason": evaluation.reason}
