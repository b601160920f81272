"""Image data sets in the lake: the table of accepted images, the label map and the preprocessing.

Image ingestion (``components.ingest_images``) does not copy images: a lake run of an image data set holds
one Parquet table with a row per accepted image (:data:`IMAGE_COLUMNS`: where it is, its label and split,
what decoding it found, its content hash), the quarantine, the run manifest (:class:`skiff.manifest.RunManifest`,
written by :meth:`skiff.lake.Lake.publish_run` like every run) and ``_classes.json`` (images per class).
Training (``components.train_image``) reads the same table through :func:`read_image_table`; the model
version records the :class:`LabelMap` and the :class:`Preprocessing` the model server applies to a request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from skiff.errors import InputError
from skiff.lake import Lake, RunRef

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["IMAGE_COLUMNS", "IMAGES_FILE", "CLASSES_FILE", "SPLITS", "LabelMap", "Preprocessing",
           "read_image_table"]

#: column -> Arrow type of the accepted-image table (one row per image)
IMAGE_COLUMNS: dict[str, str] = {
    "path": "string",        # absolute path or URI (fsspec) of the image file as found
    "label": "string",       # class name (folder name or the manifest's label)
    "split": "string",       # train / val / test from the layout or manifest; "" when the data has no split
    "format": "string",      # what decoding found (JPEG, PNG, GIF, BMP, WEBP), not the extension
    "width": "int64",
    "height": "int64",
    "mode": "string",        # Pillow mode as stored (RGB, L, P, RGBA ...)
    "frames": "int64",       # 1 but for animated images (training reads the first frame)
    "bytes": "int64",
    "sha256": "string",      # content hash of the file's bytes
    "converted": "string",   # "" or the conversion training applies (palette->RGB, animated->first frame)
}
#: the accepted-image table's file in the run folder
IMAGES_FILE = "part-00000.parquet"
#: images per class of a run (a report; the table is the truth)
CLASSES_FILE = "_classes.json"
SPLITS = ("train", "val", "test")


class LabelMap(BaseModel):
    """Class index -> class name, as the model's output units are ordered (sorted names)."""

    model_config = ConfigDict(extra="forbid")

    classes: list[str] = Field(description="Class names; the model's output unit i is classes[i].")

    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}


class Preprocessing(BaseModel):
    """What turns an encoded image into the model's input, recorded so serving does exactly what training did."""

    model_config = ConfigDict(extra="forbid")

    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: Literal[3] = 3
    #: pad: keep the aspect ratio and pad (tf.image.resize_with_pad); stretch: resize to height x width
    resize: Literal["pad", "stretch"] = "pad"
    #: the model takes float32 pixels in [0, 255]; the backbone's own rescaling is inside the model
    input_range: tuple[float, float] = (0.0, 255.0)
    #: animated images: the first frame; palette and grey images: converted to RGB
    decode: str = "first frame, RGB"


def decode_pixels(data: Any, pre: Preprocessing) -> Any:
    """Encoded image bytes (bytes or a scalar string tensor) -> float32 ``[height, width, 3]`` pixels in
    [0, 255]: decoded by content into RGB (a GIF's first frame), then pad-resized or stretched to the
    recorded size. The one decoding both training (``components/train_image``) and serving
    (``serving/runtime/images.py``) run, so a served image is exactly what the model learned from."""
    import tensorflow as tf

    img = tf.io.decode_image(data, channels=3, expand_animations=False)
    img.set_shape([None, None, 3])
    img = tf.cast(img, tf.float32)
    if pre.resize == "pad":
        return tf.image.resize_with_pad(img, pre.height, pre.width)
    return tf.image.resize(img, (pre.height, pre.width))


def read_image_table(lake: Lake, ref: RunRef) -> pa.Table:
    """The accepted images of one committed run (an :class:`InputError` when the run holds no image table)."""
    import pyarrow.parquet as pq

    files = [u for u in lake.run_files(ref) if u.endswith(IMAGES_FILE)]
    if not files:
        raise InputError(f"run {ref.dataset}/{ref.run_id} holds no image table ({IMAGES_FILE}); "
                         "was it written by image ingestion?")
    with lake.store.open(*ref.parts, IMAGES_FILE) as f:
        table: pa.Table = pq.read_table(f)
    missing = sorted(set(IMAGE_COLUMNS) - set(table.column_names))
    if missing:
        raise InputError(f"the image table of run {ref.dataset}/{ref.run_id} lacks columns {missing}")
    return table
