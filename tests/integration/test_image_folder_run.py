"""``skiff run image --local --param data=DIR`` without a spec file: the ImageFolder defines the data set (named
after the folder, or ``--param name=``), and ``backbone``, ``weights``, ``image_size`` and ``epochs`` are
shortcuts for the training config. The arguments are checked in-process; one real run goes through the CLI
under kfp.local (1 epoch per phase, 32 px images, a tiny backbone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipelines.definitions import get_pipeline
from pipelines.image_run import folder_spec
from skiff.config import Settings
from skiff.errors import UsageError
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def _folder(tmp_path, name="My Photos 2026"):
    data = tmp_path / name
    for cls in ("cat", "dog"):
        (data / cls).mkdir(parents=True)
        (data / cls / "x.png").write_bytes(b"png")
    return data


def test_the_folder_names_the_data_set_and_the_shortcuts_set_the_training_config(tmp_path):
    data = _folder(tmp_path)
    params = {"data": str(data), "backbone": "TinyConvNet", "epochs": 1, "image_size": 32, "weights": ""}
    spec = folder_spec(params)
    assert spec.name == "My_Photos_2026"
    args = get_pipeline("image").arguments(spec, params, Settings(root=str(tmp_path / "root")), local=True)
    assert args["dataset"] == args["model_name"] == "My_Photos_2026" and args["data"] == str(data.resolve())
    assert args["train_config"] == {"backbone": "TinyConvNet", "head_epochs": 1, "fine_tune_epochs": 1,
                                    "image_size": 32, "weights": ""}
    assert not {"backbone", "epochs", "image_size", "weights", "name"} & set(args)

    named = {"data": str(data), "name": "pets"}
    assert folder_spec(named).name == "pets" and "name" not in named
    assert folder_spec({"data": str(tmp_path / "123")}).name == "images_123"


@pytest.mark.parametrize("params, reason", [
    ({}, "give --param data=DIR"),
    ({"name": "9lives"}, "give --param data=DIR"),
])
def test_a_run_without_spec_or_folder_is_refused(params, reason):
    with pytest.raises(UsageError, match=reason):
        folder_spec(params)


def test_conflicting_shortcuts_and_bad_values_are_usage_errors(tmp_path):
    data = _folder(tmp_path)
    definition = get_pipeline("image")
    settings = Settings(root=str(tmp_path / "root"))
    params = {"data": str(data), "epochs": 2, "train_config": {"head_epochs": 3}}
    with pytest.raises(UsageError, match="disagree"):
        definition.arguments(folder_spec(dict(params)), params, settings, local=True)
    with pytest.raises(UsageError, match="train_config"):
        p = {"data": str(data), "backbone": "AlexNet"}
        definition.arguments(folder_spec(p), p, settings, local=True)
    with pytest.raises(UsageError, match="'epochs' must be a JSON integer"):
        p = {"data": str(data), "epochs": "many"}
        definition.arguments(folder_spec(p), p, settings, local=True)
    with pytest.raises(UsageError, match="cannot name the image data set"):
        folder_spec({"data": str(data), "name": "has space"})


def _skiff(*args, root, timeout=600):
    env = {**os.environ, "SKIFF_ROOT": str(root), "TF_NUM_INTRAOP_THREADS": "1", "OMP_NUM_THREADS": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "skiff", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=timeout)


def test_the_cli_refuses_a_folder_run_without_data(tmp_path):
    r = _skiff("run", "image", "--local", "--json", root=tmp_path / "root", timeout=120)
    assert r.returncode != 0 and "give --param data=DIR" in (r.stdout + r.stderr)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_skiff_run_image_on_a_folder_alone_trains_and_registers(tmp_path):
    pytest.importorskip("tensorflow")
    from skiff.datagen_images import image_set
    from skiff.registry import ModelRegistry
    from skiff.storage import Store

    image_set(tmp_path / "shapes-folder", per_class=12, size=32)
    root = tmp_path / "root"
    r = _skiff("run", "image", "--local", "--json", "--param", f"data={tmp_path / 'shapes-folder'}",
               "--param", "backbone=TinyConvNet", "--param", "epochs=1", "--param", "image_size=32",
               "--param", "weights=", root=root)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["status"] == "SUCCESS" and summary["dataset"] == "shapes-folder"
    mv = ModelRegistry(Store(str(root / "models"))).get("shapes-folder", 1)
    assert mv.metadata.flavor == "tensorflow" and mv.metadata.model_file == "model.keras"
    assert mv.metadata.params["backbone"] == "TinyConvNet" and mv.metadata.params["head_epochs"] == 1
    assert mv.metadata.params["fine_tune_epochs"] == 1 and mv.metadata.extra["preprocessing"]["height"] == 32
    assert "model.joblib" not in mv.metadata.files
