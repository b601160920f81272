"""Static checks of the tree: ruff on the Python code and mypy --strict on the core package. The images'
Dockerfile has its own static checks (hadolint, checkov, non-root, locks) in tests/images/test_dockerfile.py."""

import subprocess
import tomllib

import pytest

from tests.conftest import REPO, require_tool


def test_ruff_finds_nothing():
    proc = subprocess.run([require_tool("ruff"), "check", "skiff", "components", "pipelines", "serving", "tests", "bench"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:]


def _mypy_config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]


def test_mypy_config_is_strict_on_the_core_with_named_exceptions_only():
    config = _mypy_config()
    assert config["strict"] is True and config["files"] == ["skiff", "serving/runtime", "components", "pipelines"]
    assert "ignore_missing_imports" not in config, "list the untyped third-party packages, never a global ignore"
    first_party = ("skiff", "components", "pipelines", "serving")
    for override in config["overrides"]:
        modules = override["module"] if isinstance(override["module"], list) else [override["module"]]
        assert all("*" not in m or m.endswith(".*") for m in modules), modules
        if override.get("ignore_missing_imports"):
            assert not any(m.split(".")[0] in first_party for m in modules), modules
        if override.get("follow_imports") == "silent":  # read for their types, their errors not reported
            assert not any(m.split(".")[0] in ("skiff", "components", "pipelines") for m in modules), modules
            assert not any(m in ("serving.*", "serving.runtime") or m.startswith("serving.runtime.")
                           for m in modules), f"serving.runtime is checked like the core: {modules}"
        relaxed = {k for k, v in override.items() if v is False or k in ("disable_error_code", "ignore_errors")}
        if relaxed:  # a module still to type: named one by one, in the checked packages, never a wildcard
            checked = ("skiff.", "serving.runtime.", "components.", "pipelines.")
            assert all(m.startswith(checked) and not m.endswith("*") for m in modules), modules


@pytest.mark.slow
def test_mypy_strict_on_the_core_finds_nothing():
    proc = subprocess.run([require_tool("mypy")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Success: no issues found" in proc.stdout
