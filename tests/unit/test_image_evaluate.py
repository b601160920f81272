"""Evaluation of an image model: metrics, the confusion-matrix PNG, a self-contained report that escapes class
names, and the gate against a champion scored on the same test images."""

import json

import pytest

pytest.importorskip("tensorflow")

from PIL import Image  # noqa: E402

from components.train_image.evaluate import CONFUSION_FILE, REPORT_FILE, evaluate_image_model  # noqa: E402
from components.train_image.logic import LABEL_MAP_FILE, MODEL_FILE, PREPROCESSING_FILE, SPLIT_FILE  # noqa: E402
from components.train_image.model import build_model  # noqa: E402
from skiff.datagen_images import image_set  # noqa: E402
from skiff.image_data import LabelMap, Preprocessing  # noqa: E402

CLASSES = ["<b>bold</b>", "a & b", "größe"]


@pytest.fixture
def model_dir(tmp_path):
    image_set(tmp_path / "imgs", classes=("circle", "square", "triangle"), per_class=4, size=32)
    names = dict(zip(("circle", "square", "triangle"), CLASSES, strict=True))
    test = [{"path": str(p), "label": names[p.parent.name], "split": "test"}
            for p in sorted((tmp_path / "imgs").rglob("*.*"))]
    out = tmp_path / "model"
    out.mkdir()
    build_model("TinyConvNet", 3, image_size=32, weights="").save(out / MODEL_FILE)
    (out / LABEL_MAP_FILE).write_text(LabelMap(classes=sorted(CLASSES)).model_dump_json())
    (out / PREPROCESSING_FILE).write_text(Preprocessing(height=32, width=32).model_dump_json())
    (out / SPLIT_FILE).write_text(json.dumps({"train": [], "val": [], "test": test}))
    return out


def test_metrics_png_and_an_escaped_self_contained_report(model_dir, tmp_path):
    ev = evaluate_image_model(model_dir, tmp_path / "eval", top_k=2, examples=3)
    assert set(ev.metrics) == {"top1_accuracy", "top2_accuracy", "macro_f1"}
    assert ev.metrics["top2_accuracy"] >= ev.metrics["top1_accuracy"]
    assert sum(map(sum, ev.confusion)) == 12 and ev.classes == sorted(CLASSES)
    assert len(ev.misclassified) <= 3 and all(m["true"] != m["predicted"] for m in ev.misclassified)
    assert ev.promote and ev.champion is None
    with Image.open(tmp_path / "eval" / CONFUSION_FILE) as png:
        assert png.format == "PNG" and png.size[0] > 100
    report = (tmp_path / "eval" / REPORT_FILE).read_text(encoding="utf-8")
    assert "<b>bold</b>" not in report and "&lt;b&gt;bold&lt;/b&gt;" in report and "a &amp; b" in report
    assert "größe" in report and "http" not in report  # nothing fetched at view time


def test_the_champion_is_scored_on_the_same_images_and_a_tie_keeps_it(model_dir, tmp_path):
    ev = evaluate_image_model(model_dir, tmp_path / "eval", champion_dir=model_dir, champion_version=4)
    assert ev.champion == {"version": 4, "top1_accuracy": ev.metrics["top1_accuracy"]}
    assert ev.promote is False and "same 12 test images" in ev.reason
