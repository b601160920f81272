"""The TFJob's worker (``python -m components.train_image.worker``) on this machine: two processes with the
``TF_CONFIG`` the training operator writes (two workers on 127.0.0.1) train one model together under
``MultiWorkerMirroredStrategy`` with the step's own code and its custom training loop (Keras 3's
``model.fit`` cannot run there, keras-team/keras#20585); both finish with identical weights, worker 0
publishes the model folder at the output URI (a model that loads and predicts the held-out images well
above chance), worker 1 publishes nothing. TF_CONFIG's parsing is checked without TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.train_image.logic import is_chief, tf_config_workers
from skiff.errors import ConfigError
from tests.conftest import REPO
from tests.integration.test_serving import free_port

pytestmark = pytest.mark.integration


def _tf_config(index: int, ports: list[int], kind: str = "worker", chief: list[int] | None = None) -> str:
    cluster: dict = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    if chief:
        cluster["chief"] = [f"127.0.0.1:{p}" for p in chief]
    return json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})


def test_tf_config_names_the_workers_and_the_chief(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert tf_config_workers() == 0 and is_chief()
    monkeypatch.setenv("TF_CONFIG", _tf_config(0, [1, 2, 3]))
    assert tf_config_workers() == 3 and is_chief()
    monkeypatch.setenv("TF_CONFIG", _tf_config(1, [1, 2, 3]))
    assert not is_chief()
    monkeypatch.setenv("TF_CONFIG", _tf_config(0, [1, 2], chief=[9]))  # with a chief, worker 0 is not it
    assert tf_config_workers() == 3 and not is_chief()
    monkeypatch.setenv("TF_CONFIG", _tf_config(0, [1, 2], kind="chief", chief=[9]))
    assert is_chief()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        tf_config_workers()


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_workers_train_one_model_under_multi_worker_mirrored_strategy(tmp_path):
    pytest.importorskip("tensorflow")
    import keras
    import numpy as np

    from components.ingest_images.logic import ingest_images
    from components.train_image.logic import weights_digest
    from skiff.datagen_images import image_set
    from skiff.image_data import Preprocessing, decode_pixels
    from skiff.lake import Lake
    from skiff.storage import Store

    image_set(tmp_path / "data", per_class=40, size=32)
    lake_uri = str(tmp_path / "lake")
    run = ingest_images("shapes", str(tmp_path / "data"), Lake(Store(lake_uri)), run_id="r1")
    output = tmp_path / "artifacts" / "tfjobs" / "job" / "model"
    # 120 images: 22 for test, 17 for validation, 81 to train. At 8 a batch the shards are uneven in steps
    # (train 41/40 images: 6 steps and 5; validation 9/8: 2 and 1): the workers must agree on where the data
    # ends, and a worker out of images takes part in the last step with an empty batch
    config = {"backbone": "TinyConvNet", "weights": "", "image_size": 32, "batch_size": 8, "head_epochs": 2,
              "head_lr": 3e-3, "fine_tune_epochs": 25, "fine_tune_lr": 1e-2, "fine_tune_layers": 100,
              "patience": 25, "augment": False, "threads": 1, "val_fraction": 0.14,
              "test_fraction": 0.185}
    ports = [free_port(), free_port()]
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": _tf_config(index, ports), "TF_CPP_MIN_LOG_LEVEL": "2",
               "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "components.train_image.worker", "--dataset", "shapes", "--lake-uri", lake_uri,
             "--run-id", run.run_id, "--output-uri", str(output), "--config", json.dumps(config)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=360)
            assert p.returncode == 0, err[-3000:]
            outs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [o["chief"] for o in outs] == [True, False], outs
    assert all(o["workers"] == 2 and o["strategy"] == "MultiWorkerMirroredStrategy" for o in outs), outs
    assert outs[0]["output_uri"] == str(output) and outs[1]["output_uri"] is None
    assert {"model.keras", "saved_model", "training.json", "label_map.json", "preprocessing.json", "split.json",
            "result.json"} <= {p.name for p in output.iterdir()}
    result = json.loads((output / "result.json").read_text())
    assert result["device"]["strategy"] == "MultiWorkerMirroredStrategy" and result["device"]["workers"] == 2
    assert result["device"]["replicas"] == 2 and result["device"]["loop"] == "custom"
    assert result["classes"] == ["circle", "square", "triangle"] and result["run_id"] == run.run_id
    assert set(result["phases"]) == {"head", "fine_tune"} and result["counts"] == {"train": 81, "val": 17, "test": 22}
    assert result["phases"]["head"]["trainable_backbone_layers"] == 0
    assert result["phases"]["fine_tune"]["trainable_backbone_layers"] > 0
    history = json.loads((output / "training.json").read_text())["history"]
    assert len(history["fine_tune"]["val_accuracy"]) == result["phases"]["fine_tune"]["epochs"]

    # synchronous training: both workers end with the very same weights, and the chief saved those
    model = keras.models.load_model(output / "model.keras")
    assert outs[0]["weights_sha256"] == outs[1]["weights_sha256"] == weights_digest(model)

    # the saved model predicts the held-out test images well above chance (1/3)
    test = json.loads((output / "split.json").read_text())["test"]
    pre = Preprocessing.model_validate_json((output / "preprocessing.json").read_text())
    pixels = np.stack([decode_pixels((Path(r["path"])).read_bytes(), pre).numpy() for r in test])
    predicted = model.predict(pixels, verbose=0).argmax(axis=1)
    truth = np.array([result["classes"].index(r["label"]) for r in test])
    accuracy = float((predicted == truth).mean())
    assert accuracy > 0.6, result["phases"]
    # the test accuracy the workers computed together (each on its shard) is the saved model's
    assert accuracy == pytest.approx(result["phases"]["fine_tune"]["test_accuracy"])
