"""What the platform installs, held against the upstream charts at the pinned tags (issue 11, finding 1).

``terraform/modules/platform/components.yaml`` records every version once; each Helm release of the module
takes its chart, repository and version from it. Here each entry is held against the upstream ``Chart.yaml``
at the tag ``SOURCES.md`` records, every release against a chart that exists upstream, and the control
plane's versions against the SDK pins in ``pyproject.toml``.
"""

from __future__ import annotations

import re
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.cluster.conftest import upstream_tags, upstream_yaml
from tests.unit.test_terraform import config, resources

REPO = Path(__file__).resolve().parents[2]
PLATFORM = REPO / "terraform/modules/platform"
_COMPONENT_REF = re.compile(r'^\$\{local\.components\["([^"]+)"\]\.(\w+)\}$')


@cache
def components() -> dict[str, dict]:
    path = PLATFORM / "components.yaml"
    assert path.is_file(), "terraform/modules/platform/components.yaml (the one place versions live) is missing"
    return yaml.safe_load(path.read_text())


def charted() -> list[str]:
    return [k for k, c in components().items() if "chart" in c and "upstream" in c and "chart" in c["upstream"]]


def release_component(release: dict, field: str) -> tuple[str | None, str]:
    """(component key, resolved value) of a helm_release argument that names components.yaml, or
    (None, the literal) for one that does not."""
    raw = release.get(field, "")
    m = _COMPONENT_REF.match(str(raw))
    if m:
        key, attr = m.groups()
        assert key in components(), f"components.yaml has no {key!r}"
        return key, str(components()[key][attr])
    return None, str(raw)


def _tag_version(tag: str) -> str:
    """The version in a release tag: knative-v1.23.0 -> v1.23.0, kube-prometheus-stack-88.5.3 -> 88.5.3."""
    m = re.search(r"v?\d+\.\d+\.\d+$", tag)
    assert m, tag
    return m.group(0)


def _minor(version: str) -> tuple[int, int]:
    major, minor = re.match(r"v?(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


def _sdk_pin(package: str) -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d for d in deps if re.match(rf"^{re.escape(package)}\s*==", d)]
    assert len(pins) == 1, f"pyproject.toml pins {package} {len(pins)} times: {pins}"
    return pins[0].split("==", 1)[1].strip()


@pytest.mark.parametrize("key", ["cert-manager", "knative-operator", "kserve-crd", "kserve-resources",
                                 "kube-prometheus-stack", "argo-cd", "nvidia-device-plugin"])
def test_component_is_the_upstream_chart_at_the_pinned_tag(key):
    entry = components()[key]
    up = entry["upstream"]
    assert upstream_tags().get(up["folder"]) == up["tag"], (
        f"{key}: components.yaml says {up['folder']} at {up['tag']}, SOURCES.md has {upstream_tags().get(up['folder'])}"
    )
    chart = upstream_yaml(f"{up['folder']}/{up['chart']}/Chart.yaml")
    assert chart["name"] == entry["chart"], f"{key}: upstream chart at {up['chart']} is named {chart['name']}"
    # cert-manager and the Knative operator leave version placeholders for their release tooling, which
    # publishes the chart at the tag's version; elsewhere the chart's version is the exact string Helm asks
    # the repository for (KServe's OCI tags keep the "v").
    upstream_version = str(chart["version"])
    if upstream_version in ("v0.0.0", "PLACEHOLDER"):
        upstream_version = _tag_version(up["tag"])
    assert str(entry["version"]) == upstream_version, (
        f"{key}: installs {entry['version']}, the upstream chart at {up['tag']} is {upstream_version}"
    )


@pytest.mark.parametrize("key", ["knative-serving", "kourier", "kubeflow-pipelines"])
def test_components_installed_without_a_chart_match_their_upstream_tag(key):
    entry = components()[key]
    tag = upstream_tags().get(entry["upstream"]["folder"])
    assert tag == entry["upstream"]["tag"], f"{key}: SOURCES.md has {tag}"
    assert _tag_version(tag).lstrip("v").startswith(str(entry["version"]).lstrip("v")), (key, entry["version"], tag)


def upstream_charts() -> dict[str, str]:
    """chart name -> version of every Chart.yaml in the pinned upstream copies."""
    from tests.cluster.conftest import upstream_roots

    charts: dict[str, str] = {}
    for root in upstream_roots():
        for chart_yaml in sorted(root.glob("*/**/Chart.yaml")):
            rel = str(chart_yaml.relative_to(root))
            chart = upstream_yaml(rel)
            charts.setdefault(chart["name"], str(chart["version"]))
    if not charts:
        pytest.skip("no upstream Chart.yaml found (set SKIFF_UPSTREAM_SCHEMAS or run make cluster-schemas)")
    return charts


