"""The image model builder (which layers train in each phase), the weights from a URI, tf.data decoding,
the split, class weights and the evaluation metrics."""

import io

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402
from PIL import Image  # noqa: E402

from components.train_image.data import class_weights, split_images  # noqa: E402
from components.train_image.evaluate import score  # noqa: E402
from components.train_image.model import backbone_of, build_model, save_backbone_weights, set_phase  # noqa: E402
from skiff.errors import InputError, NotFoundError, UsageError  # noqa: E402
from skiff.image_data import Preprocessing, decode_pixels  # noqa: E402


def _trainable(model):
    return {w.path for w in model.trainable_weights}


def test_head_phase_trains_the_head_only_and_fine_tuning_the_top_layers_without_batchnorm():
    model = build_model("MobileNetV3Small", 4, image_size=32, weights=None, alpha=0.75)
    assert model.output_shape == (None, 4)
    assert set_phase(model, "head") == []
    assert {p.split("/")[0] for p in _trainable(model)} == {"probabilities"}
    trained = set_phase(model, "fine_tune", fine_tune_layers=6)
    base = backbone_of(model)
    layers = {layer.name: layer for layer in base.layers}
    assert 0 < len(trained) <= 6 and all(layers[n].trainable for n in trained)
    assert not any(isinstance(layers[n], keras.layers.BatchNormalization) for n in trained)
    weighted = [la for la in base.layers if la.weights]
    assert weighted[-1].name in trained or isinstance(weighted[-1], keras.layers.BatchNormalization)
    assert not weighted[0].trainable  # the bottom stays frozen
    assert set_phase(model, "head") == [] and {p.split("/")[0] for p in _trainable(model)} == {"probabilities"}


def test_resnet50_gets_its_caffe_input_inside_the_model():
    model = build_model("ResNet50", 2, image_size=32, weights=None)
    pre = backbone_of(model).get_layer("caffe_preprocess")
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    expected = keras.applications.resnet50.preprocess_input(x.copy())
    np.testing.assert_allclose(np.asarray(pre(x)), expected, rtol=1e-5, atol=1e-3)
    set_phase(model, "fine_tune", fine_tune_layers=1000)
    assert not backbone_of(model).get_layer("caffe_preprocess").get_layer("rgb_to_caffe").trainable


@pytest.mark.parametrize("name", ["EfficientNetV2B0", "MobileNetV3Large"])
def test_other_backbones_build_without_their_heads(name):
    model = build_model(name, 3, image_size=32, weights=None)
    assert model.output_shape == (None, 3) and backbone_of(model).name == "backbone"


def test_bad_backbones_and_weights_are_clear_errors():
    with pytest.raises(UsageError, match="unknown backbone"):
        build_model("VGG99", 3, image_size=32)
    with pytest.raises(UsageError, match="no ImageNet weights"):
        build_model("TinyConvNet", 3, image_size=32, weights="imagenet")
    with pytest.raises(UsageError, match="at least two classes"):
        build_model("TinyConvNet", 1, image_size=32)
    with pytest.raises(UsageError, match=".weights.h5"):
        build_model("TinyConvNet", 3, image_size=32, weights="s3://bucket/backbone.bin")


def test_backbone_weights_from_a_uri_transfer_to_a_new_task(tmp_path):
    """Pre-train on one task, save the backbone to the store, load it into a classifier of another task."""
    source = build_model("TinyConvNet", 2, image_size=32, weights="")
    set_phase(source, "fine_tune", fine_tune_layers=100)
    source.compile("adam", "sparse_categorical_crossentropy")
    source.fit(np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)), np.array([0, 1] * 4), epochs=1, verbose=0)
    uri = save_backbone_weights(source, f"file://{tmp_path}/store/tiny.weights.h5")
    target = build_model("TinyConvNet", 5, image_size=32, weights=uri)
    for a, b in zip(backbone_of(source).weights, backbone_of(target).weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert target.output_shape == (None, 5)
    with pytest.raises(NotFoundError, match="not found"):
        build_model("TinyConvNet", 3, image_size=32, weights=f"{tmp_path}/missing.weights.h5")
    with pytest.raises(InputError, match="do not fit"):
        build_model("MobileNetV3Small", 3, image_size=32, weights=uri, alpha=0.75)


def _encoded(fmt, mode="RGB", frames=1):
    imgs = [Image.new("RGB", (40, 20), (200, 10 * i, 10)) for i in range(frames)]
    buf = io.BytesIO()
    first = imgs[0].convert(mode)
    first.save(buf, fmt, **({"save_all": True, "append_images": imgs[1:]} if frames > 1 else {}))
    return buf.getvalue()


@pytest.mark.parametrize(("fmt", "mode", "frames"), [("JPEG", "RGB", 1), ("PNG", "P", 1), ("PNG", "L", 1),
                                                     ("GIF", "P", 3), ("BMP", "RGB", 1), ("WEBP", "RGB", 1)])
def test_decode_gives_rgb_pixels_of_the_recorded_size(fmt, mode, frames):
    pre = Preprocessing(height=32, width=32, resize="pad")
    pixels = decode_pixels(tf.constant(_encoded(fmt, mode, frames)), pre).numpy()
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.float32 and pixels.max() <= 255
    assert pixels[0].sum() == 0 and pixels[16].sum() > 0  # a 40x20 image padded top and bottom


def test_split_keeps_the_data_split_and_stratifies_what_is_missing():
    rows = [{"path": f"{c}{i}", "label": c, "split": ""} for c in "abc" for i in range(20)]
    parts = split_images(rows, val_fraction=0.15, test_fraction=0.15, seed=0)
    assert sum(len(p) for p in parts.values()) == 60
    for name in ("val", "test"):
        assert sorted({r["label"] for r in parts[name]}) == ["a", "b", "c"]
        assert len(parts[name]) == 9
    given = [{**r, "split": "val" if i % 5 == 0 else "train"} for i, r in enumerate(rows)]
    parts = split_images(given, val_fraction=0.15, test_fraction=0.15, seed=0)
    assert all(r["split"] == "val" for r in parts["val"]) and len(parts["val"]) == 12


def test_class_weights_balance_the_classes():
    weights = class_weights([0] * 30 + [1] * 10, 2)
    assert weights == {0: pytest.approx(40 / 60), 1: pytest.approx(2.0)}
    with pytest.raises(InputError, match="no training images"):
        class_weights([0, 0], 2)


def test_score_top_k_per_class_and_confusion():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.5, 0.1, 0.4]])
    y = np.array([0, 1, 1, 2])
    s = score(probs, y, ["a", "b", "c"], top_k=2)
    assert s["metrics"]["top1_accuracy"] == 0.5 and s["metrics"]["top2_accuracy"] == 1.0
    assert s["confusion"] == [[1, 0, 0], [0, 1, 1], [1, 0, 0]]
    assert s["per_class"]["b"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2.0}


