"""One image family, everywhere the same (issue 10): the images the image module defines are the ones the
compiled pipeline IR, the ServingRuntimes, the Helm charts, the release workflow, the Dockerfile and the
Terraform registries reference — no side names an image the others do not build or store."""

from __future__ import annotations

import re
import subprocess

import hcl2
import pytest
import yaml

from components import _image
from tests.conftest import REPO, require_tool

DEFINED = set(_image.IMAGES)


def _name(ref: str) -> str:
    """``<registry>/<name>:<tag>`` -> name, checking registry and tag are the module's."""
    m = re.fullmatch(r"(?P<registry>.+)/(?P<name>[^/:@]+)[:@](?P<tag>.+)", ref)
    assert m, f"not an image reference: {ref}"
    assert ref == _image.image_ref(m["name"]), f"{ref}: not the image module's {_image.image_ref(m['name'])}"
    return m["name"]


@pytest.fixture(scope="module")
def ir_images(tmp_path_factory) -> set[str]:
    from pipelines import runner
    from pipelines.definitions import PIPELINES

    names: set[str] = set()
    for pipeline in PIPELINES:
        out = runner.compile_pipeline(pipeline, tmp_path_factory.mktemp("ir") / f"{pipeline}.yaml")
        names |= {_name(ref) for ref in re.findall(r"(?m)^\s+image: (\S+)$", out.read_text())}
    return names


@pytest.fixture(scope="module")
def chart_images() -> dict[str, set[str]]:
    """Images of the platform chart's objects by kind (every flavor's runtime, every component on)."""
    out = subprocess.run(
        [require_tool("helm"), "template", "skiff", str(REPO / "helm/skiff"), "--namespace", "skiff",
         "-f", str(REPO / "helm/skiff/ci/full-values.yaml"), "--set", "servingRuntimes.flavors={sklearn,tensorflow}",
         "--set", f"image.registry={_image.REGISTRY}", "--set", f"image.tag={_image.TAG}"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    by_kind: dict[str, set[str]] = {}
    for doc in yaml.safe_load_all(out.stdout):
        if doc:
            refs = re.findall(r"'image': '([^']+)'", repr(doc))
            by_kind.setdefault(doc["kind"], set()).update(_name(r) for r in refs)
    return by_kind


def test_every_defined_image_is_used_and_nothing_else_is(ir_images, chart_images):
    used = ir_images | set().union(*chart_images.values())
    assert used == DEFINED


def test_serving_runtimes_run_the_serving_images(chart_images):
    assert chart_images["ServingRuntime"] == {"skiff", "skiff-gpu"}


def test_helm_defaults_are_the_image_modules():
    values = yaml.safe_load((REPO / "helm/skiff/values.yaml").read_text())
    chart = yaml.safe_load((REPO / "helm/skiff/Chart.yaml").read_text())
    assert values["image"]["registry"] == "ghcr.io/skiff-ml"  # the module's default (SKIFF_IMAGE_REGISTRY unset)
    assert (values["image"]["tag"] or chart["appVersion"]).replace("+", "-") == _image.TAG


def test_the_release_workflow_builds_every_image():
    doc = yaml.safe_load((REPO / ".github/workflows/release.yml").read_text())
    assert {m["image"] for m in doc["jobs"]["images"]["strategy"]["matrix"]["include"]} == DEFINED


def test_the_dockerfile_has_a_target_per_image():
    dockerfile = REPO / "Dockerfile"
    if not dockerfile.is_file():
        pytest.skip("no root Dockerfile yet")
    targets = set(re.findall(r"(?im)^FROM\s+\S+\s+AS\s+(\S+)", dockerfile.read_text()))
    assert targets >= DEFINED


def test_terraform_creates_a_registry_repository_per_image():
    with open(REPO / "terraform/modules/aws-eks/variables.tf") as f:
        variables = {k.strip('"'): v for var in hcl2.load(f)["variable"] for k, v in var.items()}
    assert {r.strip('"') for r in variables["ecr_repositories"]["default"]} == DEFINED
    # ACR creates a repository on the first push: the Azure module names none, so there is nothing to differ
