"""Evaluation of a trained image classifier on its held-out test images, and the champion/challenger gate.

Metrics: top-1 and top-k accuracy, per-class precision/recall/F1 and support, the confusion matrix (rows:
true class, columns: predicted) as numbers and as a PNG, and a self-contained HTML report (the PNG and a few
misclassified images inline as base64, nothing fetched at view time). The champion, when there is one with
the same classes, is scored on the same test images: the challenger is promoted when its top-1 accuracy beats
the champion's by more than ``margin``.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from components.train_image.data import localize, make_dataset
from components.train_image.logic import LABEL_MAP_FILE, MODEL_FILE, PREPROCESSING_FILE, SPLIT_FILE
from skiff.image_data import LabelMap, Preprocessing

__all__ = ["ImageEvaluation", "evaluate_image_model", "score", "confusion_png", "REPORT_FILE", "CONFUSION_FILE"]

REPORT_FILE = "report.html"
CONFUSION_FILE = "confusion_matrix.png"
METRICS_FILE = "metrics.json"


class ImageEvaluation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metrics: dict[str, float]  # top1_accuracy, top{k}_accuracy, macro_f1
    per_class: dict[str, dict[str, float]]  # class -> precision, recall, f1, support
    confusion: list[list[int]]
    classes: list[str]
    misclassified: list[dict[str, Any]]  # path, true, predicted, score
    champion: dict[str, Any] | None  # version and its top-1 accuracy on the same test images
    promote: bool
    reason: str


def _load(model_dir: Path) -> tuple[Any, LabelMap, Preprocessing]:
    import keras

    model = keras.models.load_model(model_dir / MODEL_FILE)
    labels = LabelMap.model_validate_json((model_dir / LABEL_MAP_FILE).read_text())
    pre = Preprocessing.model_validate_json((model_dir / PREPROCESSING_FILE).read_text())
    return model, labels, pre


def _probabilities(model: Any, paths: list[str], y: list[int], pre: Preprocessing) -> np.ndarray:
    ds = make_dataset(paths, y, pre, batch_size=64, training=False)
    return np.asarray(model.predict(ds, verbose=0), np.float64)


def score(probs: np.ndarray, y: np.ndarray, classes: list[str], top_k: int) -> dict[str, Any]:
    """top-1/top-k accuracy, macro F1, per-class P/R/F1 and the confusion matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    k = max(1, min(top_k, len(classes)))
    pred = probs.argmax(axis=1)
    top = np.argsort(-probs, axis=1)[:, :k]
    labels = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    return {
        "metrics": {"top1_accuracy": float((pred == y).mean()), f"top{k}_accuracy": float((top == y[:, None]).any(1).mean()),
                    "macro_f1": float(np.mean(f))},
        "per_class": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": float(s[i])}
                      for i, c in enumerate(classes)},
        "confusion": confusion_matrix(y, pred, labels=labels).tolist(),
    }


