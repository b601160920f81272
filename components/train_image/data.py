"""The images as tf.data input: split, localize, decode, resize, augment, cache, prefetch.

``split_images`` keeps the data set's own split (the ImageFolder ``train/``/``val/``/``test/`` folders or a
manifest's ``split`` column) and makes what is missing by a stratified split of the training images, so
every class is in every part. Images on an object store are copied once into a local cache folder (by content
hash) before tf.data reads them: ``tf.io.read_file`` reads local files, not ``s3://`` or ``abfs://``.

Decoding sniffs the content (``tf.io.decode_image``: JPEG, PNG, GIF — its first frame —, BMP, WebP) into
RGB; resizing keeps the aspect ratio and pads (``resize="pad"``) or stretches. Decoded images are cached in
memory after resizing (once per epoch is the cost that matters on a CPU), augmentation (flip, rotation,
zoom, contrast) runs after the cache so every epoch sees new variants.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from skiff.errors import InputError
from skiff.image_data import Preprocessing, decode_pixels

__all__ = ["split_images", "localize", "make_dataset", "class_weights", "decode_pixels"]


def split_images(rows: list[dict[str, Any]], *, val_fraction: float, test_fraction: float,
                 seed: int) -> dict[str, list[dict[str, Any]]]:
    """train / val / test rows: the data's own split where it has one, a stratified split for the rest."""
    from sklearn.model_selection import train_test_split

    parts: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "test": []}
    for r in rows:
        parts[r["split"] or "train"].append(r)

    def carve(source: list[dict[str, Any]], fraction: float, of_total: int) -> tuple[list[Any], list[Any]]:
        n = max(len({r["label"] for r in source}), int(round(fraction * of_total)))
        if n >= len(source):
            raise InputError(f"too few training images ({len(source)}) to set {n} aside for validation/test")
        keep, held = train_test_split(source, test_size=n, random_state=seed,
                                      stratify=[r["label"] for r in source])
        return list(keep), list(held)

    total = len(rows)
    if not parts["test"]:
        parts["train"], parts["test"] = carve(parts["train"], test_fraction, total)
    if not parts["val"]:
        parts["train"], parts["val"] = carve(parts["train"], val_fraction, total)
    return parts


def localize(rows: list[dict[str, Any]], cache: Path, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Local paths of the rows' images: local ones as they are, remote ones copied into ``cache`` once."""
    import fsspec

    out = []
    for r in rows:
        path = r["path"]
        if "://" not in path or path.startswith("file://"):
            out.append(path.removeprefix("file://"))
            continue
        target = cache / (r.get("sha256") or hashlib.sha256(path.encode()).hexdigest())
        if not target.exists():
            cache.mkdir(parents=True, exist_ok=True)
            with fsspec.open(path, "rb", **(storage_options or {})) as src:
                target.write_bytes(src.read())
        out.append(str(target))
    return out


def _augmenter(seed: int) -> Any:
    import keras
    from keras import layers

    return keras.Sequential([
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomRotation(0.05, fill_mode="reflect", seed=seed),
        layers.RandomZoom(0.1, fill_mode="reflect", seed=seed),
        layers.RandomContrast(0.1, seed=seed),
    ], name="augment")


def make_dataset(paths: list[str], labels: list[int], pre: Preprocessing, *, batch_size: int, training: bool,
                 augment: bool = True, seed: int = 0) -> Any:
    """A batched, prefetched ``tf.data.Dataset`` of (pixels, label index)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, np.int32)))
    ds = ds.map(lambda p, y: (decode_pixels(tf.io.read_file(p), pre), y), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    ds = ds.cache()
    if training:
        ds = ds.shuffle(max(1, len(paths)), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training and augment:
        aug = _augmenter(seed)
        ds = ds.map(lambda x, y: (aug(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def class_weights(labels: list[int], num_classes: int) -> dict[int, float]:
    """Inverse-frequency weights (n / (k * count)): every class weighs the same in the loss."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)
    if (counts == 0).any():
        missing = [i for i, c in enumerate(counts) if c == 0]
        raise InputError(f"classes {missing} have no training images")
    return {i: float(len(labels) / (num_classes * c)) for i, c in enumerate(counts)}