def test_images_on_an_object_store_are_copied_once_into_the_local_cache(tmp_path):
    import fsspec

    from components.train_image.data import localize

    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/a/1.png", _encoded("PNG"))
    rows = [{"path": "memory://bucket/a/1.png", "sha256": "abc"}, {"path": str(tmp_path / "local.png"), "sha256": "d"}]
    paths = localize(rows, tmp_path / "cache")
    assert paths == [str(tmp_path / "cache" / "abc"), str(tmp_path / "local.png")]
    assert (tmp_path / "cache" / "abc").read_bytes() == _encoded("PNG")
    fs.rm("/bucket/a/1.png")
    assert localize(rows[:1], tmp_path / "cache") == paths[:1]  # cached: not read again


class _Weights:
    """A stand-in model for early-stopping callbacks: its weights are the epoch they were read at."""

    def __init__(self):
        self.epoch, self.stop_training, self.restored = 0, False, None

    def get_weights(self):
        return [self.epoch]

    def set_weights(self, weights):
        self.restored = weights


def _run_callback(callback, values):
    model = _Weights()
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, value in enumerate(values):
        model.epoch = epoch
        callback.on_epoch_end(epoch, {"val_accuracy": value})
        if model.stop_training:
            break
    callback.on_train_end()
    return model.epoch, model.restored


@pytest.mark.parametrize("values", [[0.1, 0.2, 0.2, 0.2, 0.1, 0.5], [0.5, 0.4, 0.3, 0.6, 0.6, 0.6],
                                    [0.3, 0.3, 0.3, 0.3], [float("nan"), 0.1, 0.1, 0.1, 0.1],
                                    [0.1, 0.2, 0.3, 0.4, 0.5]])
@pytest.mark.parametrize("patience", [1, 2, 3])
def test_the_shared_early_stopping_rule_is_keras_early_stopping(values, patience):
    """Both training loops stop by BestEpoch; on one worker it must decide as Keras's EarlyStopping did."""
    from components.train_image.logic import _early_stopping
    from components.train_image.phases import BestEpoch

    keras_way = _run_callback(keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=patience,
                                                            restore_best_weights=True), values)
    assert _run_callback(_early_stopping(patience), values) == keras_way
    best, model = BestEpoch(patience), _Weights()
    for epoch, value in enumerate(values):
        model.epoch = epoch
        if best.update(epoch, value, model.get_weights):
            break
    best.restore(model.set_weights)
    assert (model.epoch, model.restored) == keras_way


