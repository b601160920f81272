"""Transfer learning of an image classifier in two phases, on the images of one lake run.

1. **head**: the backbone frozen, the new head trained (``head_lr``, ``head_epochs``);
2. **fine_tune**: the top ``fine_tune_layers`` layers of the backbone unfrozen (BatchNormalization kept in
   inference mode) at a lower learning rate — cosine decay with a linear warm-up — for ``fine_tune_epochs``.

Both phases stop early on the validation accuracy and keep their best weights: the exported model is the
best epoch of the last phase, and the test accuracy after each phase is recorded so a run shows what
fine-tuning added. Classes are weighted by inverse frequency. The schedule (phases, learning rates, early
stopping) lives in :mod:`components.train_image.phases`, shared by both training loops below.

On a GPU, and only there, the step trains in mixed precision (float16 compute, float32 head) under a
``MirroredStrategy`` over the node's GPUs with the batch size scaled by their number; Keras compiles with
XLA where it can (``jit_compile="auto"``). On a CPU the same code runs in float32 on the default strategy.
One process trains with ``model.fit``. Past one node (a TFJob: :mod:`components.train_image.tfjob`),
``TF_CONFIG`` names the workers and the run trains under ``MultiWorkerMirroredStrategy`` with the custom
loop of :mod:`components.train_image.distributed` (Keras 3's ``fit`` cannot run there), the global batch
being the per-replica batch times the replicas of every worker, each worker reading its own shard of the
images. Every worker saves the model (non-chief workers into a temporary folder they remove); only the
chief (worker 0) writes the output folder.

The output folder holds ``model.keras``, ``saved_model/`` (a TensorFlow SavedModel with a ``serve``
signature), ``label_map.json``, ``preprocessing.json``, ``split.json`` (the test images, for evaluation)
and ``training.json`` (config, phases, history).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from components.train_image.data import class_weights, localize, make_dataset, split_images
from components.train_image.distributed import DistributedTrainer
from components.train_image.model import BACKBONES, build_model, set_phase
from components.train_image.phases import BestEpoch, learning_rate, phase_plan, steps_per_epoch
from skiff.errors import ConfigError
from skiff.image_data import LabelMap, Preprocessing

log = logging.getLogger(__name__)

__all__ = ["TrainImageConfig", "TrainImageResult", "train_image", "configure_tensorflow", "device_setup",
           "is_chief", "tf_config_workers", "weights_digest", "MODEL_FILE", "SAVED_MODEL_DIR", "LABEL_MAP_FILE",
           "PREPROCESSING_FILE", "SPLIT_FILE", "TRAINING_FILE"]

MODEL_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
LABEL_MAP_FILE = "label_map.json"
PREPROCESSING_FILE = "preprocessing.json"
SPLIT_FILE = "split.json"
TRAINING_FILE = "training.json"


class TrainImageConfig(BaseModel):
    """How to train (the step's ``config`` parameter)."""

    model_config = ConfigDict(extra="forbid")

    backbone: Literal["MobileNetV3Small", "MobileNetV3Large", "EfficientNetV2B0", "ResNet50", "TinyConvNet"] = \
        Field(default="MobileNetV3Small", description=f"One of {', '.join(BACKBONES)}.")
    weights: str | None = Field(default="imagenet", description="imagenet, empty/None (random), or a "
                                "backbone .weights.h5 file URI (air-gapped clusters mirror ImageNet's there).")
    alpha: float = Field(default=1.0, gt=0, description="MobileNetV3 width multiplier.")
    image_size: int = Field(default=224, ge=32, description="Square input size in pixels.")
    resize: Literal["pad", "stretch"] = "pad"
    batch_size: int = Field(default=32, ge=1, description="Per device; scaled by the number of GPUs.")
    head_epochs: int = Field(default=5, ge=1)
    head_lr: float = Field(default=1e-3, gt=0)
    fine_tune_epochs: int = Field(default=5, ge=0, description="0: the frozen-backbone model is the result.")
    fine_tune_lr: float = Field(default=1e-4, gt=0, description="Peak learning rate of the fine-tuning phase.")
    fine_tune_layers: int = Field(default=20, ge=0, description="Top backbone layers (with weights) unfrozen.")
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1, description="Share of fine-tuning steps warming up.")
    patience: int = Field(default=3, ge=1, description="Epochs without a better val accuracy before stopping.")
    dropout: float = Field(default=0.2, ge=0, lt=1)
    augment: bool = True
    val_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    seed: int = 0
    mixed_precision: Literal["auto", "off"] = Field(default="auto", description="auto: on a GPU only.")
    threads: int = Field(default=0, ge=0, description="TensorFlow CPU threads (0: TensorFlow decides).")


class TrainImageResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    classes: list[str]
    counts: dict[str, int]  # images per part
    phases: dict[str, dict[str, Any]]  # phase -> val/test accuracy, epochs, trainable layers, seconds
    device: dict[str, Any]
    preprocessing: Preprocessing
    duration_s: float
    weights_sha256: str = ""  # of the final weights: the same on every worker of a multi-worker run


def configure_tensorflow(threads: int) -> None:
    """Cap TensorFlow's CPU threads (a shared or small machine); call before TensorFlow runs anything."""
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, threads))
        except RuntimeError:  # TensorFlow already ran in this process (a second run in one interpreter)
            log.info("TensorFlow's thread pools are already set in this process; keeping them")


def tf_config_workers() -> int:
    """How many workers (chief included) ``TF_CONFIG`` names: 0 without it (one process trains alone)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster") or {}
        return sum(len(cluster.get(kind) or []) for kind in ("chief", "worker"))
    except (ValueError, AttributeError, TypeError) as e:
        raise ConfigError(f"TF_CONFIG is not the JSON the training operator writes: {e}") from e


def is_chief() -> bool:
    """Whether this process writes the results: the chief, or worker 0 when there is no chief (a TFJob of
    workers only), or the only process."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    cfg = json.loads(raw)
    task = cfg.get("task") or {}
    has_chief = bool((cfg.get("cluster") or {}).get("chief"))
    return task.get("type") == "chief" or (not has_chief and task.get("type") == "worker"
                                           and int(task.get("index", 0)) == 0)


def device_setup(config: TrainImageConfig) -> tuple[Any, dict[str, Any]]:
    """The distribution strategy and what the run records about the device: mixed precision and
    ``MirroredStrategy`` only when a GPU is there; ``MultiWorkerMirroredStrategy`` over the workers of a
    TFJob when ``TF_CONFIG`` names more than one (call it before TensorFlow runs anything else)."""
    import keras
    import tensorflow as tf

    workers = tf_config_workers()
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if workers > 1 else None
    gpus = tf.config.list_physical_devices("GPU")
    mixed = bool(gpus) and config.mixed_precision == "auto"
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    if strategy is None:
        strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    return strategy, {"gpus": len(gpus), "mixed_precision": mixed, "replicas": strategy.num_replicas_in_sync,
                      "strategy": "MultiWorkerMirroredStrategy" if workers > 1 else type(strategy).__name__,
                      "workers": max(1, workers)}


def _accuracy(model: Any, ds: Any) -> float:
    return float(model.evaluate(ds, verbose=0, return_dict=True)["accuracy"])


def _early_stopping(patience: int) -> Any:
    """A Keras callback stopping ``model.fit`` by :class:`components.train_image.phases.BestEpoch` on the
    validation accuracy (the rule the multi-worker loop follows) and restoring the best epoch's weights."""
    import keras

    class EarlyStopping(keras.callbacks.Callback):  # type: ignore[misc]  # Keras has no types
        def on_train_begin(self, logs: Any = None) -> None:
            self.best = BestEpoch(patience)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if self.best.update(epoch, float((logs or {})["val_accuracy"]), self.model.get_weights):
                self.model.stop_training = True

        def on_train_end(self, logs: Any = None) -> None:
            self.best.restore(self.model.set_weights)

    return EarlyStopping()


def _fit(model: Any, train: Any, val: Any, *, epochs: int, lr: Any, patience: int,
         weights: dict[int, float]) -> tuple[dict[str, list[float]], int]:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile="auto")
    hist = model.fit(train, validation_data=val, epochs=epochs, class_weight=weights,
                     callbacks=[_early_stopping(patience)], verbose=0)
    history = {k: [round(float(v), 5) for v in vals] for k, vals in hist.history.items()}
    return history, len(history.get("loss", []))


class _FitTrainer:
    """One process (one or more GPUs of a node): ``model.fit`` and ``model.evaluate`` on tf.data input."""

    def __init__(self, model: Any, datasets: dict[str, Any], class_weights: dict[int, float]) -> None:
        self._model, self._data, self._weights = model, datasets, class_weights

    def fit(self, *, epochs: int, lr: Any, patience: int) -> tuple[dict[str, list[float]], int]:
        return _fit(self._model, self._data["train"], self._data["val"], epochs=epochs, lr=lr, patience=patience,
                    weights=self._weights)

    def accuracy(self, part: str) -> float:
        return _accuracy(self._model, self._data[part])


