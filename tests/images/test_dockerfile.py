"""The root Dockerfile, its locks and its build context, checked without building anything: hadolint and
checkov clean, one target per image name of components/_image.py, every final image non-root with a
numeric UID, no compiler outside the TFDV build stage, dependencies only from hashed locks, and a build
context that holds the package and nothing else."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from components._image import IMAGES
from tests.checkov import failed_checks, run_checkov, summary
from tests.conftest import REPO, require_tool

DOCKERFILE = REPO / "Dockerfile"
LOCKS = REPO / "requirements"


def _stages() -> dict[str, str]:
    """Stage name -> its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if m := re.match(r"^FROM\s+\S+\s+AS\s+(\S+)", line, re.I):
            current = m.group(1)
            stages[current] = line + "\n"
        elif current and not line.lstrip().startswith("#"):
            stages[current] += line + "\n"
    return stages


def _parent(stage: str, stages: dict[str, str]) -> str | None:
    base = re.match(r"^FROM\s+(\S+)", stages[stage]).group(1)
    return base if base in stages else None


def _lineage(stage: str, stages: dict[str, str]) -> list[str]:
    chain = [stage]
    while (p := _parent(chain[-1], stages)) is not None:
        chain.append(p)
    return chain


def test_hadolint_finds_nothing():
    proc = subprocess.run([require_tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_checkov_passes_the_dockerfile():
    reports = run_checkov(require_tool("checkov"), "dockerfile", [DOCKERFILE], REPO)
    failed = [(c["check_id"], c["check_name"], c.get("file_line_range")) for c in failed_checks(reports)]
    assert not failed, failed
    assert summary(reports)["passed"] >= 10


def test_every_image_name_is_a_target_and_every_final_image_runs_as_a_numeric_non_root_user():
    stages = _stages()
    assert set(IMAGES) <= set(stages), f"Dockerfile targets {sorted(stages)} lack {set(IMAGES) - set(stages)}"
    for name in IMAGES:
        users = [u for s in _lineage(name, stages) for u in re.findall(r"^USER\s+(\S+)", stages[s], re.M)]
        assert users, f"{name}: no USER"
        # the last USER of the image's own stage wins; it is numeric so runAsNonRoot can verify it
        last = re.findall(r"^USER\s+(\S+)", stages[name], re.M)[-1]
        uid = last.split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{name}: USER {last} must be a numeric non-root uid"


def test_the_base_is_an_argument_pinned_by_default_and_each_image_is_labelled():
    text = DOCKERFILE.read_text()
    default = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M)
    assert default, "ARG BASE_IMAGE=<default> before the first FROM, so a site can substitute its own base"
    assert ":" in default.group(1) and not default.group(1).endswith(":latest")
    assert re.search(r"^FROM \$\{BASE_IMAGE\} AS base$", text, re.M)
    for label in ("source", "revision", "version"):
        assert f"org.opencontainers.image.{label}=" in text
    assert "PYTHONDONTWRITEBYTECODE=1" in text
    assert not re.search(r"(?i)(password|secret|token|api_key)\s*=", text), "no secrets in the Dockerfile"


def test_no_compiler_or_package_manager_run_reaches_a_final_image():
    stages = _stages()
    for name in IMAGES:
        for stage in _lineage(name, stages):
            body = stages[stage]
            assert "apt-get" not in body and "gcc" not in body, f"{name}: stage {stage} installs build tools"
            # what the final images copy from the tool stages: environments, never /opt/build (bind-mounted)
            for src in re.findall(r"COPY --from=(\S+) (\S+)", body):
                assert src[1] != "/opt/build", f"{name}: copies the build tools"


def test_the_extra_ca_is_a_build_secret_never_a_copied_file():
    text = DOCKERFILE.read_text()
    assert "--mount=type=secret,id=extra_ca" in text
    assert not re.search(r"^(COPY|ADD)\s.*\.(pem|crt)\b", text, re.M | re.I)


def test_dependencies_come_only_from_hashed_locks():
    text = DOCKERFILE.read_text()
    installs = re.findall(r"(?:uv|pip) (?:pip )?install[^&;]*", re.sub(r"\\\n", " ", text))
    assert installs
    for cmd in installs:
        assert "--require-hashes" in cmd or "--no-deps" in cmd, f"an install without hashes: {cmd}"
    for lock in ("skiff.txt", "skiff-gpu.txt", "tfdv.txt", "build.txt"):
        body = (LOCKS / lock).read_text()
        pins = re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==\S+", body, re.M)
        assert pins, lock
        entries = re.split(r"\n(?=[A-Za-z0-9])", body.split("\n", 2)[-1])
        for entry in entries:
            if re.match(r"^[A-Za-z0-9]", entry):
                assert "--hash=sha256:" in entry, f"{lock}: {entry.splitlines()[0]} has no hash"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_image_lock_holds_every_dependency_of_the_package_and_its_cluster_extras():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"]) + project["optional-dependencies"]["aws"] + \
        project["optional-dependencies"]["azure"]
    for lock, extra in (("skiff.txt", []), ("skiff-gpu.txt", project["optional-dependencies"]["gpu"])):
        pinned = {_norm(m) for m in re.findall(r"^([A-Za-z0-9_.\-]+)==", (LOCKS / lock).read_text(), re.M)}
        for req in wanted + extra:
            name = _norm(re.match(r"[A-Za-z0-9_.\-]+", req).group(0))
            assert name in pinned, f"requirements/{lock} lacks {name} (run `make lock`)"
    tfdv = (LOCKS / "tfdv.txt").read_text()
    assert re.search(r"^tensorflow-data-validation==1\.16\.1 ", tfdv, re.M)


def test_the_build_context_is_the_package_and_nothing_else():
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "start from nothing and let through what the Dockerfile copies"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert not allowed & {".venv", ".venv-tfdv", ".tools", ".skiff", ".git", "tests", "infra", "terraform"}
    copied = set(re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE.read_text(), re.M))
    assert {Path(c).parts[0] for c in copied} <= allowed, copied - allowed
