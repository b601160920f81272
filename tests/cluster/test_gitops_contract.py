"""The GitOps chain against the upstream definitions (issue 11, finding 7).

Every object skiff ships for GitOps — the rendered InferenceServices, the ServingRuntime definition, the
Argo CD AppProject, ApplicationSet and each Application it generates — is held against the CRDs of the
versions the platform installs (``tests/cluster/conftest.py`` loads them): the CRD's
OpenAPI schema, and no field the schema does not know (the API server would prune it silently). On top:
one owner per object between Argo CD and the platform chart, no namespace created by a sync, rollouts
that survive syncs, and the transformer canaried with the predictor.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from serving.deploy.gitops import Environments
from serving.deploy.isvc import RuntimeImages, build_serving_runtime, render_environment, to_dict
from serving.rollout.actuators import ROLLOUT_FIELD_MANAGER  # the manager the ApplicationSet must ignore
from skiff.registry import ModelRegistry
from skiff.storage import Store
from tests.cluster.conftest import upstream_yaml
from tests.conftest import REPO, require_tool

KSERVE = "kserve/config/crd/full"
ARGO = "argo-cd/manifests/crds"
IMAGES = RuntimeImages(predictor="ghcr.io/skiff-ml/skiff:1.0.0", gpu_predictor="ghcr.io/skiff-ml/skiff-gpu:1.0.0",
                       transformer="ghcr.io/skiff-ml/skiff:1.0.0")


# -- upstream definitions ---------------------------------------------------------------------------------
def crd_schema(path: str, version: str) -> dict[str, Any]:
    crd = upstream_yaml(path)
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise AssertionError(f"{path} serves no version {version}")


def unknown_fields(obj: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """Paths of fields the structural schema does not declare (the API server prunes or refuses them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out: list[str] = []
    if isinstance(obj, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if props is not None and key in props:
                out += unknown_fields(value, props[key], f"{where}.{key}")
            elif isinstance(extra, dict):
                out += unknown_fields(value, extra, f"{where}.{key}")
            elif props is not None and where != ".metadata" and not where.endswith((".labels", ".annotations")):
                out.append(f"{where}.{key}")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            out += unknown_fields(item, schema["items"], f"{where}[{i}]")
    return out


def assert_valid(obj: dict[str, Any], schema: dict[str, Any]) -> None:
    import jsonschema_rs

    name = f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"
    errors = [f"{'/'.join(map(str, e.instance_path))}: {e.message}"
              for e in jsonschema_rs.validator_for(schema).iter_errors(obj)]
    assert not errors, f"{name}: {errors}"
    assert not unknown_fields(obj, schema), f"{name}: fields unknown to the CRD: {unknown_fields(obj, schema)}"


# -- what skiff ships ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> list[dict[str, Any]]:
    """An environment's render with every shape: a canary with a transformer (25 %), a canary without one
    (0 %, deployed dark), a stable TensorFlow model on the GPU pool."""
    tmp = tmp_path_factory.mktemp("gitops")
    reg = ModelRegistry(Store(str(tmp / "models")))
    reg.register("churn", {"w": 1}, {"gate": {"promote": True}, "feature_service": "churn_fs"})
    reg.register("churn", {"w": 2}, {"gate": {"promote": True}, "feature_service": "churn_fs"})
    reg.register("fraud", {"w": 1}, {"gate": {"promote": True}})
    reg.register("fraud", {"w": 2}, {"gate": {"promote": True}})
    reg.register("vision", {"w": 1}, {"flavor": "tensorflow", "gate": {"promote": True}})
    root = tmp / "environments"
    shutil.copytree(REPO / "infra/environments/prod", root / "prod")
    models = root / "prod/models"
    models.mkdir(exist_ok=True)
    (models / "churn.yaml").write_text("name: churn\nversion: 1\ncanary: {version: 2, percent: 25}\n")
    (models / "fraud.yaml").write_text("name: fraud\nversion: 1\ncanary: {version: 2, percent: 0}\n")
    (models / "vision.yaml").write_text("name: vision\nversion: 1\n")
    out = tmp / "rendered"
    files = render_environment(Environments(root), "prod", reg, out, images=IMAGES, registry_uri="unused")
    return [yaml.safe_load(f.read_text()) for f in files if f.name != "kustomization.yaml"]


def argocd() -> tuple[dict[str, Any], dict[str, Any]]:
    load = lambda name: yaml.safe_load((REPO / "infra/argocd" / name).read_text())  # noqa: E731
    return load("appproject.yaml"), load("applicationset.yaml")


def applications(appset: dict[str, Any]) -> list[dict[str, Any]]:
    """The Applications the list generator makes: the template with each element substituted, and the
    templatePatch applied where it applies (the shapes used here: ``{{ .key }}`` and one ``if``)."""
    apps = []
    for element in appset["spec"]["generators"][0]["list"]["elements"]:
        text = yaml.safe_dump(appset["spec"]["template"])
        for key, value in element.items():
            text = text.replace("{{ ." + key + " }}", str(value))
        app = yaml.safe_load(text)
        patch = appset["spec"].get("templatePatch", "")
        lines = [line for line in patch.splitlines() if "{{" not in line]
        if "{{- if .autoSync }}" in patch and element.get("autoSync"):
            extra = yaml.safe_load("\n".join(lines)) or {}
            app["spec"]["syncPolicy"].update(extra["spec"]["syncPolicy"])
        apps.append({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", **app})
    return apps


# -- schemas ------------------------------------------------------------------------------------------------
def test_rendered_inference_services_validate_against_the_kserve_crd(rendered):
    schema = crd_schema(f"{KSERVE}/serving.kserve.io_inferenceservices.yaml", "v1beta1")
    assert {d["kind"] for d in rendered} == {"InferenceService"}
    for isvc in rendered:
        assert_valid(isvc, schema)


@pytest.mark.parametrize("flavor", ["sklearn", "tensorflow"])
def test_the_serving_runtime_validates_against_the_kserve_crd(flavor):
    env = Environments(REPO / "infra/environments").environment("prod")
    assert_valid(to_dict(build_serving_runtime(env, flavor, IMAGES)),
                 crd_schema(f"{KSERVE}/serving.kserve.io_servingruntimes.yaml", "v1alpha1"))


def test_committed_renders_validate_against_the_kserve_crd():
    schema = crd_schema(f"{KSERVE}/serving.kserve.io_inferenceservices.yaml", "v1beta1")
    for env in Environments(REPO / "infra/environments").names():
        for path in sorted((REPO / "infra/rendered" / env).glob("isvc-*.yaml")):
            assert_valid(yaml.safe_load(path.read_text()), schema)


def test_argo_cd_objects_validate_against_the_argo_cd_crds():
    project, appset = argocd()
    assert_valid(project, crd_schema(f"{ARGO}/appproject-crd.yaml", "v1alpha1"))
    assert_valid(appset, crd_schema(f"{ARGO}/applicationset-crd.yaml", "v1alpha1"))
    app_schema = crd_schema(f"{ARGO}/application-crd.yaml", "v1alpha1")
    for app in applications(appset):
        assert_valid(app, app_schema)


# -- finding 7 ---------------------------------------------------------------------------------------------
def test_no_sync_creates_a_namespace_the_project_forbids():
    project, appset = argocd()
    cluster_kinds = {(r.get("group", ""), r["kind"]) for r in project["spec"].get("clusterResourceWhitelist") or []}
    for app in applications(appset):
        options = app["spec"].get("syncPolicy", {}).get("syncOptions", [])
        if "CreateNamespace=true" in options:
            assert ("", "Namespace") in cluster_kinds or ("*", "*") in cluster_kinds, (
                f"{app['metadata']['name']}: CreateNamespace=true, but project {project['metadata']['name']} "
                "allows no Namespace")
    # the namespace is the platform's: the Terraform platform module creates it with the skiff release
    import hcl2

    with open(REPO / "terraform/modules/platform/variables.tf") as f:
        variables = {k.strip('"'): v for var in hcl2.load(f)["variable"] for k, v in var.items()}
    namespace = str(variables["namespace"]["default"]).strip('"')
    assert {a["spec"]["destination"]["namespace"] for a in applications(appset)} == {namespace}
    assert {d["namespace"] for d in project["spec"]["destinations"]} == {namespace}


def test_the_project_allows_exactly_what_the_render_makes(rendered):
    project, _ = argocd()
    assert not project["spec"]["clusterResourceWhitelist"]
    allowed = {(r["group"], r["kind"]) for r in project["spec"]["namespaceResourceWhitelist"]}
    made = {(d["apiVersion"].split("/")[0] if "/" in d["apiVersion"] else "", d["kind"]) for d in rendered}
    assert allowed == made == {("serving.kserve.io", "InferenceService")}




def _chart_objects() -> dict[tuple[str, str], dict[str, Any]]:
    out = subprocess.run(
        [require_tool("helm"), "template", "skiff", str(REPO / "helm/skiff"), "--namespace", "skiff",
         "-f", str(REPO / "helm/skiff/ci/minimal-values.yaml"),
         "--set", "servingRuntimes.flavors={sklearn,tensorflow}"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}


def test_one_owner_per_object_between_argo_cd_and_the_platform_chart(rendered):
    chart = _chart_objects()
    ours = {(d["kind"], d["metadata"]["name"]) for d in rendered}
    assert not ours & set(chart), f"owned by both the chart and Argo CD: {sorted(ours & set(chart))}"
    # what the InferenceServices name is the chart's: runtime per flavor and the serving service account
    for isvc in rendered:
        for component in ("predictor", "transformer"):
            spec = isvc["spec"].get(component)
            if spec is None:
                continue
            assert ("ServiceAccount", spec["serviceAccountName"]) in chart
            if component == "predictor":
                assert ("ServingRuntime", spec["model"]["runtime"]) in chart


def test_a_sync_keeps_the_percent_of_a_rollout_in_progress():
    _, appset = argocd()
    app_schema = crd_schema(f"{ARGO}/application-crd.yaml", "v1alpha1")
    ignore_props = app_schema["properties"]["spec"]["properties"]["ignoreDifferences"]["items"]["properties"]
    assert "managedFieldsManagers" in ignore_props  # the Argo CD version installed has the field
    for app in applications(appset):
        spec = app["spec"]
        rules = [r for r in spec.get("ignoreDifferences", [])
                 if (r.get("group"), r["kind"]) == ("serving.kserve.io", "InferenceService")]
        # ignored exactly while the rollout controller owns the field (live ownership, not a fixed path) ...
        assert any(ROLLOUT_FIELD_MANAGER in r.get("managedFieldsManagers", []) for r in rules), spec
        # ... never by path: with RespectIgnoreDifferences a path ignore would also keep the live value when
        # Git records a new canary at 0 %, sending the new revision all the traffic at once
        for r in rules:
            paths = r.get("jsonPointers", []) + r.get("jqPathExpressions", [])
            assert not any("canaryTrafficPercent" in p for p in paths), r
        options = spec["syncPolicy"]["syncOptions"]
        # the sync applies the ignored fields' live values (not Git's): self-heal and other models'
        # promotions do not reset a rollout; server-side apply records who owns the field
        assert "RespectIgnoreDifferences=true" in options and "ServerSideApply=true" in options


class _RecordingApi:
    """Stands in for kubernetes' CustomObjectsApi (no API server runs here): records the patches and
    answers with the status KServe reaches once the traffic moved."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj, self.patches = obj, []

    def patch_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.patches.append((args, kwargs))
        percent = args[5]["spec"]["predictor"].get("canaryTrafficPercent")
        share = 100 if percent is None else percent
        self.obj["metadata"]["generation"] = self.obj["metadata"].get("generation", 1) + 1
        self.obj["status"] = {"observedGeneration": self.obj["metadata"]["generation"], "components": {
            c: {"traffic": [{"latestRevision": True, "percent": share}]} for c in ("predictor", "transformer")}}
        return self.obj

    def get_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.obj


def test_the_rollout_controller_patches_as_the_field_manager_argo_cd_ignores(rendered):
    from serving.rollout.actuators import KServeActuator

    isvc = copy.deepcopy(next(d for d in rendered if d["metadata"]["name"] == "churn"))
    api = _RecordingApi(isvc)
    KServeActuator(api, "churn", "skiff", timeout=1, sleep=lambda s: None).set_canary_percent(50)
    (args, kwargs), = api.patches
    assert kwargs.get("field_manager") == ROLLOUT_FIELD_MANAGER
    assert args[5]["spec"]["transformer"]["canaryTrafficPercent"] == 50


def test_the_transformer_is_canaried_with_the_predictor(rendered):
    schema = crd_schema(f"{KSERVE}/serving.kserve.io_inferenceservices.yaml", "v1beta1")
    # KServe gives each component its own traffic split: the field exists on the transformer too
    assert "canaryTrafficPercent" in schema["properties"]["spec"]["properties"]["transformer"]["properties"]
    with_transformer = [d for d in rendered if "transformer" in d["spec"]]
    assert with_transformer
    for isvc in with_transformer:
        assert isvc["spec"]["transformer"].get("canaryTrafficPercent") == isvc["spec"]["predictor"].get(
            "canaryTrafficPercent"), isvc["metadata"]["name"]


def test_monitoring_objects_validate_and_select_the_rendered_pods(rendered):
    crds = "prometheus-operator/example/prometheus-operator-crd-full"
    docs = {d["kind"]: d for name in ("podmonitor.yaml", "prometheusrule.yaml")
            for d in [yaml.safe_load((REPO / "infra/monitoring" / name).read_text())]}
    assert_valid(docs["PodMonitor"], crd_schema(f"{crds}/monitoring.coreos.com_podmonitors.yaml", "v1"))
    assert_valid(docs["PrometheusRule"], crd_schema(f"{crds}/monitoring.coreos.com_prometheusrules.yaml", "v1"))
    # every serving pod the render makes carries the label the PodMonitor selects on
    selector = docs["PodMonitor"]["spec"]["selector"]["matchExpressions"]
    keys = {e["key"] for e in selector if e["operator"] == "Exists"}
    for isvc in rendered:
        for component in ("predictor", "transformer"):
            if component in isvc["spec"]:
                assert keys <= set(isvc["spec"][component]["labels"]), (isvc["metadata"]["name"], component)
