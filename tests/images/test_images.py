"""Each image, built here from the root Dockerfile: non-root, read-only-root friendly, and able to import
every module of the package (so no step, server or face can start into a missing dependency); the TFDV
image's second environment imports TFDV; sizes are reported at the end of the run (skiff <= 1.5 GB)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import REPO
from tests.images.conftest import READ_ONLY, run_in

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.images]

PACKAGES = ("skiff", "components", "pipelines", "serving")
#: Imports every module of skiff's four packages, lists the files installed with them, and says who it ran
#: as. Only found, not imported: __main__ modules (they run a program) and Alembic's migration env script
#: (it runs inside Alembic's migration context only).
IMPORT_ALL = f"PACKAGES = {PACKAGES!r}\n" + """
import importlib, json, os, pathlib, pkgutil
failed, seen, files = {}, [], []
for top in PACKAGES:
    pkg = importlib.import_module(top)
    root = pathlib.Path(pkg.__path__[0])
    files += [str(p.relative_to(root.parent)) for p in root.rglob("*") if p.is_file() and p.suffix != ".pyc"]
    for m in pkgutil.walk_packages(pkg.__path__, top + "."):
        seen.append(m.name)
        if m.name.endswith((".__main__", ".migrations.env")):
            continue
        try:
            importlib.import_module(m.name)
        except Exception as e:
            failed[m.name] = repr(e)[:300]
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "modules": seen, "failed": failed, "files": files}))
"""


def _tracked_package_files() -> set[str]:
    proc = subprocess.run(["git", "ls-files", *PACKAGES], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip("not a git checkout: the package's files cannot be listed")
    return {f for f in proc.stdout.split() if "__pycache__" not in f}


@pytest.mark.parametrize("name", ["skiff", "skiff-tfdv"])
def test_image_runs_as_non_root_on_a_read_only_root_and_imports_every_module(engine, image, name):
    ref = image(name)
    proc = run_in(engine, ref, "python", "-c", IMPORT_ALL, args=("--read-only", "--network=none"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["uid"] == 10001 and out["gid"] == 10001  # the image's own user, nothing passed
    assert out["failed"] == {}
    # every file of the package's source tree is in the image (a data file the wheel left out would be
    # missing at run time: declare it as package data in pyproject.toml)
    missing = _tracked_package_files() - set(out["files"])
    assert not missing, f"files of the package missing from the image: {sorted(missing)[:20]}"
    for module in ("skiff.cli", "skiff.api", "components.validate.component", "pipelines.tabular",
                   "serving.runtime.server", "serving.runtime.transformer", "serving.__main__"):
        assert module in out["modules"]
    # no compiler or package manager tooling left for a process to use
    tools = run_in(engine, ref, "sh", "-c", "command -v gcc cc g++ uv || true", args=("--network=none",))
    assert tools.stdout.strip() == "", tools.stdout


def test_the_tfdv_image_runs_tfdv_in_its_own_environment(engine, image):
    ref = image("skiff-tfdv")
    code = "import tensorflow_data_validation as t, pandas, google.protobuf as p; print(t.__version__, p.__version__)"
    proc = run_in(engine, ref, "sh", "-c", f'"$SKIFF_TFDV_PYTHON" -c "{code}"', args=READ_ONLY + ("--network=none",))
    assert proc.returncode == 0, proc.stderr[-3000:]
    tfdv_version, protobuf = proc.stdout.split()[-2:]
    assert tfdv_version == "1.16.1" and protobuf.startswith("4.")
    # the step's own interpreter is the skiff environment (kfp needs protobuf >= 6)
    step = run_in(engine, ref, "python", "-c", "import google.protobuf as p, kfp; print(p.__version__)",
                  args=("--network=none",))
    assert step.returncode == 0 and step.stdout.strip().startswith("6."), step.stderr[-2000:]


def test_images_carry_oci_labels_and_the_skiff_image_stays_under_its_size_budget(engine, image):
    from skiff import __version__

    for name in ("skiff", "skiff-tfdv"):
        info = engine.inspect(image(name))
        labels = info["Config"]["Labels"]
        assert labels["org.opencontainers.image.version"] == __version__
        assert labels["org.opencontainers.image.source"].startswith("https://")
        assert len(labels["org.opencontainers.image.revision"]) in (40, 7) or \
            labels["org.opencontainers.image.revision"] == "unknown"
        assert info["Config"]["User"] == "10001:10001"
        assert "PYTHONDONTWRITEBYTECODE=1" in info["Config"]["Env"]
    assert engine.size_mb(image("skiff")) <= 1500, "the skiff image's budget is 1.5 GB"
