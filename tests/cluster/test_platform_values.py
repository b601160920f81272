"""What the platform module sets on the upstream charts and on Knative, held against upstream (issue 11,
findings 2, 3 and 6).

The values are not read from the HCL text: the real terraform binary evaluates the module's variable-only
``values.tf`` with the cluster modules' defaults (AWS and Azure), so what is checked is what Helm and the
Knative operator would receive. They are then held against the upstream chart's ``values.yaml`` (every key
skiff sets exists), Knative's ConfigMaps (every key exists; after skiff's overrides ``config-features``
admits every field skiff's rendered InferenceServices use), and the GPU pools the cluster modules create
(the NVIDIA device plugin's affinity and tolerations, merged over the chart's defaults the way Helm does,
select the GPU nodes and no others).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cluster.conftest import (
    configmap_example_keys,
    configmap_example_values,
    helm_merge,
    unknown_value_paths,
    upstream_file,
    upstream_yaml,
)
from tests.cluster.test_platform_versions import components
from tests.unit.test_terraform import Scratch, config, locals_of, named, resource, resources

REPO = Path(__file__).resolve().parents[2]
KNATIVE_CM = "knative-serving/config/core/configmaps"
NETWORK_CM = "knative-serving/vendor/knative.dev/networking/config/config-network.yaml"
KOURIER_CLASS = "kourier.ingress.networking.knative.dev"  # net-kourier's ingress class (its Go constant)


# --- the module's inputs, from the cluster modules ----------------------------------------------------


def _default(rel: str, variable: str):
    return named(config(rel), "variable")[variable]["default"]


def gpu_taint(rel: str) -> dict[str, str]:
    return locals_of(rel)["gpu_taint"]


def gpu_pool_labels(rel: str) -> dict[str, str]:
    """The labels a GPU node of the cluster module carries: gpu_node_labels merged with the literal labels
    the node group/pool adds (merge(var.gpu_node_labels, {...}))."""
    pool = (resource(rel, "aws_eks_node_group", "gpu")["labels"] if rel.endswith("aws-eks")
            else resource(rel, "azurerm_kubernetes_cluster_node_pool", "gpu")["node_labels"])
    assert pool.startswith("${merge(var.gpu_node_labels,"), pool
    return {**_default(rel, "gpu_node_labels"), **dict(re.findall(r'"([^"]+)"\s*=\s*"([^"]+)"', pool))}


def cpu_pool_labels(rel: str) -> dict[str, str]:
    if rel.endswith("aws-eks"):
        return resource(rel, "aws_eks_node_group", "cpu")["labels"]
    return resource(rel, "azurerm_kubernetes_cluster_node_pool", "cpu")["node_labels"]


def platform_inputs(cloud: str) -> dict:
    rel = "modules/aws-eks" if cloud == "aws" else "modules/azure-aks"
    annotation = ("eks.amazonaws.com/role-arn" if cloud == "aws" else "azure.workload.identity/client-id")
    pod_labels = {} if cloud == "aws" else {"azure.workload.identity/use": "true"}
    workloads = {k: _default(rel, f"{k}_service_account") for k in ("pipeline", "serving", "rollout")}
    taint = gpu_taint(rel)
    return {
        "cloud": cloud,
        "cluster_name": "skiff",
        "aws_region": "eu-west-1" if cloud == "aws" else None,
        "namespace": _default(rel, "namespace"),
        "service_accounts": {
            k: {"namespace": _default(rel, "namespace"), "name": sa, "annotations": {annotation: f"identity-{k}"},
                "pod_labels": pod_labels}
            for k, sa in workloads.items()
        },
        "kfp_runner": {"namespace": _default(rel, "kfp_namespace"), "name": _default(rel, "kfp_runner_service_account"),
                       "annotations": {annotation: "identity-pipeline"}, "pod_labels": pod_labels},
        "skiff_root": "s3://skiff-bucket" if cloud == "aws" else "abfs://skiff@account.dfs.core.windows.net",
        "image_registry": ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/skiff" if cloud == "aws"
                           else "skiffcr.azurecr.io/skiff"),
        "ingress_domain": "models.example.com",
        "gpu_node_selector": _default(rel, "gpu_node_labels"),
        "gpu_tolerations": [{"key": taint["key"], "operator": "Equal", "value": taint["value"],
                             "effect": taint["effect"]}],
    }


@pytest.fixture(scope="module", params=["aws", "azure"])
def evaluated(request, tmp_path_factory):
    """chart_values, knative_serving and skiff_values as terraform computes them for one cloud."""
    scratch = Scratch(
        tmp_path_factory.mktemp(f"platform-{request.param}"), "platform",
        ("variables.tf", "values.tf", "components.yaml"),
        {"chart_values": "local.chart_values", "knative": "local.knative_serving",
         "skiff_values": "local.skiff_values", "kfp": "local.kfp_values"},
    )
    out = scratch.outputs(platform_inputs(request.param))
    out["cloud"] = request.param
    return out


# --- every Helm value skiff sets exists upstream ------------------------------------------------------


@pytest.mark.parametrize("key", ["cert-manager", "knative-operator", "kserve-crd", "kserve-resources",
                                 "kube-prometheus-stack", "argo-cd", "nvidia-device-plugin", "cluster-autoscaler"])
def test_every_value_skiff_sets_exists_in_the_upstream_chart(evaluated, key):
    values = evaluated["chart_values"][key]
    up = components()[key].get("upstream")
    if up is None:
        pytest.skip(f"{key}: no pinned upstream copy of its chart in ../shared/upstream (not collected); "
                    "its values are checked by its own chart at install time only")
    defaults = upstream_yaml(f"{up['folder']}/{up['chart']}/values.yaml")
    unknown = unknown_value_paths(values, defaults)
    assert not unknown, f"{key}: values not in the upstream chart's values.yaml at {up['tag']}: {unknown}"


def test_the_value_check_catches_a_misspelled_key():
    defaults = upstream_yaml("kserve/charts/kserve-resources/values.yaml")
    assert unknown_value_paths({"kserve": {"controller": {"deploymentMode": "Knative"}}}, defaults) == []
    assert unknown_value_paths({"kserve": {"controler": {}}}, defaults) == ["kserve.controler"]
    assert unknown_value_paths({"kserve": {"controller": {"nodeSelector": {"any": "x"}}}}, defaults) == []


def test_kserve_runs_on_knative_with_kourier(evaluated):
    controller = evaluated["chart_values"]["kserve-resources"]["kserve"]["controller"]
    defaults = upstream_yaml("kserve/charts/kserve-resources/values.yaml")["kserve"]["controller"]
    assert controller["deploymentMode"] == "Knative" == defaults["deploymentMode"]
    assert controller["gateway"]["domain"] == "models.example.com"
    assert controller["gateway"]["disableIstioVirtualHost"] is True
    # in-cluster calls (transformer -> predictor) go through Kourier's internal gateway, which exists
    service = controller["gateway"]["localGateway"]["gatewayService"]
    name, namespace = service.split(".")[:2]
    gateways = [d for d in _yaml_docs("knative-net-kourier/config/300-gateway.yaml") if d.get("kind") == "Service"]
    assert (name, namespace) in {(d["metadata"]["name"], d["metadata"]["namespace"]) for d in gateways}


def _yaml_docs(rel: str):
    from tests.cluster.conftest import upstream_documents

    return upstream_documents(rel)


# --- finding 2: everything skiff assumes is installed -------------------------------------------------


def test_the_platform_installs_every_component_skiff_assumes():
    """Finding 2: Knative Serving with a networking layer, KFP, a Prometheus operator, Argo CD and Redis were
    never installed, nor the EBS CSI driver on EKS."""
    releases = resources(config("modules/platform"), "helm_release")
    charts = {r.get("chart", "") for r in releases.values()}
    for key in ("cert-manager", "knative-operator", "kserve-crd", "kserve-resources", "kube-prometheus-stack",
                "argo-cd", "nvidia-device-plugin"):
        assert f'${{local.components["{key}"].chart}}' in charts, f"nothing installs {key}"
    local_charts = {re.sub(r"^\$\{path\.module\}/", "", c) for c in charts if c.startswith("${path.module}/")}
    assert {"charts/knative-serving", "charts/kubeflow-pipelines", "charts/redis-dev"} <= local_charts
    for chart in local_charts:
        assert (REPO / "terraform/modules/platform" / chart / "Chart.yaml").is_file(), chart
    assert "kubernetes_secret_v1" in str(config("modules/platform").get("resource"))
    assert resource("modules/aws-eks", "aws_elasticache_replication_group", "redis")["transit_encryption_enabled"]
    assert resource("modules/azure-aks", "azurerm_redis_cache", "this")["non_ssl_port_enabled"] is False
    addon = resource("modules/aws-eks", "aws_eks_addon", "ebs_csi")
    assert addon["addon_name"] == "aws-ebs-csi-driver" and addon["service_account_role_arn"]
    storage_class = resource("modules/platform", "kubernetes_storage_class_v1", "gp3")
    assert storage_class["storage_provisioner"] == "ebs.csi.aws.com"
    assert storage_class["metadata"][0]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"


def test_knative_serving_comes_with_kourier(evaluated):
    spec = evaluated["knative"]
    assert spec["ingress"]["kourier"]["enabled"] is True
    default_class = configmap_example_values(NETWORK_CM)["ingress-class"]
    assert default_class.startswith("istio."), "upstream default changed: re-check the networking layer"
    assert spec["config"]["network"]["ingress-class"] == KOURIER_CLASS
    assert spec["config"]["domain"] == {"models.example.com": ""}
    assert str(spec["version"]) == str(components()["knative-serving"]["version"])


def test_monitoring_release_matches_what_skiff_selects_and_queries():
    release = resources(config("modules/platform"), "helm_release")["kube_prometheus_stack"]
    import yaml

    skiff = yaml.safe_load((REPO / "helm/skiff/values.yaml").read_text())
    assert skiff["monitoring"]["labels"] == {"release": release["name"]}
    namespace = components()["kube-prometheus-stack"]["namespace"]
    for env_file in sorted((REPO / "infra/environments").glob("*/environment.yaml")):
        url = yaml.safe_load(env_file.read_text()).get("prometheus_url", "")
        assert f".{namespace}.svc" in url, f"{env_file}: {url} is not the platform's Prometheus"


# --- Knative ConfigMaps ------------------------------------------------------------------------------


@pytest.mark.parametrize(("config_map", "rel"), [
    ("network", NETWORK_CM),
    ("features", f"{KNATIVE_CM}/features.yaml"),
    ("deployment", f"{KNATIVE_CM}/deployment.yaml"),
    ("autoscaler", f"{KNATIVE_CM}/autoscaler.yaml"),
])
def test_every_knative_setting_skiff_overrides_exists_upstream(evaluated, config_map, rel):
    overrides = evaluated["knative"]["config"].get(config_map, {})
    unknown = set(overrides) - configmap_example_keys(rel)
    assert not unknown, f"config-{config_map}: keys Knative does not know: {sorted(unknown)}"
    if config_map == "features":
        assert set(overrides.values()) <= {"enabled", "disabled", "allowed"}


# Pod spec fields Knative's webhook refuses unless the named config-features flag is enabled (knative
# serving pkg/apis/serving/fieldmask.go at v1.23: PodSpecMask, PodSecurityContextMask, VolumeSourceMask,
# CapabilitiesMask, EnvVarSourceMask).
POD_FIELD_FLAGS = {
    "affinity": "kubernetes.podspec-affinity",
    "topologySpreadConstraints": "kubernetes.podspec-topologyspreadconstraints",
    "hostAliases": "kubernetes.podspec-hostaliases",
    "nodeSelector": "kubernetes.podspec-nodeselector",
    "tolerations": "kubernetes.podspec-tolerations",
    "runtimeClassName": "kubernetes.podspec-runtimeclassname",
    "dnsPolicy": "kubernetes.podspec-dnspolicy",
    "dnsConfig": "kubernetes.podspec-dnsconfig",
    "securityContext": "kubernetes.podspec-securitycontext",
    "shareProcessNamespace": "kubernetes.podspec-shareprocessnamespace",
    "hostIPC": "kubernetes.podspec-hostipc",
    "hostPID": "kubernetes.podspec-hostpid",
    "hostNetwork": "kubernetes.podspec-hostnetwork",
    "priorityClassName": "kubernetes.podspec-priorityclassname",
    "schedulerName": "kubernetes.podspec-schedulername",
    "initContainers": "kubernetes.podspec-init-containers",
}
VOLUME_FLAGS = {
    "emptyDir": "kubernetes.podspec-volumes-emptydir",
    "hostPath": "kubernetes.podspec-volumes-hostpath",
    "persistentVolumeClaim": "kubernetes.podspec-persistent-volume-claim",
    "csi": "kubernetes.podspec-volumes-csi",
    "ephemeral": "kubernetes.podspec-volumes-ephemeral",
    "image": "kubernetes.podspec-volumes-image",
}


def flags_needed(component: dict) -> dict[str, str]:
    """config-features flags a predictor/transformer spec needs, each with the field that needs it."""
    needed = {}
    for field, flag in POD_FIELD_FLAGS.items():
        if component.get(field):
            needed[flag] = field
    for volume in component.get("volumes", []):
        for source, flag in VOLUME_FLAGS.items():
            if source in volume:
                needed[flag] = f"volumes[{volume['name']}].{source}"
    containers = list(component.get("containers", []))
    if "model" in component:
        containers.append(component["model"])
    for c in containers:
        if c.get("securityContext", {}).get("capabilities", {}).get("add"):
            needed["kubernetes.containerspec-addcapabilities"] = f"{c['name']}.securityContext.capabilities.add"
        for env in c.get("env", []):
            if "fieldRef" in env.get("valueFrom", {}):
                needed["kubernetes.podspec-fieldref"] = f"{c['name']}.env[{env['name']}]"
        for mount in c.get("volumeMounts", []):
            if mount.get("mountPropagation"):
                needed["kubernetes.podspec-volumes-mount-propagation"] = f"{c['name']}.volumeMounts"
    return needed


@pytest.fixture(scope="module")
def rendered_isvcs(tmp_path_factory):
    """InferenceServices skiff renders (serving/deploy/isvc.py) for every GitOps environment: a CPU model
    with a feature transformer and a GPU (TensorFlow) model with a canary."""
    from serving.deploy.gitops import Canary, Environments, ModelDeployment
    from serving.deploy.isvc import RuntimeImages, build_inference_service, to_dict
    from skiff.registry import ModelRegistry
    from skiff.storage import Store

    registry = ModelRegistry(Store(str(tmp_path_factory.mktemp("registry") / "models")))
    registry.register("churn", {"w": 1}, {"gate": {"promote": True}, "feature_service": "churn_fs"})
    registry.register("vision_tf", {"w": 1}, {"flavor": "tensorflow", "gate": {"promote": True}})
    registry.register("vision_tf", {"w": 2}, {"flavor": "tensorflow", "gate": {"promote": True}})
    images = RuntimeImages(predictor="r/skiff:1", gpu_predictor="r/skiff-gpu:1", transformer="r/skiff:1")
    envs = Environments(REPO / "infra/environments")
    isvcs = []
    for env_dir in sorted((REPO / "infra/environments").glob("*/environment.yaml")):
        env = envs.environment(env_dir.parent.name)
        for dep in (ModelDeployment(name="churn", version=1),
                    ModelDeployment(name="vision_tf", version=1, canary=Canary(version=2, percent=10))):
            meta = registry.get(dep.name, dep.served_version).metadata
            isvcs.append(to_dict(build_inference_service(env, dep, meta, registry_uri="s3://b/models",
                                                         images=images)))
    assert isvcs
    return isvcs


def test_the_rendered_inference_services_need_flags_knative_disables_by_default(rendered_isvcs):
    """The check has teeth: upstream's defaults alone refuse skiff's pods."""
    defaults = configmap_example_values(f"{KNATIVE_CM}/features.yaml")
    needed = {}
    for isvc in rendered_isvcs:
        for component in ("predictor", "transformer"):
            if component in isvc["spec"]:
                needed.update(flags_needed(isvc["spec"][component]))
    refused = {flag for flag in needed if defaults.get(flag, "disabled") == "disabled"}
    assert {"kubernetes.podspec-securitycontext", "kubernetes.podspec-nodeselector",
            "kubernetes.podspec-tolerations"} <= refused


def test_knative_config_features_admit_every_rendered_inference_service(evaluated, rendered_isvcs):
    """Finding 3: with Knative's default config-features every rendered InferenceService (pod-level
    securityContext) and every GPU one (nodeSelector, tolerations) is refused by its webhook."""
    effective = {**configmap_example_values(f"{KNATIVE_CM}/features.yaml"),
                 **evaluated["knative"]["config"]["features"]}
    for isvc in rendered_isvcs:
        for component in ("predictor", "transformer"):
            if component not in isvc["spec"]:
                continue
            for flag, field in flags_needed(isvc["spec"][component]).items():
                assert effective.get(flag, "disabled") in ("enabled", "allowed"), (
                    f"{isvc['metadata']['name']} {component}: {field} needs {flag}, which is "
                    f"{effective.get(flag, 'disabled')} after skiff's overrides"
                )


# --- finding 6: the NVIDIA device plugin lands on the GPU pool ---------------------------------------


def _matches(term: dict, labels: dict[str, str]) -> bool:
    for e in term.get("matchExpressions", []):
        value = labels.get(e["key"])
        op = e["operator"]
        if op == "In" and value not in e["values"]:
            return False
        if op == "NotIn" and value in e["values"]:
            return False
        if op == "Exists" and e["key"] not in labels:
            return False
        if op == "DoesNotExist" and e["key"] in labels:
            return False
    return True


def schedulable(pod: dict, labels: dict[str, str], taints: list[dict[str, str]]) -> bool:
    """Whether a pod with these values' nodeSelector/affinity/tolerations may run on a node."""
    if any(labels.get(k) != v for k, v in (pod.get("nodeSelector") or {}).items()):
        return False
    required = ((pod.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")
    if required and not any(_matches(t, labels) for t in required["nodeSelectorTerms"]):
        return False
    for taint in taints:
        if taint["effect"] not in ("NoSchedule", "NoExecute"):
            continue
        if not any(
            (t.get("key") in (None, taint["key"]))
            and (t.get("operator") == "Exists" or t.get("value") == taint["value"])
            and t.get("effect") in (None, "", taint["effect"])
            for t in pod.get("tolerations") or []
        ):
            return False
    return True


def test_nvidia_device_plugin_runs_on_the_gpu_pool_and_nowhere_else(evaluated):
    """Finding 6: the chart's default affinity requires NFD/GPU-operator labels no node of the modules has,
    so GPUs were never advertised."""
    rel = "modules/aws-eks" if evaluated["cloud"] == "aws" else "modules/azure-aks"
    template = upstream_file("nvidia-k8s-device-plugin/deployments/helm/nvidia-device-plugin/templates/"
                             "daemonset-device-plugin.yml").read_text()
    for field in ("nodeSelector", "affinity", "tolerations"):
        assert f".Values.{field}" in template, f"the daemonset no longer takes {field} from values"
    defaults = upstream_yaml("nvidia-k8s-device-plugin/deployments/helm/nvidia-device-plugin/values.yaml")
    pod = helm_merge(defaults, evaluated["chart_values"]["nvidia-device-plugin"])
    taint = gpu_taint(rel)
    gpu = gpu_pool_labels(rel)
    assert schedulable(pod, gpu, [taint]), f"the device plugin cannot run on a GPU node labelled {gpu}"
    assert not schedulable(pod, cpu_pool_labels(rel), []), "the device plugin would run on CPU nodes"
    # the upstream defaults alone miss the pool: what the regression was
    assert not schedulable(defaults, gpu, [taint])
