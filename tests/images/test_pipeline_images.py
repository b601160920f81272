"""The tabular pipeline end to end in containers: the same ``@dsl.pipeline`` the cluster compiles, run by
``kfp.local.DockerRunner`` on the built images (every step from ``skiff``, validation from ``skiff-tfdv``;
nothing from the host's environments), with no network. The version it registers and its metrics equal
those of a ``SubprocessRunner`` run (the project venv and .venv-tfdv) on the same data.

kfp.local's DockerRunner mounts the pipeline root at the same path in every container and nothing else, so
the data, the skiff root and the pipeline root all live under one folder; the steps run as the images' uid
10001, so that folder and what kfp.local creates in it are writable by others (umask 0 while the run lasts).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from components._image import BASE_IMAGE, TFDV_IMAGE
from skiff import datagen
from skiff.config import load_settings
from skiff.registry import ModelRegistry
from skiff.spec import load_spec
from skiff.storage import Store
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.images, pytest.mark.tfdv]

PARAMS = {"train_config": {"estimator": "logistic_regression", "cv_folds": 3}, "ingest_date": "2026-01-01",
          "run_id": "images-run"}


def _arguments(work: Path, feature_repo: str) -> dict:
    from pipelines.tabular_run import arguments

    settings = load_settings(root=str(work / ".skiff"))
    spec = load_spec(REPO / "examples" / "churn.yaml")
    args = arguments(spec, {**PARAMS, "sources": [str(work / "churn.csv")]}, settings, local=True)
    return {**args, "feature_repo": feature_repo}


def _workdir() -> Path:
    work = Path(tempfile.mkdtemp(prefix="skiff-pipeline-image-"))
    os.chmod(work, 0o777)
    datagen.dirty(datagen.churn(n=600, seed=21), seed=21).to_csv(work / "churn.csv", index=False)
    os.chmod(work / "churn.csv", 0o644)
    return work


def _run(runner, work: Path, args: dict) -> None:
    from kfp import local

    from pipelines.definitions import get_pipeline

    # the pipeline root is the one folder DockerRunner mounts: the data and the skiff root live in it
    local.init(runner=runner, pipeline_root=str(work), raise_on_error=True)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            get_pipeline("tabular").function(**args)
    except Exception as e:
        raise AssertionError(f"{type(runner).__name__} run failed: {e}\n{out.getvalue()[-6000:]}") from e
    (work / "run.log").write_text(out.getvalue())


def _registered(work: Path) -> dict:
    reg = ModelRegistry(Store(str(work / ".skiff" / "models")))
    versions = reg.versions("churn")
    assert len(versions) == 1
    mv = versions[0]
    return {"version": mv.version, "champion": mv.champion, "metrics": mv.metadata.metrics,
            "estimator": mv.metadata.estimator, "run": mv.metadata.pipeline_run_id}


@pytest.fixture(scope="module")
def subprocess_run():
    if not (REPO / ".venv-tfdv" / "bin" / "python").exists() and not os.environ.get("SKIFF_TFDV_PYTHON"):
        pytest.skip("the SubprocessRunner reference run needs .venv-tfdv (make tfdv)")
    from kfp import local

    work = _workdir()
    try:
        _run(local.SubprocessRunner(use_venv=False), work, _arguments(work, str(REPO / "feature_repo")))
        yield _registered(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_tabular_pipeline_in_containers_registers_what_the_subprocess_run_registers(engine, image, subprocess_run):
    from kfp import local

    assert image("skiff") == BASE_IMAGE and image("skiff-tfdv") == TFDV_IMAGE  # what the components name
    work = _workdir()
    old = os.umask(0)
    try:
        # network none: a step that reached for the network (a pip install, a download) would fail here
        _run(local.DockerRunner(network_mode="none"), work, _arguments(work, "/app/feature_repo"))
    finally:
        os.umask(old)
    try:
        log = (work / "run.log").read_text()
        assert f"Found image '{BASE_IMAGE}'" in log and f"Found image '{TFDV_IMAGE}'" in log
        in_containers = _registered(work)
        assert in_containers["run"] == subprocess_run["run"] == PARAMS["run_id"]
        assert in_containers["version"] == subprocess_run["version"] == 1 and in_containers["champion"]
        assert in_containers["estimator"] == subprocess_run["estimator"]
        assert in_containers["metrics"].keys() == subprocess_run["metrics"].keys()
        for k, v in subprocess_run["metrics"].items():
            assert in_containers["metrics"][k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
        print(json.dumps({"registered": in_containers}))
    finally:
        shutil.rmtree(work, ignore_errors=True)
