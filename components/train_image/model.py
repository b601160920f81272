"""The image classifier: a backbone chosen by name without its head, plus a new head sized to the classes.

The model takes float32 RGB pixels in [0, 255] (:class:`skiff.image_data.Preprocessing`) and does the
backbone's own input scaling inside itself, so a served model needs nothing but decode and resize. The
backbone is called with ``training=False``: its BatchNormalization layers stay in inference mode even when
fine-tuning unfreezes them (their running statistics, learnt on the source task, are not spoilt by small
batches of the new one).

Weights (``weights``): ``"imagenet"`` (Keras downloads them: clusters with internet), ``None``/``""``
(random), or the URI of a ``.weights.h5`` file of the same backbone on the artifact store (air-gapped
clusters mirror the ImageNet weights there; :func:`save_backbone_weights` writes one). ``TinyConvNet``
is a small backbone of our own for CPUs and tests; it has no ImageNet weights.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from skiff.errors import InputError, NotFoundError, SourceError, UsageError

__all__ = ["BACKBONES", "build_model", "backbone_of", "set_phase", "save_backbone_weights", "BACKBONE_LAYER"]

#: the backbone layer's name inside the classifier (what set_phase and the tests look for)
BACKBONE_LAYER = "backbone"
BACKBONES = ("MobileNetV3Small", "MobileNetV3Large", "EfficientNetV2B0", "ResNet50", "TinyConvNet")
#: ResNet50's "caffe" input: BGR, ImageNet means subtracted (what keras.applications.resnet50.preprocess_input does)
_CAFFE_MEANS = (103.939, 116.779, 123.68)


def _keras_weights(weights: str | None) -> str | None:
    return "imagenet" if weights == "imagenet" else None


def _tiny(input_shape: tuple[int, int, int]) -> Any:
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = layers.Rescaling(1.0 / 255)(inputs)
    for i, filters in enumerate((16, 32, 64)):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{i}_conv")(x)
        x = layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = layers.ReLU(name=f"block{i}_relu")(x)
        x = layers.MaxPooling2D(name=f"block{i}_pool")(x)
    return keras.Model(inputs, x, name=BACKBONE_LAYER)


def _caffe_input(input_shape: tuple[int, int, int]) -> Any:
    """RGB [0, 255] -> ResNet50's BGR mean-subtracted input, as a fixed 1x1 convolution (plain Keras layers,
    so a saved model loads without skiff's code)."""
    import keras
    import numpy as np
    from keras import layers

    swap = np.zeros((1, 1, 3, 3), np.float32)
    for out_channel, in_channel in enumerate((2, 1, 0)):
        swap[0, 0, in_channel, out_channel] = 1.0
    conv = layers.Conv2D(3, 1, trainable=False, name="rgb_to_caffe")
    inputs = keras.Input(input_shape)
    outputs = conv(inputs)
    conv.set_weights([swap, -np.asarray(_CAFFE_MEANS, np.float32)])
    return keras.Model(inputs, outputs, name="caffe_preprocess")


def _backbone(name: str, input_shape: tuple[int, int, int], weights: str | None, alpha: float) -> Any:

    try:
        return _named_backbone(name, input_shape, weights, alpha)
    except (UsageError, InputError, NotFoundError):
        raise
    except Exception as e:  # keras.utils.get_file raises a bare Exception when the download fails
        if weights != "imagenet":
            raise
        raise SourceError(f"could not fetch the ImageNet weights of {name} ({e}); without internet, mirror them to "
                          "the artifact store and set weights to that .weights.h5 URI"[:600]) from e


