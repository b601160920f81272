"""The platform module's local charts and the skiff chart, rendered with the values terraform computes.

``helm template`` renders them offline with the evaluated ``values.tf`` (AWS and Azure inputs): the
KnativeServing resource carries skiff's spec; the Argo CD AppProject and Applications that install KFP pass
the upstream Argo CD CRD schemas; the development Redis runs non-root on a read-only root file system and
admits only its client namespaces; and ``helm/skiff`` accepts every value the platform passes it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import yaml

from tests.cluster import test_platform_values
from tests.cluster.conftest import upstream_yaml
from tests.unit.test_terraform import _require_tool

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "terraform/modules/platform/charts"
# the values terraform computes from values.tf, per cloud (a module-scoped fixture)
evaluated = test_platform_values.evaluated


def helm_template(chart: Path, values: dict, tmp_path: Path, namespace: str) -> list[dict]:
    helm = _require_tool("helm")
    values_file = tmp_path / f"{chart.name}-values.json"
    values_file.write_text(json.dumps(values))
    result = subprocess.run(
        [helm, "template", "release", str(chart), "--namespace", namespace, "-f", str(values_file)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def crd_schema(rel: str, kind: str) -> dict:
    crd = upstream_yaml(rel)
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    return version["schema"]["openAPIV3Schema"]


def test_knative_serving_resource_carries_skiff_s_spec(evaluated, tmp_path):
    (cr,) = helm_template(CHARTS / "knative-serving", {"spec": evaluated["knative"]}, tmp_path, "knative-serving")
    assert cr["apiVersion"] == "operator.knative.dev/v1beta1" and cr["kind"] == "KnativeServing"
    assert cr["metadata"]["namespace"] == "knative-serving"
    assert cr["spec"] == evaluated["knative"]


def test_knative_serving_chart_refuses_a_spec_without_a_version(tmp_path):
    helm = _require_tool("helm")
    result = subprocess.run([helm, "template", "r", str(CHARTS / "knative-serving")], capture_output=True, text=True)
    assert result.returncode != 0 and "spec.version is required" in result.stderr


def test_kfp_applications_pass_the_argo_cd_schemas(evaluated, tmp_path):
    docs = helm_template(CHARTS / "kubeflow-pipelines", evaluated["kfp"], tmp_path, "argocd")
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["AppProject", "Application", "Application"]
    schemas = {
        "AppProject": crd_schema("argo-cd/manifests/crds/appproject-crd.yaml", "AppProject"),
        "Application": crd_schema("argo-cd/manifests/crds/application-crd.yaml", "Application"),
    }
    for doc in docs:
        jsonschema.validate(doc, schemas[doc["kind"]])
    apps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Application"}
    assert apps["kfp-cluster-scoped"]["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-1"
    for app in apps.values():
        assert app["spec"]["project"] == "skiff-platform"
        assert app["spec"]["source"]["targetRevision"] == evaluated["kfp"]["targetRevision"]
        assert app["spec"]["destination"]["namespace"] == evaluated["kfp"]["namespace"]
        assert "CreateNamespace=true" not in app["spec"]["syncPolicy"].get("syncOptions", [])
    # the runner's annotations bind it to the pipeline identity
    (patch,) = apps["kfp"]["spec"]["source"]["kustomize"]["patches"]
    assert patch["target"] == {"kind": "ServiceAccount", "name": "pipeline-runner"}
    assert yaml.safe_load(patch["patch"])["metadata"]["annotations"] == evaluated["kfp"]["runner"]["annotations"]
    # the namespace is terraform's: the cluster-scoped sync deletes it from its manifests
    (ns_patch,) = apps["kfp-cluster-scoped"]["spec"]["source"]["kustomize"]["patches"]
    assert "$patch: delete" in ns_patch["patch"] and ns_patch["target"] == {"kind": "Namespace"}
    project = next(d for d in docs if d["kind"] == "AppProject")
    assert {"group": "", "kind": "Namespace"} not in project["spec"]["clusterResourceWhitelist"]


def test_dev_redis_runs_locked_down_and_admits_its_clients(tmp_path):
    values = {"image": "docker.io/library/redis:7.4.2", "passwordSecret": "skiff-redis",
              "clientNamespaces": ["skiff", "kubeflow"]}
    docs = {d["kind"]: d for d in helm_template(CHARTS / "redis-dev", values, tmp_path, "skiff")}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "skiff-redis", "key": "password"}
    assert "$(REDIS_PASSWORD)" in container["args"]
    peers = docs["NetworkPolicy"]["spec"]["ingress"][0]["from"]
    assert [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in peers] == ["skiff",
                                                                                                      "kubeflow"]


def test_the_skiff_chart_accepts_every_value_the_platform_passes(evaluated, tmp_path):
    docs = helm_template(REPO / "helm/skiff", evaluated["skiff_values"], tmp_path, "skiff")
    settings_maps = [d for d in docs if d["kind"] == "ConfigMap" and "skiff.yaml" in d.get("data", {})]
    # KFP standalone runs pipeline pods in its own namespace: they find the settings there too
    assert {m["metadata"].get("namespace", "skiff") for m in settings_maps} == {"skiff", "kubeflow"}
    settings = settings_maps[0]
    rendered = yaml.safe_load(settings["data"]["skiff.yaml"])
    assert rendered["root"] == evaluated["skiff_values"]["storage"]["root"]
    assert rendered["kfp_host"] == evaluated["skiff_values"]["settings"]["kfpHost"]
    # the feature server reads the Redis Secret the platform writes
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    feast = next(d for n, d in deployments.items() if "feast" in n)
    refs = [e["valueFrom"]["secretKeyRef"] for c in feast["spec"]["template"]["spec"]["containers"]
            for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    assert {"name": "skiff-redis", "key": "connection-string"} in refs
