#!/usr/bin/env python3
"""Download the upstream files the cluster contract suite (tests/cluster/) checks against, at the pinned tags.

On a machine with internet (``make cluster-schemas``). Each file is fetched from
``https://raw.githubusercontent.com/<repository>/<tag>/<path>`` into ``<dest>/<folder>/<path>``, with the
project's LICENSE next to it, and ``<dest>/SOURCES.md`` records repository, tag, path, size and sha256 of
each (the format tests/cluster/conftest.py reads the tags from). The tags of the components the platform
installs come from terraform/modules/platform/components.yaml, the one place they are recorded; the CRD-only
repositories (Argo CD, the Prometheus operator) are pinned below to the releases those charts ship.

    python .ci/fetch_upstream.py --dest ../shared/upstream     # where the tests look by default
    SKIFF_UPSTREAM_SCHEMAS=/path python -m pytest tests/cluster  # or point the tests elsewhere

An existing file with the same content is left alone; a download that fails stops with the URL. Only the
standard library is used.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMPONENTS = REPO / "terraform/modules/platform/components.yaml"

# folder -> (repository, the components.yaml entry whose upstream tag it takes, or a fixed tag, paths)
MANIFEST: dict[str, tuple[str, str, list[str]]] = {
    "kserve": ("kserve/kserve", "component:kserve-resources", [
        "config/crd/full/serving.kserve.io_inferenceservices.yaml",
        "config/crd/full/serving.kserve.io_servingruntimes.yaml",
        "config/crd/full/serving.kserve.io_clusterservingruntimes.yaml",
        "config/crd/full/serving.kserve.io_inferencegraphs.yaml",
        "config/crd/full/serving.kserve.io_trainedmodels.yaml",
        "config/crd/full/clusterstoragecontainer/serving.kserve.io_clusterstoragecontainers.yaml",
        "config/configmap/inferenceservice.yaml",
        "charts/kserve-crd/Chart.yaml", "charts/kserve-crd/values.yaml",
        "charts/kserve-resources/Chart.yaml", "charts/kserve-resources/values.yaml",
        # the storage URI formats the default storage initializer accepts
        "charts/kserve-resources/templates/clusterstoragecontainer.yaml",
        "charts/kserve-runtime-configs/Chart.yaml", "charts/kserve-runtime-configs/values.yaml",
    ]),
    "knative-serving": ("knative/serving", "component:knative-serving", [
        "config/core/configmaps/features.yaml",
        "vendor/knative.dev/networking/config/config-network.yaml",
        "config/core/configmaps/autoscaler.yaml",
        "config/core/configmaps/deployment.yaml",
        "config/core/300-resources/service.yaml",
        "config/core/300-resources/configuration.yaml",
        "config/core/300-resources/revision.yaml",
        "config/core/300-resources/route.yaml",
    ]),
    "knative-operator": ("knative/operator", "component:knative-operator", [
        "config/charts/knative-operator/Chart.yaml", "config/charts/knative-operator/values.yaml",
    ]),
    "knative-net-kourier": ("knative-extensions/net-kourier", "component:kourier", [
        "config/100-namespace.yaml", "config/200-bootstrap.yaml", "config/200-config.yaml",
        "config/200-serviceaccount.yaml", "config/300-controller.yaml", "config/300-gateway.yaml",
    ]),
    "argo-cd": ("argoproj/argo-cd", "v3.5.1", [
        "manifests/crds/application-crd.yaml", "manifests/crds/applicationset-crd.yaml",
        "manifests/crds/appproject-crd.yaml",
    ]),
    "argo-helm": ("argoproj/argo-helm", "component:argo-cd", [
        "charts/argo-cd/Chart.yaml", "charts/argo-cd/values.yaml",
    ]),
    "prometheus-operator": ("prometheus-operator/prometheus-operator", "v0.93.0", [
        "example/prometheus-operator-crd-full/monitoring.coreos.com_podmonitors.yaml",
        "example/prometheus-operator-crd-full/monitoring.coreos.com_servicemonitors.yaml",
        "example/prometheus-operator-crd-full/monitoring.coreos.com_prometheusrules.yaml",
    ]),
    "prometheus-community-helm-charts": ("prometheus-community/helm-charts", "component:kube-prometheus-stack", [
        "charts/kube-prometheus-stack/Chart.yaml", "charts/kube-prometheus-stack/values.yaml",
    ]),
    "nvidia-k8s-device-plugin": ("NVIDIA/k8s-device-plugin", "component:nvidia-device-plugin", [
        "deployments/helm/nvidia-device-plugin/Chart.yaml",
        "deployments/helm/nvidia-device-plugin/values.yaml",
        "deployments/helm/nvidia-device-plugin/templates/daemonset-device-plugin.yml",
    ]),
    "kubeflow-pipelines": ("kubeflow/pipelines", "component:kubeflow-pipelines", [
        "manifests/kustomize/env/platform-agnostic/kustomization.yaml",
        "manifests/kustomize/cluster-scoped-resources/kustomization.yaml",
        "manifests/kustomize/base/installs/generic/kustomization.yaml",
        "manifests/kustomize/base/pipeline/kustomization.yaml",
        "manifests/kustomize/base/pipeline/pipeline-runner-sa.yaml",
        "manifests/kustomize/base/pipeline/pipeline-runner-role.yaml",
        "manifests/kustomize/base/pipeline/pipeline-runner-rolebinding.yaml",
        "manifests/kustomize/base/installs/multi-user/api-service/params.env",
        "backend/src/apiserver/config/config.json",
    ]),
    "cert-manager": ("cert-manager/cert-manager", "component:cert-manager", [
        "deploy/charts/cert-manager/Chart.yaml", "deploy/charts/cert-manager/values.yaml",
        "deploy/charts/cert-manager/values.schema.json",
    ]),
}


def _component_tags() -> dict[str, str]:
    """components.yaml entry -> its upstream tag (PyYAML is not needed for this flat lookup)."""
    tags, current = {}, None
    for line in COMPONENTS.read_text().splitlines():
        if line and not line.startswith((" ", "#")) and line.endswith(":"):
            current = line[:-1]
        elif current and line.strip().startswith("upstream:") and "tag:" in line:
            tags[current] = line.split("tag:", 1)[1].split(",", 1)[0].strip().rstrip("}").strip()
    return tags


def resolve_tag(pin: str, tags: dict[str, str]) -> str:
    if not pin.startswith("component:"):
        return pin
    name = pin.split(":", 1)[1]
    if name not in tags:
        raise SystemExit(f"fetch_upstream: {COMPONENTS.name} has no upstream tag for {name}")
    return tags[name]


def fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - fixed https URLs
            return response.read()
    except urllib.error.URLError as e:
        raise SystemExit(f"fetch_upstream: cannot download {url}: {e}") from e


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path,
                        default=Path(os.environ.get("SKIFF_UPSTREAM_SCHEMAS") or REPO.parent / "shared/upstream"))
    args = parser.parse_args(argv)
    tags = _component_tags()
    rows, summary = [], []
    for folder, (repository, pin, paths) in MANIFEST.items():
        tag = resolve_tag(pin, tags)
        count = size = 0
        for path in ["LICENSE", *paths]:
            data = fetch(f"https://raw.githubusercontent.com/{repository}/{tag}/{path}")
            target = args.dest / folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.is_file() or target.read_bytes() != data:
                target.write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            rows.append(f"| {folder} | {repository} | {tag} | {path} | {len(data):,} | {digest} |")
            count, size = count + 1, size + len(data)
        # the commit column is what tests/cluster/conftest.py recognises a summary row by
        commit = fetch_commit(repository, tag)
        summary.append(f"| {folder} | github.com/{repository} | {tag} | {commit} | {count} | {size:,} | see LICENSE |")
        print(f"fetch_upstream: {folder} at {tag}: {count} files")
    (args.dest / "SOURCES.md").write_text(
        "# Upstream sources\n\nDownloaded by .ci/fetch_upstream.py from raw.githubusercontent.com at the tags "
        "below; nothing edited.\n\n## Summary\n\n"
        "| folder | upstream repository | tag | commit | files (incl. LICENSE) | bytes | license |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(summary) + "\n\n## Files\n\n"
        "| folder | upstream repository | tag | path in repo | bytes | sha256 |\n|---|---|---|---|---|---|\n"
        + "\n".join(rows) + "\n"
    )
    return 0


def fetch_commit(repository: str, tag: str) -> str:
    """The commit a tag points at (GitHub's API; 40 zeros where it cannot be asked, e.g. rate-limited)."""
    import json

    try:
        with urllib.request.urlopen(  # noqa: S310 - fixed https URL
            f"https://api.github.com/repos/{repository}/commits/{tag}", timeout=60
        ) as response:
            return json.loads(response.read())["sha"]
    except (urllib.error.URLError, KeyError, ValueError):
        return "0" * 40


if __name__ == "__main__":
    sys.exit(main())
