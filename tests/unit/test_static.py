"""Static checks of the tree: ruff on the Python code, and every component image checked by checkov
(non-root user, pinned base, no secrets) plus a few rules of our own that checkov does not know."""

import re
import shutil
import subprocess
import sys
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
