"""Benchmark: images/s of the train_image step's training loop against a plain ``model.fit``, same run.

Generates a synthetic image set in a temporary folder, builds one ``tf.data`` input with the step's own
:func:`components.train_image.data.make_dataset` (decode, resize, cache, augment, prefetch), and trains the
same Keras classifier (fresh copies with the same initial weights) two ways, alternating, each timed from
compile to the end of fit (what a training phase costs: both trace once); a warm-up pass fills the data cache:

- the step's loop: :func:`components.train_image.logic._fit` (compile with ``jit_compile="auto"``, class
  weights, early stopping on the validation accuracy with the best weights restored);
- the floor: ``model.compile`` + ``model.fit(train, validation_data=val)`` with nothing else.

It prints images/s of both and their ratio (target >= 0.9). With ``--mixed-precision both`` on a GPU it
also times the step with mixed precision on and off. ``--out FILE`` writes the numbers as JSON with the
device named.

    python bench/train_image.py                                   # TinyConvNet, 32 px, CPU-sized
    python bench/train_image.py --backbone MobileNetV3Small --size 96 --per-class 300 --mixed-precision both
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TARGET_RATIO = 0.9


def _device() -> dict[str, object]:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    names = []
    for g in gpus:
        try:
            names.append(tf.config.experimental.get_device_details(g).get("device_name", g.name))
        except (RuntimeError, ValueError):
            names.append(g.name)
    return {"gpus": names, "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="TinyConvNet")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each way")
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow CPU threads (0: its default)")
    parser.add_argument("--mixed-precision", choices=["off", "both"], default="off")
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args()

    import keras
    import numpy as np

    from components.train_image.data import class_weights, make_dataset, split_images
    from components.train_image.logic import _fit, configure_tensorflow
    from components.train_image.model import build_model, set_phase
    from skiff.datagen_images import image_set
    from skiff.image_data import Preprocessing

    configure_tensorflow(opts.threads)
    with tempfile.TemporaryDirectory() as tmp:
        classes = ("circle", "square", "triangle", "cross")
        image_set(tmp, classes=classes, per_class=opts.per_class, size=opts.size)
        rows = [{"path": str(p), "label": p.parent.name, "split": ""} for p in sorted(Path(tmp).rglob("*.*"))]
        parts = split_images(rows, val_fraction=0.1, test_fraction=0.1, seed=0)
        index = {c: i for i, c in enumerate(sorted(classes))}
        pre = Preprocessing(height=opts.size, width=opts.size)
        y_train = [index[r["label"]] for r in parts["train"]]
        train = make_dataset([r["path"] for r in parts["train"]], y_train, pre, batch_size=opts.batch_size,
                             training=True)
        val = make_dataset([r["path"] for r in parts["val"]], [index[r["label"]] for r in parts["val"]], pre,
                           batch_size=opts.batch_size, training=False)
        weights = class_weights(y_train, len(classes))
        n = len(parts["train"]) * opts.epochs

        def fresh(policy: str):
            keras.mixed_precision.set_global_policy(policy)
            keras.utils.set_random_seed(0)
            model = build_model(opts.backbone, len(classes), image_size=opts.size, weights="", alpha=0.75)
            set_phase(model, "fine_tune", 1000)
            return model

        def step_loop(policy: str) -> float:
            model = fresh(policy)
            t = time.perf_counter()
            _fit(model, train, val, epochs=opts.epochs, lr=1e-3, patience=opts.epochs + 1, weights=weights)
            return n / (time.perf_counter() - t)

        def plain_fit(policy: str) -> float:
            model = fresh(policy)
            t = time.perf_counter()
            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                          metrics=["accuracy"])
            model.fit(train, validation_data=val, epochs=opts.epochs, verbose=0)
            return n / (time.perf_counter() - t)

        for _ in train:  # fill the tf.data cache (decode once) before anything is timed
            pass
        for _ in val:
            pass
        step, plain = [], []
        for _ in range(opts.rounds):
            step.append(step_loop("float32"))
            plain.append(plain_fit("float32"))
        result: dict[str, object] = {
            "backbone": opts.backbone, "size": opts.size, "train_images": len(parts["train"]),
            "epochs": opts.epochs, "batch_size": opts.batch_size, "device": _device(),
            "step_images_per_s": round(float(np.median(step)), 1),
            "plain_fit_images_per_s": round(float(np.median(plain)), 1),
        }
        result["ratio"] = round(result["step_images_per_s"] / result["plain_fit_images_per_s"], 3)  # type: ignore[operator]
        if opts.mixed_precision == "both":
            mixed = [step_loop("mixed_float16") for _ in range(opts.rounds)]
            result["step_mixed_precision_images_per_s"] = round(float(np.median(mixed)), 1)
            result["mixed_over_float32"] = round(float(np.median(mixed)) / result["step_images_per_s"], 3)  # type: ignore[operator]
            keras.mixed_precision.set_global_policy("float32")
    print(f"train_image step loop: {result['step_images_per_s']} images/s; plain model.fit: "
          f"{result['plain_fit_images_per_s']} images/s; ratio {result['ratio']} (target >= {TARGET_RATIO})")
    if "mixed_over_float32" in result:
        print(f"mixed precision: {result['step_mixed_precision_images_per_s']} images/s "
              f"({result['mixed_over_float32']}x float32)")
    print(json.dumps(result))
    if opts.out:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps(result, indent=2))
    return 0 if result["ratio"] >= TARGET_RATIO else 1  # type: ignore[operator]


if __name__ == "__main__":
    raise SystemExit(main())