def _named_backbone(name: str, input_shape: tuple[int, int, int], weights: str | None, alpha: float) -> Any:
    import keras

    apps = keras.applications
    kw: dict[str, Any] = {"input_shape": input_shape, "include_top": False, "weights": _keras_weights(weights)}
    if name == "MobileNetV3Small":
        model = apps.MobileNetV3Small(alpha=alpha, include_preprocessing=True, **kw)
    elif name == "MobileNetV3Large":
        model = apps.MobileNetV3Large(alpha=alpha, include_preprocessing=True, **kw)
    elif name == "EfficientNetV2B0":
        model = apps.EfficientNetV2B0(include_preprocessing=True, **kw)
    elif name == "ResNet50":
        inner = apps.ResNet50(**kw)
        inputs = keras.Input(input_shape)
        model = keras.Model(inputs, inner(_caffe_input(input_shape)(inputs)), name=BACKBONE_LAYER)
    elif name == "TinyConvNet":
        if weights == "imagenet":
            raise UsageError("TinyConvNet has no ImageNet weights: use weights=None or a weights file URI")
        model = _tiny(input_shape)
    else:
        raise UsageError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    if name != "ResNet50" and name != "TinyConvNet":
        model = keras.Model(model.input, model.output, name=BACKBONE_LAYER)
    if weights and weights != "imagenet":
        _load_weights(model, weights)
    return model


def _load_weights(backbone: Any, uri: str, storage_options: dict[str, Any] | None = None) -> None:
    """Load a backbone's weights from a ``.weights.h5`` file at ``uri`` (local path or fsspec URI)."""
    import fsspec

    if not uri.endswith(".weights.h5"):
        raise UsageError(f"weights must be 'imagenet', empty, or a .weights.h5 file URI; got {uri!r}")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "backbone.weights.h5"
        try:
            with fsspec.open(uri, "rb", **(storage_options or {})) as src:
                local.write_bytes(src.read())
        except FileNotFoundError as e:
            raise NotFoundError(f"backbone weights not found: {uri}") from e
        try:
            backbone.load_weights(str(local))
        except ValueError as e:  # a file of another architecture or size
            raise InputError(f"the weights at {uri} do not fit backbone {backbone.name}: {e}"[:400]) from e


def save_backbone_weights(model: Any, uri: str) -> str:
    """Write a classifier's (or a backbone's) backbone weights to ``uri`` (a ``.weights.h5`` path or URI)."""
    import fsspec

    if not uri.endswith(".weights.h5"):
        raise UsageError(f"a weights file name ends with .weights.h5; got {uri!r}")
    backbone = backbone_of(model) if any(layer.name == BACKBONE_LAYER for layer in model.layers) else model
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "backbone.weights.h5"
        backbone.save_weights(str(local))
        with fsspec.open(uri, "wb") as out:
            out.write(local.read_bytes())
    return uri


def build_model(backbone: str, num_classes: int, *, image_size: int, weights: str | None = None,
                alpha: float = 1.0, dropout: float = 0.2) -> Any:
    """The classifier: ``backbone`` (frozen until :func:`set_phase` says otherwise) + pooling, dropout and a
    softmax head of ``num_classes`` units computed in float32 (also under mixed precision)."""
    import keras
    from keras import layers

    if num_classes < 2:
        raise UsageError(f"an image classifier needs at least two classes, got {num_classes}")
    shape = (image_size, image_size, 3)
    base = _backbone(backbone, shape, weights, alpha)
    base.trainable = False
    inputs = keras.Input(shape, name="image")
    x = base(inputs, training=False)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"{backbone}_classifier")


def backbone_of(model: Any) -> Any:
    return model.get_layer(BACKBONE_LAYER)


def set_phase(model: Any, phase: str, fine_tune_layers: int = 20) -> list[str]:
    """Make the layers of a phase trainable: ``head`` (backbone frozen) or ``fine_tune`` (the top
    ``fine_tune_layers`` layers of the backbone with weights, BatchNormalization excepted). Returns the names
    of the backbone layers that train."""
    import keras

    base = backbone_of(model)
    if phase == "head":
        base.trainable = False
        return []
    if phase != "fine_tune":
        raise UsageError(f"unknown phase {phase!r}: head or fine_tune")
    base.trainable = True
    weighted = [layer for layer in _leaf_layers(base) if layer.weights]
    top = {id(layer) for layer in weighted[-fine_tune_layers:]} if fine_tune_layers > 0 else set()
    trained = []
    for layer in _leaf_layers(base):
        train = id(layer) in top and not isinstance(layer, keras.layers.BatchNormalization) \
            and layer.name != "rgb_to_caffe"
        layer.trainable = train
        if train:
            trained.append(layer.name)
    return trained


def _leaf_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:  # a nested model (ResNet50 inside its wrapper)
            out += _leaf_layers(layer)
        else:
            out.append(layer)
    return out
