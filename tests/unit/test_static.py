"""Static checks of the tree: ruff on the Python code, mypy --strict on the core package, and every
component image checked by checkov (non-root user, pinned base, no secrets) plus a few rules of our own
that checkov does not know."""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.checkov import failed_checks, run_checkov, summary
from tests.conftest import REPO

DOCKERFILES = sorted((REPO / "components").glob("*/Dockerfile"))


def _tool(name: str) -> str:
    for candidate in (REPO / ".tools" / "bin" / name, Path(sys.executable).with_name(name)):
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} not found in .tools/bin, the venv or on PATH (`make test` installs it)")
    return found


def test_ruff_finds_nothing():
    proc = subprocess.run([_tool("ruff"), "check", "skiff", "components", "pipelines", "serving", "tests", "bench"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:]


def _mypy_config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]


def test_mypy_config_is_strict_on_the_core_with_named_exceptions_only():
    config = _mypy_config()
    assert config["strict"] is True and config["files"] == ["skiff", "serving/runtime"]
    assert "ignore_missing_imports" not in config, "list the untyped third-party packages, never a global ignore"
    first_party = ("skiff", "components", "pipelines", "serving")
    for override in config["overrides"]:
        modules = override["module"] if isinstance(override["module"], list) else [override["module"]]
        assert all("*" not in m or m.endswith(".*") for m in modules), modules
        if override.get("ignore_missing_imports"):
            assert not any(m.split(".")[0] in first_party for m in modules), modules
        if override.get("follow_imports") == "silent":  # read for their types, their errors not reported
            assert not any(m.split(".")[0] == "skiff" for m in modules), modules
            assert not any(m in ("serving.*", "serving.runtime") or m.startswith("serving.runtime.")
                           for m in modules), f"serving.runtime is checked like the core: {modules}"
        relaxed = {k for k, v in override.items() if v is False or k == "disable_error_code"}
        if relaxed:  # a module still to type: named one by one, in the checked packages, never a wildcard
            assert all(m.startswith(("skiff.", "serving.runtime.")) and not m.endswith("*") for m in modules), modules


@pytest.mark.slow
def test_mypy_strict_on_the_core_finds_nothing():
    proc = subprocess.run([_tool("mypy")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Success: no issues found" in proc.stdout


def test_every_component_has_an_image():
    assert len(DOCKERFILES) >= 6
    for path in DOCKERFILES:
        text = path.read_text()
        base = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
        assert ":" in base and not base.endswith(":latest"), f"{path}: pin the base image ({base})"
        users = re.findall(r"^USER\s+(\S+)", text, re.M)
        assert users and users[-1] not in ("root", "0"), f"{path}: the image must end as a non-root user"
        assert not re.search(r"(?i)(password|secret|token|api_key)\s*=", text), f"{path}: no secrets in images"


@pytest.mark.slow
def test_checkov_passes_every_dockerfile():
    reports = run_checkov(_tool("checkov"), "dockerfile", DOCKERFILES, REPO)
    failed = [(c["file_path"], c["check_id"], c["check_name"]) for c in failed_checks(reports)]
    assert not failed, failed
    assert summary(reports)["passed"] >= 10 * len(DOCKERFILES)