def test_the_phase_plan_and_its_learning_rates():
    from components.train_image.logic import TrainImageConfig
    from components.train_image.phases import Phase, learning_rate, phase_plan, steps_per_epoch

    config = TrainImageConfig(head_epochs=3, fine_tune_epochs=10, fine_tune_layers=7, head_lr=1e-3, fine_tune_lr=1e-4,
                              warmup_fraction=0.1)
    plan = phase_plan(config)
    assert plan == [Phase("head", 3, 0), Phase("fine_tune", 10, 7)]
    assert phase_plan(config.model_copy(update={"fine_tune_epochs": 0})) == [Phase("head", 3, 0)]
    assert steps_per_epoch(100, 32) == 4 and steps_per_epoch(3, 32) == 1
    assert learning_rate(config, plan[0], 4) == 1e-3
    schedule = learning_rate(config, plan[1], 4)  # 40 steps, 4 of them warming up from a tenth of the peak
    assert float(schedule(0)) == pytest.approx(1e-5)
    assert float(schedule(4)) == pytest.approx(1e-4)
    assert float(schedule(2)) == pytest.approx(5.5e-5)
    assert float(schedule(22)) == pytest.approx(5e-5, rel=1e-3)  # half-way through the decay
    assert float(schedule(40)) == pytest.approx(0.0, abs=1e-9)
    no_warmup = learning_rate(config.model_copy(update={"warmup_fraction": 0.0}), plan[1], 4)
    assert float(no_warmup(0)) == pytest.approx(1e-4)


def test_the_custom_loop_trains_as_model_fit_does_on_one_replica(tmp_path):
    """The multi-worker loop run on one replica: the same losses and final weights as model.fit (no dropout
    or augmentation, the same seed, data order and class weights)."""
    from components.train_image.data import make_dataset
    from components.train_image.distributed import DistributedTrainer
    from components.train_image.logic import _fit
    from skiff.datagen_images import image_set

    image_set(tmp_path, classes=("circle", "square", "triangle"), per_class=9, size=32)
    files = sorted(p for p in tmp_path.rglob("*.*"))
    names = sorted({p.parent.name for p in files})
    paths, labels = [str(p) for p in files], [names.index(p.parent.name) for p in files]
    keep = [i for i in range(len(paths)) if i % 9 != 0][:-2]  # an uneven class balance and a last short batch
    held = [i for i in range(len(paths)) if i % 9 == 0]
    parts = {"train": ([paths[i] for i in keep], [labels[i] for i in keep]),
             "val": ([paths[i] for i in held], [labels[i] for i in held])}
    weights = class_weights(parts["train"][1], 3)
    pre = Preprocessing(height=32, width=32)

    def fresh():
        keras.utils.set_random_seed(3)
        model = build_model("TinyConvNet", 3, image_size=32, weights="", dropout=0.0)
        set_phase(model, "fine_tune", 100)
        return model

    by_fit = fresh()
    data = {n: make_dataset(p, y, pre, batch_size=8, training=n == "train", augment=False, seed=0)
            for n, (p, y) in parts.items()}
    fit_history, _ = _fit(by_fit, data["train"], data["val"], epochs=1, lr=1e-3, patience=5, weights=weights)
    by_loop = fresh()
    trainer = DistributedTrainer(tf.distribute.get_strategy(), by_loop, parts, pre, global_batch=8,
                                 class_weights=weights, workers=1, augment=False, seed=0)
    loop_history, epochs = trainer.fit(epochs=1, lr=1e-3, patience=5)
    assert epochs == 1
    np.testing.assert_allclose(loop_history["loss"], fit_history["loss"], rtol=1e-3)
    np.testing.assert_allclose(loop_history["val_loss"], fit_history["val_loss"], rtol=1e-3)
    assert loop_history["val_accuracy"] == pytest.approx(fit_history["val_accuracy"], abs=1e-4)
    for a, b in zip(by_loop.get_weights(), by_fit.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    assert trainer.accuracy("val") == pytest.approx(float(by_fit.evaluate(data["val"], verbose=0,
                                                                          return_dict=True)["accuracy"]), abs=1e-6)


def test_the_custom_loop_scales_the_loss_under_mixed_precision_and_refuses_too_few_images(tmp_path):
    """On GPUs the multi-worker loop trains in mixed_float16 with a loss-scaling optimizer (run here on the
    CPU, which computes float16 too); a part with fewer images than workers is a clear error."""
    from components.train_image.distributed import DistributedTrainer
    from skiff.datagen_images import image_set

    image_set(tmp_path, classes=("circle", "square"), per_class=6, size=32)
    files = sorted(tmp_path.rglob("*.*"))
    parts = {"train": ([str(p) for p in files], [int(p.parent.name == "square") for p in files])}
    parts["val"] = parts["train"]
    pre = Preprocessing(height=32, width=32)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model("TinyConvNet", 2, image_size=32, weights="")
        set_phase(model, "fine_tune", 100)
        before = model.get_weights()
        trainer = DistributedTrainer(tf.distribute.get_strategy(), model, parts, pre, global_batch=4,
                                     class_weights={0: 1.0, 1: 1.0}, workers=1, augment=True, seed=0)
        history, epochs = trainer.fit(epochs=1, lr=1e-3, patience=2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert epochs == 1 and np.isfinite(history["loss"]).all()
    assert model.get_layer("probabilities").compute_dtype == "float32"
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    few = {"train": parts["train"], "val": (parts["val"][0][:2], parts["val"][1][:2])}
    with pytest.raises(InputError, match="fewer than the workers"):
        DistributedTrainer(tf.distribute.get_strategy(), model, few, pre, global_batch=4,
                           class_weights={0: 1.0, 1: 1.0}, workers=3, augment=False, seed=0)