def test_every_release_installs_an_upstream_chart_that_exists():
    """Finding 1: the KServe controller was installed as chart "kserve", which does not exist at the
    pinned version (the controller chart is kserve-resources, the CRDs kserve-crd)."""
    releases = resources(config("modules/platform"), "helm_release")
    remote = {n: r for n, r in releases.items() if "repository" in r}
    assert remote, "no remote helm_release in modules/platform"
    known = upstream_charts()
    for name, release in remote.items():
        key, chart = release_component(release, "chart")
        if key is not None and "upstream" not in components()[key]:
            continue  # no pinned upstream copy (cluster-autoscaler)
        assert chart in known, (
            f"helm_release.{name} installs chart {chart!r}, which no pinned upstream repository has "
            f"(upstream charts: {sorted(known)})"
        )


def test_every_release_takes_chart_version_and_values_from_components_yaml():
    releases = resources(config("modules/platform"), "helm_release")
    for name, release in ((n, r) for n, r in releases.items() if "repository" in r):
        key, chart = release_component(release, "chart")
        assert key is not None, f"helm_release.{name} names chart {chart!r} outside components.yaml"
        for field in ("repository", "version", "namespace"):
            assert release_component(release, field)[0] == key, f"helm_release.{name}.{field} is not {key}'s"
        for used in re.findall(r'local\.chart_values\["([^"]+)"\]', " ".join(release.get("values", []))):
            assert used == key, f"helm_release.{name} installs {key} with {used}'s values"


def test_kserve_is_installed_as_crds_then_controller():
    releases = resources(config("modules/platform"), "helm_release")
    by_chart = {release_component(r, "chart")[1]: (n, r) for n, r in releases.items() if "repository" in r}
    assert {"kserve-crd", "kserve-resources"} <= set(by_chart)
    assert "kserve" not in by_chart
    controller_name, controller = by_chart["kserve-resources"]
    crd_name, _ = by_chart["kserve-crd"]
    assert f"${{helm_release.{crd_name}}}" in controller["depends_on"]
    # the controller's webhooks need cert-manager's certificates
    _, crd = by_chart["kserve-crd"]
    assert "${helm_release.cert_manager}" in crd["depends_on"]
    assert components()["kserve-crd"]["version"] == components()["kserve-resources"]["version"]


def test_kserve_control_plane_matches_the_sdk_pin():
    """Finding 1: KServe 0.17 was pinned under a 0.21 SDK. The control plane may trail the SDK by one minor
    release (same v1beta1 API); never lead it, never trail further."""
    sdk = _sdk_pin("kserve")
    for key in ("kserve-crd", "kserve-resources"):
        plane = str(components()[key]["version"])
        (s_major, s_minor), (p_major, p_minor) = _minor(sdk), _minor(plane)
        assert s_major == p_major and 0 <= s_minor - p_minor <= 1, (
            f"KServe control plane {plane} ({key}) and SDK {sdk} (pyproject.toml) are more than one minor apart"
        )


def test_kfp_backend_matches_the_sdk_pin():
    sdk, backend = _sdk_pin("kfp"), str(components()["kubeflow-pipelines"]["version"])
    assert _minor(sdk) == _minor(backend), f"kfp SDK {sdk} against a {backend} backend"


def test_versions_are_recorded_once():
    """No version literal in the module's HCL: every version comes from components.yaml."""
    for tf in sorted(PLATFORM.glob("*.tf")):
        for n, line in enumerate(tf.read_text().splitlines(), 1):
            if re.match(r"^\s*version\s*=", line) and "local.components" not in line:
                if tf.name == "versions.tf":
                    continue  # provider constraints
                pytest.fail(f"{tf.name}:{n}: a version outside components.yaml: {line.strip()}")


def test_make_cluster_schemas_fetches_the_files_at_the_tags_the_tests_hold():
    """.ci/fetch_upstream.py downloads at the components.yaml tags what SOURCES.md records here."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fetch_upstream", REPO / ".ci/fetch_upstream.py")
    fetch_upstream = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetch_upstream)
    tags = fetch_upstream._component_tags()
    for key, entry in components().items():
        if "upstream" in entry:
            assert tags[key] == entry["upstream"]["tag"], key
    pinned = upstream_tags()
    for folder, (_, pin, _paths) in fetch_upstream.MANIFEST.items():
        assert fetch_upstream.resolve_tag(pin, tags) == pinned[folder], folder
    # every upstream file the platform tests read is in the manifest
    read = {("kserve", "charts/kserve-resources/values.yaml"), ("knative-serving", "config/core/configmaps/features.yaml"),
            ("nvidia-k8s-device-plugin", "deployments/helm/nvidia-device-plugin/templates/daemonset-device-plugin.yml"),
            ("kubeflow-pipelines", "backend/src/apiserver/config/config.json"),
            ("argo-cd", "manifests/crds/application-crd.yaml"), ("knative-net-kourier", "config/300-gateway.yaml")}
    for folder, path in read:
        assert path in fetch_upstream.MANIFEST[folder][2], (folder, path)
