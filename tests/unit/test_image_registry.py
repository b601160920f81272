"""The flavor-aware registry (skiff.registry.FLAVORS): a tensorflow or onnx version holds its model file and
nothing pickled, load_model refuses what is not a joblib flavor, and versions written the old way (a joblib
pointer in a tensorflow version) are still read."""

from __future__ import annotations

import json

import pytest

from skiff.config import load_settings
from skiff.errors import UsageError
from skiff.registry import FLAVORS, Flavor, ModelRegistry, VersionMetadata, register_flavor

TF_EXTRA = {"preprocessing": {"height": 8, "width": 8}, "label_map": {"classes": ["a", "b"]},
            "model_files": {"keras": "model.keras", "saved_model": "saved_model.tar.gz"}}


@pytest.fixture
def registry(tmp_path):
    return ModelRegistry.from_settings(load_settings(root=str(tmp_path / "root")))


def test_a_file_flavor_registers_its_model_file_and_pickles_nothing(registry, tmp_path):
    keras_file = tmp_path / "model.keras"
    keras_file.write_bytes(b"PK\x03\x04 a keras archive")
    mv = registry.register("vision", None, {"flavor": "tensorflow", "extra": TF_EXTRA}, {"model.keras": keras_file})
    assert mv.metadata.model_file == "model.keras" and "model.joblib" not in mv.metadata.files
    assert registry.read_model_file(mv) == keras_file.read_bytes()
    with pytest.raises(UsageError, match="tensorflow model: its runtime loads model.keras"):
        registry.load_model("vision", mv.version)

    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"onnx bytes")
    onnx = registry.register("tabular_onnx", None, {"flavor": "onnx"}, {"model.onnx": onnx_file})
    assert onnx.metadata.model_file == "model.onnx" and registry.read_model_file(onnx) == b"onnx bytes"


def test_each_flavor_is_told_what_it_lacks(registry, tmp_path):
    with pytest.raises(UsageError, match="needs its model file 'model.keras' among the files"):
        registry.register("vision", None, {"flavor": "tensorflow", "extra": TF_EXTRA})
    with pytest.raises(UsageError, match="sklearn version needs its model object"):
        registry.register("churn", None, {"flavor": "sklearn"})
    keras_file = tmp_path / "model.keras"
    keras_file.write_bytes(b"k")
    with pytest.raises(UsageError, match="pass model=None"):
        registry.register("vision", {"pointer": 1}, {"flavor": "tensorflow"}, {"model.keras": keras_file})
    assert registry.models() == []


def test_a_joblib_flavor_round_trips_and_new_flavors_plug_in(registry, tmp_path):
    mv = registry.register("churn", {"weights": [1, 2]}, {"flavor": "sklearn"})
    assert mv.metadata.model_file == "model.joblib" and registry.load_model("churn") == {"weights": [1, 2]}
    register_flavor(Flavor("pt_test", "model.pt"))
    try:
        assert FLAVORS["pt_test"].model_file == "model.pt" and not FLAVORS["pt_test"].joblib
    finally:
        del FLAVORS["pt_test"]


def test_an_old_tensorflow_version_with_a_joblib_pointer_is_still_read(registry, tmp_path):
    """What the registry wrote before flavors were kept apart: model.joblib (a dict naming the files) beside
    model.keras, and no model file recorded. It reads as a tensorflow version whose model is model.keras."""
    keras_file = tmp_path / "model.keras"
    keras_file.write_bytes(b"old keras")
    mv = registry.register("vision", None, {"flavor": "tensorflow", "extra": TF_EXTRA}, {"model.keras": keras_file})
    import joblib

    folder = registry.store.local_path(mv.name, str(mv.version))

    joblib.dump({"flavor": "tensorflow", "keras": "model.keras"}, folder / "model.joblib")  # the old pointer
    meta = json.loads((folder / "metadata.json").read_text())
    meta["files"] = sorted([*meta["files"], "model.joblib"])
    (folder / "metadata.json").write_text(json.dumps(meta))

    old = registry.get("vision", mv.version)
    assert old.metadata.flavor == "tensorflow" and old.metadata.model_file == "model.keras"
    assert registry.read_model_file(old) == b"old keras"
    with pytest.raises(UsageError, match="tensorflow model"):
        registry.load_model("vision", mv.version)  # the pointer is never unpickled as the model


def test_a_file_flavor_given_only_a_pickled_object_is_kept_the_old_way(registry):
    mv = registry.register("vision", {"w": 3}, VersionMetadata(name="vision", flavor="tensorflow"))
    assert mv.metadata.model_file == "model.joblib" and mv.metadata.files.count("model.joblib") == 1
