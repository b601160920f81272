"""The layering of skiff holds: import-linter's contracts in .importlinter are kept on the tree, every
core module is under the core's contract, and the contracts do catch a step importing another step."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

CONFIG = REPO / ".importlinter"
PACKAGES = ("skiff", "components", "pipelines", "serving")
FACES = ("skiff.cli", "skiff.api")


def _lint_imports() -> str:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        found = shutil.which("lint-imports")
        assert found, "lint-imports is missing: it is in the dev extra that `make setup` installs"
        exe = Path(found)
    return str(exe)


def _run(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_lint_imports(), "--config", str(cwd / ".importlinter"), "--no-cache", "--no-logo"],
                          cwd=cwd, capture_output=True, text=True, env={"PYTHONPATH": str(cwd), "PATH": ""})


def test_the_tree_keeps_every_layering_contract():
    proc = _run(REPO)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_every_core_module_is_under_the_core_contract():
    config = configparser.ConfigParser()
    config.read(CONFIG)
    listed = set(config["importlinter:contract:core"]["source_modules"].split())
    core = set()
    for path in (REPO / "skiff").iterdir():
        name = f"skiff.{path.stem}"
        if path.name.startswith("__") or name in FACES or path.name == "__pycache__":
            continue
        if path.suffix == ".py" or (path / "__init__.py").exists():
            core.add(name)
    assert core == listed, f"add to .importlinter's core contract: {sorted(core - listed)}; " \
                           f"no longer in skiff/: {sorted(listed - core)}"


def test_a_step_importing_another_step_breaks_the_contract(tmp_path):
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(CONFIG, tmp_path / ".importlinter")
    (tmp_path / "components" / "train" / "sideways.py").write_text(
        "from components.ingest.logic import ingest  # a step reaching into another step\n")
    (tmp_path / "serving" / "into_a_step.py").write_text("import components.features.logic\n")
    proc = _run(tmp_path)
    assert proc.returncode != 0
    assert "A step imports core only, never another step BROKEN" in proc.stdout, proc.stdout[-3000:]
    assert "Serving imports core only: never a step, a pipeline or a face BROKEN" in proc.stdout
    assert "components.train.sideways -> components.ingest.logic" in proc.stdout