def weights_digest(model: Any) -> str:
    """SHA-256 of a model's weights (every array's bytes, in order): equal on every worker of a run."""
    import numpy as np

    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


def train_image(rows: list[dict[str, Any]], out_dir: Path, config: TrainImageConfig, *,
                storage_options: dict[str, Any] | None = None) -> TrainImageResult:
    """Train on the accepted-image rows of a lake run (:func:`skiff.image_data.read_image_table`) and write
    the model folder ``out_dir`` (see the module docstring). On a worker of a multi-worker run that is not
    the chief, the model is saved into a temporary folder that is then removed, and ``out_dir`` stays
    empty."""
    import keras

    t0 = time.perf_counter()
    configure_tensorflow(config.threads)
    keras.utils.set_random_seed(config.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = LabelMap(classes=sorted({r["label"] for r in rows}))
    index = labels.index()
    parts = split_images(rows, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                         seed=config.seed)
    pre = Preprocessing(height=config.image_size, width=config.image_size, resize=config.resize)
    strategy, device = device_setup(config)
    batch = config.batch_size * strategy.num_replicas_in_sync  # the global batch over every replica
    cache = out_dir.parent / f".{out_dir.name}-image-cache"
    inputs = {name: (localize(part, cache, storage_options), [index[r["label"]] for r in part])
              for name, part in parts.items()}
    weights = class_weights([index[r["label"]] for r in parts["train"]], len(labels.classes))
    with strategy.scope():
        model = build_model(config.backbone, len(labels.classes), image_size=config.image_size,
                            weights=config.weights or None, alpha=config.alpha, dropout=config.dropout)
    trainer: Any
    if device["workers"] > 1:  # Keras's fit cannot run under MultiWorkerMirroredStrategy: the custom loop
        trainer = DistributedTrainer(strategy, model, inputs, pre, global_batch=batch, class_weights=weights,
                                     workers=device["workers"], augment=config.augment, seed=config.seed)
        device["loop"] = "custom"
    else:
        trainer = _FitTrainer(model, {name: make_dataset(paths, y, pre, batch_size=batch, training=name == "train",
                                                         augment=config.augment, seed=config.seed)
                                      for name, (paths, y) in inputs.items()}, weights)
        device["loop"] = "fit"
    steps = steps_per_epoch(len(parts["train"]), batch)
    phases: dict[str, dict[str, Any]] = {}
    history: dict[str, Any] = {}
    for phase in phase_plan(config):
        t = time.perf_counter()
        with strategy.scope():
            trained = set_phase(model, phase.name, phase.fine_tune_layers)
            history[phase.name], epochs = trainer.fit(epochs=phase.epochs, lr=learning_rate(config, phase, steps),
                                                      patience=config.patience)
        phases[phase.name] = {"epochs": epochs, "val_accuracy": trainer.accuracy("val"),
                              "test_accuracy": trainer.accuracy("test"), "trainable_backbone_layers": len(trained),
                              "seconds": round(time.perf_counter() - t, 2)}
    chief = is_chief()
    # every worker saves (as TensorFlow's multi-worker recipe asks); only the chief's copy is kept
    target = out_dir if chief else Path(tempfile.mkdtemp(prefix="skiff-train-worker-"))
    try:
        model.save(target / MODEL_FILE)
        model.export(str(target / SAVED_MODEL_DIR), format="tf_saved_model", verbose=False)
    finally:
        if not chief:
            shutil.rmtree(target, ignore_errors=True)
    result = TrainImageResult(classes=labels.classes, counts={n: len(p) for n, p in parts.items()}, phases=phases,
                              device=device, preprocessing=pre, duration_s=round(time.perf_counter() - t0, 2),
                              weights_sha256=weights_digest(model))
    if chief:
        (out_dir / LABEL_MAP_FILE).write_text(labels.model_dump_json(indent=2))
        (out_dir / PREPROCESSING_FILE).write_text(pre.model_dump_json(indent=2))
        (out_dir / SPLIT_FILE).write_text(json.dumps({n: p for n, p in parts.items()}, ensure_ascii=False))
        (out_dir / TRAINING_FILE).write_text(json.dumps({"config": config.model_dump(), "history": history,
                                                         **result.model_dump(mode="json")}, indent=2))
    _remove_tree(cache)
    return result


def _remove_tree(path: Path) -> None:
    if path.exists():
        for p in sorted(path.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        os.rmdir(path)
