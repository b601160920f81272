"""The registry the environment files name is one the serving identity may read (issue 11, finding 7).

The Terraform modules grant each workload identity top-level folders of the skiff root
(``workload_storage_access``: serving reads ``models/`` and ``feast/``; the rollout controller reads
``models/``). An environment's ``registry:`` becomes every InferenceService's ``storageUri`` and
``SKIFF_REGISTRY``, so it must sit under a folder both may read: any other prefix is an AccessDenied at
the first model load.
"""

from __future__ import annotations

from urllib.parse import urlparse

import hcl2
import pytest

from serving.deploy.gitops import Environments
from skiff.config import Settings
from tests.conftest import REPO


def _granted(module: str) -> dict[str, list[str]]:
    with open(REPO / "terraform/modules" / module / "variables.tf") as f:
        variables = {k.strip('"'): v for var in hcl2.load(f)["variable"] for k, v in var.items()}
    default = variables["workload_storage_access"]["default"]
    return {k.strip('"'): [p.strip('"') for p in v["read_prefixes"]] for k, v in default.items()}


@pytest.mark.parametrize("module", ["aws-eks", "azure-aks"])
@pytest.mark.parametrize("env", Environments(REPO / "infra/environments").names())
def test_environment_registry_is_under_a_prefix_serving_and_rollout_may_read(module, env):
    registry = Environments(REPO / "infra/environments").environment(env).registry
    assert registry, f"{env}: environment.yaml names no registry"
    url = urlparse(registry)
    folder = url.path.strip("/").split("/")[0]
    granted = _granted(module)
    assert folder in granted["serving"], f"{env}: {registry} is under {folder}/, serving may read {granted['serving']}"
    assert folder in granted["rollout"], f"{env}: {registry} is under {folder}/, rollout may read {granted['rollout']}"
    # and it is where skiff itself puts the registry under that root (Terraform's skiff_root output)
    root = f"{url.scheme}://{url.netloc}"
    assert registry.rstrip("/") == Settings(root=root).registry_uri
