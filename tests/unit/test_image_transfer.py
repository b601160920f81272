"""Transfer learning through the artifact store: a backbone trained on one generated task is saved as a
.weights.h5 file, loaded by URI for another task, and its frozen features beat random ones there."""

from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

import keras  # noqa: E402

from components.train_image.logic import MODEL_FILE, TrainImageConfig, train_image  # noqa: E402
from components.train_image.model import save_backbone_weights  # noqa: E402
from skiff.datagen_images import image_set  # noqa: E402

_QUICK = {"backbone": "TinyConvNet", "image_size": 32, "batch_size": 32, "head_lr": 3e-3, "fine_tune_lr": 5e-3,
          "fine_tune_layers": 100, "patience": 6, "threads": 1, "augment": False}


def _rows(root: Path) -> list[dict]:
    return [{"path": str(p), "label": p.parent.name, "split": "", "sha256": ""} for p in sorted(root.rglob("*.*"))]


@pytest.mark.timeout(300)
def test_a_backbone_pretrained_on_one_task_transfers_to_another_through_a_weights_uri(tmp_path):
    image_set(tmp_path / "a", classes=("circle", "square", "triangle"), per_class=60, size=32, seed=1)
    image_set(tmp_path / "b", classes=("cross", "stripes", "circle"), per_class=40, size=32, seed=2)
    source = train_image(_rows(tmp_path / "a"), tmp_path / "source",
                         TrainImageConfig(**_QUICK, weights="", head_epochs=3, fine_tune_epochs=25))
    assert source.phases["fine_tune"]["test_accuracy"] > 0.6
    uri = save_backbone_weights(keras.models.load_model(tmp_path / "source" / MODEL_FILE),
                                f"file://{tmp_path}/store/backbones/tiny-shapes.weights.h5")
    head_only = {**_QUICK, "head_epochs": 12, "fine_tune_epochs": 0}
    transferred = train_image(_rows(tmp_path / "b"), tmp_path / "transferred", TrainImageConfig(**head_only, weights=uri))
    scratch = train_image(_rows(tmp_path / "b"), tmp_path / "scratch", TrainImageConfig(**head_only, weights=""))
    assert set(transferred.phases) == {"head"}  # no fine-tuning: the frozen pretrained features alone
    assert transferred.phases["head"]["test_accuracy"] > scratch.phases["head"]["test_accuracy"] + 0.15, \
        (transferred.phases, scratch.phases)