def confusion_png(confusion: list[list[int]], classes: list[str], path: Path) -> Path:
    """The confusion matrix as a heat map with counts (rows true, columns predicted)."""
    from PIL import Image, ImageDraw

    n = len(classes)
    cell, margin = 48, 110
    img = Image.new("RGB", (margin + n * cell + 10, margin + n * cell + 10), "white")
    pen = ImageDraw.Draw(img)
    top = max(1, max(max(row) for row in confusion))
    for i, row in enumerate(confusion):
        pen.text((4, margin + i * cell + cell // 3), classes[i][:16], fill="black")
        for j, v in enumerate(row):
            shade = int(255 - 200 * v / top)
            x, y = margin + j * cell, margin + i * cell
            pen.rectangle((x, y, x + cell - 2, y + cell - 2), fill=(shade, shade, 255))
            pen.text((x + cell // 3, y + cell // 3), str(v), fill="black" if shade > 120 else "white")
    for j, c in enumerate(classes):
        pen.text((margin + j * cell + 2, margin - 16 - 12 * (j % 2)), c[:8], fill="black")
    pen.text((margin, 6), "predicted →", fill="black")
    pen.text((4, margin - 40), "true ↓", fill="black")
    img.save(path, "PNG")
    return path


def _thumbnail(path: str) -> str:
    from PIL import Image

    with Image.open(path) as opened:
        im = opened.convert("RGB")
        im.thumbnail((96, 96))
        buf = io.BytesIO()
        im.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _report(ev: ImageEvaluation, local_paths: dict[str, str], png: Path) -> str:
    e = html.escape
    rows = "".join(f"<tr><td>{e(c)}</td>" + "".join(f"<td>{m[k]:.3f}</td>" for k in ("precision", "recall", "f1"))
                   + f"<td>{int(m['support'])}</td></tr>" for c, m in ev.per_class.items())
    metrics = "".join(f"<tr><td>{e(k)}</td><td>{v:.4f}</td></tr>" for k, v in ev.metrics.items())
    wrong = "".join(
        f"<figure><img src='data:image/png;base64,{_thumbnail(local_paths[m['path']])}' alt=''>"
        f"<figcaption>true {e(m['true'])}, predicted {e(m['predicted'])} ({m['score']:.2f})<br>"
        f"<small>{e(m['path'])}</small></figcaption></figure>" for m in ev.misclassified)
    champion = (f"champion v{ev.champion['version']}: top-1 {ev.champion['top1_accuracy']:.4f}" if ev.champion
                else "no champion with the same classes")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Image model evaluation</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}figure{display:inline-block;margin:8px;width:180px}</style>"
        "</head><body><h1>Image model evaluation</h1>"
        f"<p>Gate: {'promote' if ev.promote else 'keep the champion'} — {e(ev.reason)} ({e(champion)})</p>"
        f"<h2>Metrics</h2><table>{metrics}</table>"
        f"<h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
        f"<th>support</th></tr>{rows}</table>"
        f"<h2>Confusion matrix</h2><img alt='confusion matrix' src='data:image/png;base64,"
        f"{base64.b64encode(png.read_bytes()).decode()}'>"
        f"<h2>Misclassified examples</h2>{wrong or '<p>none</p>'}</body></html>")


def evaluate_image_model(model_dir: Path, out_dir: Path, *, top_k: int = 3, champion_dir: Path | None = None,
                         champion_version: int | None = None, margin: float = 0.0, examples: int = 8,
                         storage_options: dict[str, Any] | None = None) -> ImageEvaluation:
    """Score the model in ``model_dir`` on its test images; write ``report.html``, ``confusion_matrix.png``
    and ``metrics.json`` to ``out_dir``."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, labels, pre = _load(model_dir)
    test = json.loads((model_dir / SPLIT_FILE).read_text())["test"]
    index = labels.index()
    y = np.asarray([index[r["label"]] for r in test])
    paths = localize(test, out_dir / ".cache", storage_options)
    probs = _probabilities(model, paths, y.tolist(), pre)
    scored = score(probs, y, labels.classes, top_k)
    top1 = scored["metrics"]["top1_accuracy"]
    champion: dict[str, Any] | None = None
    if champion_dir is not None:
        champ_model, champ_labels, champ_pre = _load(Path(champion_dir))
        if champ_labels.classes == labels.classes:
            champ_probs = _probabilities(champ_model, paths, y.tolist(), champ_pre)
            champion = {"version": champion_version,
                        "top1_accuracy": float((champ_probs.argmax(1) == y).mean())}
    if champion is None:
        promote, reason = True, "no champion with these classes: the first model is the champion"
    else:
        promote = top1 > float(champion["top1_accuracy"]) + margin
        reason = (f"top-1 accuracy {top1:.4f} vs the champion's {champion['top1_accuracy']:.4f} on the same "
                  f"{len(test)} test images (margin {margin})")
    pred = probs.argmax(1)
    wrong = [i for i in np.argsort(-probs.max(1)) if pred[i] != y[i]][:examples]
    ev = ImageEvaluation(
        **scored, classes=labels.classes, champion=champion, promote=promote, reason=reason,
        misclassified=[{"path": test[i]["path"], "true": labels.classes[y[i]], "predicted": labels.classes[pred[i]],
                        "score": float(probs[i].max())} for i in wrong])
    png = confusion_png(ev.confusion, ev.classes, out_dir / CONFUSION_FILE)
    local = {test[i]["path"]: paths[i] for i in range(len(test))}
    (out_dir / REPORT_FILE).write_text(_report(ev, local, png), encoding="utf-8")
    (out_dir / METRICS_FILE).write_text(ev.model_dump_json(indent=2))
    return ev
