"""Identities and data paths that connect (issue 11, finding 5 and the identity cross-checks).

- Every IAM trust subject (IRSA) and every federated credential subject (Azure workload identity) the
  cluster modules create is a service account something actually runs as: one the skiff chart creates and
  skiff's code runs as, KFP's own pipeline runner (upstream ``config.json``), the account the platform
  creates in KFP's namespace, or an add-on's.
- Every prefix skiff reads or writes (``skiff.layout.ACCESS``) is granted to that workload by the cloud
  policies, and nothing more.
- On Azure, the registry URI InferenceServices name is a storage URI KServe accepts (``abfs://`` is not).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.cluster.conftest import find_upstream, upstream_file, upstream_yaml
from tests.cluster.test_platform_values import platform_inputs
from tests.cluster.test_platform_versions import components
from tests.unit.test_terraform import Scratch, config, named, resource

REPO = Path(__file__).resolve().parents[2]
SKIFF_VALUES = yaml.safe_load((REPO / "helm/skiff/values.yaml").read_text())
AWS_REQUIRED = {"availability_zones": ["eu-west-1a", "eu-west-1b", "eu-west-1c"]}
AZURE_REQUIRED = {"location": "westeurope"}


def _default(rel: str, variable: str):
    return named(config(rel), "variable")[variable]["default"]


@pytest.fixture(scope="module")
def trust(tmp_path_factory) -> dict[str, set[str]]:
    """workload -> the service-account subjects its cloud identity trusts, for each cloud."""
    aws = Scratch(tmp_path_factory.mktemp("aws"), "aws-eks", ("variables.tf", "trust.tf"),
                  {"workloads": "local.workload_subjects", "ebs": "local.ebs_csi_subject",
                   "autoscaler": "local.cluster_autoscaler_subject"}).outputs(AWS_REQUIRED)
    azure = Scratch(tmp_path_factory.mktemp("azure"), "azure-aks", ("variables.tf", "trust.tf"),
                    {"subjects": "local.federated_subjects"}).outputs(AZURE_REQUIRED)
    out: dict[str, set[str]] = {}
    for workload, subjects in aws["workloads"].items():
        out.setdefault(f"aws:{workload}", set()).update(subjects)
    out["aws:ebs-csi"] = {aws["ebs"]}
    out["aws:cluster-autoscaler"] = {aws["autoscaler"]}
    for credential in azure["subjects"].values():
        out.setdefault(f"azure:{credential['workload']}", set()).add(credential["subject"])
    return out


@pytest.fixture(scope="module")
def runs_as(tmp_path_factory) -> dict[str, str]:
    """namespace/account -> what runs as it (the evidence)."""
    namespace = _default("modules/aws-eks", "namespace")
    kfp_namespace = components()["kubeflow-pipelines"]["namespace"]
    found: dict[str, str] = {}
    # the skiff chart creates each workload's account; the cluster modules' defaults name the same ones
    for workload, sa in SKIFF_VALUES["serviceAccounts"].items():
        found[f"{namespace}/{sa['name']}"] = f"helm/skiff serviceAccounts.{workload}"
    # serving: the InferenceServices of every environment run as its account
    for env_file in sorted((REPO / "infra/environments").glob("*/environment.yaml")):
        env = yaml.safe_load(env_file.read_text())
        assert env["namespace"] == namespace, f"{env_file}: namespace {env['namespace']}"
        assert f"{namespace}/{env['service_account']}" in found, f"{env_file}: {env['service_account']}"
    # KFP standalone runs pipeline pods as its default runner, in its namespace
    api_config = json.loads(upstream_file("kubeflow-pipelines/backend/src/apiserver/config/config.json").read_text())
    runner = api_config["DEFAULTPIPELINERUNNERSERVICEACCOUNT"]
    assert upstream_yaml("kubeflow-pipelines/manifests/kustomize/base/pipeline/pipeline-runner-sa.yaml")[
        "metadata"]["name"] == runner
    found[f"{kfp_namespace}/{runner}"] = "KFP's API server (DEFAULTPIPELINERUNNERSERVICEACCOUNT)"
    # skiff submits runs as the pipeline account (kfp_service_account); in KFP's namespace the platform
    # creates it (same name, same identity annotations)
    from skiff.config import Settings

    submitted = Settings.model_fields["kfp_service_account"].default
    assert submitted == SKIFF_VALUES["serviceAccounts"]["pipeline"]["name"]
    sa = resource("modules/platform", "kubernetes_service_account_v1", "kfp_pipeline")["metadata"][0]
    assert sa["name"] == '${var.service_accounts["pipeline"].name}'
    assert sa["namespace"] == "${kubernetes_namespace_v1.kfp[0].metadata[0].name}"
    assert sa["annotations"] == '${var.service_accounts["pipeline"].annotations}'
    found[f"{kfp_namespace}/{submitted}"] = "pipeline runs skiff submits (modules/platform creates the account)"
    # the cluster autoscaler, as the platform installs it
    values = Scratch(tmp_path_factory.mktemp("platform"), "platform",
                     ("variables.tf", "values.tf", "components.yaml"),
                     {"v": 'local.chart_values["cluster-autoscaler"]'}).outputs(platform_inputs("aws"))["v"]
    found[f"{components()['cluster-autoscaler']['namespace']}/{values['rbac']['serviceAccount']['name']}"] = (
        "the cluster-autoscaler release")
    # the EBS CSI add-on's controller: the add-on creates and runs its own account
    addon = resource("modules/aws-eks", "aws_eks_addon", "ebs_csi")
    assert addon["addon_name"] == "aws-ebs-csi-driver"
    found["kube-system/ebs-csi-controller-sa"] = "the aws-ebs-csi-driver add-on"
    return found


def test_every_trust_subject_is_an_account_something_runs_as(trust, runs_as):
    orphans = {}
    for identity, subjects in trust.items():
        for subject in subjects:
            m = re.fullmatch(r"system:serviceaccount:([a-z0-9-]+):([a-z0-9.-]+)", subject)
            assert m, f"{identity}: {subject!r} is not one service account"
            if f"{m.group(1)}/{m.group(2)}" not in runs_as:
                orphans.setdefault(identity, []).append(subject)
    assert not orphans, f"trusted, but nothing runs as: {orphans}"


def test_pipeline_runs_in_kfp_s_namespace_have_the_pipeline_identity(trust):
    kfp_namespace = components()["kubeflow-pipelines"]["namespace"]
    for cloud in ("aws", "azure"):
        assert f"system:serviceaccount:{kfp_namespace}:pipeline-runner" in trust[f"{cloud}:pipeline"]
        assert f"system:serviceaccount:{kfp_namespace}:skiff-pipeline" in trust[f"{cloud}:pipeline"]
        # no other workload's identity is reachable from KFP's namespace
        for workload in ("serving", "rollout", "api", "stream"):
            assert all(f":{kfp_namespace}:" not in s for s in trust[f"{cloud}:{workload}"]), (cloud, workload)
    for rel in ("modules/aws-eks", "modules/azure-aks"):
        assert _default(rel, "kfp_namespace") == kfp_namespace


def test_the_kfp_runner_is_annotated_for_the_pipeline_identity():
    template = (REPO / "terraform/modules/platform/charts/kubeflow-pipelines/templates/applications.yaml").read_text()
    assert "kind: ServiceAccount" in template and ".Values.runner.annotations" in template
    release = resource("modules/platform", "helm_release", "kubeflow_pipelines")
    assert release["values"] == ["${yamlencode(local.kfp_values)}"]
    for path in ("manifests/kustomize/cluster-scoped-resources", "manifests/kustomize/env/platform-agnostic"):
        assert f"path: {path}" in template
        if find_upstream(f"kubeflow-pipelines/{path}/kustomization.yaml"):
            assert upstream_yaml(f"kubeflow-pipelines/{path}/kustomization.yaml")["namespace"] == "kubeflow"


# --- every prefix skiff writes is granted --------------------------------------------------------------


@pytest.mark.parametrize("rel", ["modules/aws-eks", "modules/azure-aks"])
def test_the_cloud_policies_grant_exactly_what_skiff_reads_and_writes(rel):
    from skiff.layout import ACCESS

    granted = _default(rel, "workload_storage_access")
    assert set(granted) == set(ACCESS), f"{rel}: identities for {sorted(granted)}, skiff has {sorted(ACCESS)}"
    for workload, rights in ACCESS.items():
        assert set(granted[workload]["write_prefixes"]) == set(rights["write"]), (rel, workload)
        assert set(granted[workload]["read_prefixes"]) == set(rights["read"]), (rel, workload)
    # each identity is the one of a service account (a workload without one could not use its grant)
    assert set(_default(rel, f"{w}_service_account") for w in ACCESS) == {
        f"skiff-{w}" for w in ACCESS}


def test_the_abac_conditions_confine_the_api_and_stream_identities(tmp_path):
    conditions = Scratch(tmp_path, "azure-aks", ("variables.tf", "abac.tf"),
                         {"c": "local.storage_conditions"}).outputs(AZURE_REQUIRED)["c"]

    def folders(condition: str) -> set[str]:
        return set(re.findall(r"StringStartsWith '([a-z0-9_-]+)/'", condition))

    assert folders(conditions["stream"]) == {"lake"}
    assert folders(conditions["api"][conditions["api"].index("/write'"):]) == {"models"}


# --- finding 5: a storage URI KServe accepts on Azure ------------------------------------------------

# KServe's default ClusterStorageContainer (charts/kserve-resources/templates/clusterstoragecontainer.yaml
# at v0.20.0): the URI formats its storage initializer downloads from. Read from the upstream copy when one
# is there (make cluster-schemas fetches it).
KSERVE_URI_FORMATS_V0_20 = [
    {"prefix": "gs://"}, {"prefix": "s3://"}, {"prefix": "hdfs://"}, {"prefix": "webhdfs://"},
    {"regex": r"https://(.+?).blob.core.windows.net/(.+)"},
    {"regex": r"https://(.+?).file.core.windows.net/(.+)"},
    {"regex": r"https?://(.+)/(.+)"},
]


def kserve_uri_formats() -> list[dict[str, str]]:
    found = find_upstream("kserve/charts/kserve-resources/templates/clusterstoragecontainer.yaml")
    if found is None:
        return KSERVE_URI_FORMATS_V0_20
    text = re.sub(r"\{\{.*?\}\}", "x", found.read_text())
    return yaml.safe_load(text)["spec"]["supportedUriFormats"]


def kserve_accepts(uri: str) -> bool:
    for f in kserve_uri_formats():
        if "prefix" in f and uri.startswith(f["prefix"]):
            return True
        if "regex" in f and re.fullmatch(f["regex"], uri):
            return True
    return False


def _output_value(rel: str, output: str, substitutions: dict[str, str]) -> str:
    outputs = named(config(rel), "output")
    assert output in outputs, f"{rel} has no output {output}"
    value = outputs[output]["value"]
    for expr, literal in substitutions.items():
        value = value.replace(f"${{{expr}}}", literal)
    assert "${" not in value, value
    return value


def test_the_azure_registry_uri_is_a_storage_uri_kserve_accepts():
    """Finding 5: the abfs://...dfs.core.windows.net root became storageUri, which KServe refuses."""
    rel = "modules/azure-aks"
    names = {"azurerm_storage_account.this.name": "skiffst0a1b2c3d",
             "azurerm_storage_container.root.name": _default(rel, "container_name")}
    root = _output_value(rel, "skiff_root", names)
    assert root.startswith("abfs://") and not kserve_accepts(f"{root}/models/churn/1")
    registry = _output_value(rel, "kserve_registry_uri", names)
    assert registry == "https://skiffst0a1b2c3d.blob.core.windows.net/skiff/models"
    assert kserve_accepts(f"{registry}/churn/1")
    # the same objects: <container>/<prefix> under the account the skiff root names
    assert registry.endswith(f"/{names['azurerm_storage_container.root.name']}/models")
    assert "skiffst0a1b2c3d" in root


@pytest.mark.parametrize("registry", ["abfs://skiff@skiffst0a1b2c3d.dfs.core.windows.net/models",
                                      "https://skiffst0a1b2c3d.blob.core.windows.net/skiff/models",
                                      "s3://skiff-prod-models/models"])
def test_an_inference_services_storage_uri_is_one_kserve_accepts_whatever_form_the_registry_is_named_in(registry):
    from serving.deploy.isvc import storage_uri

    uri = storage_uri(registry, "churn", 3)
    assert kserve_accepts(uri), uri
    assert uri.endswith("/models/churn/3")
    if "core.windows.net" in registry:
        assert uri == "https://skiffst0a1b2c3d.blob.core.windows.net/skiff/models/churn/3"


def test_the_aws_registry_uri_is_a_storage_uri_kserve_accepts():
    registry = _output_value("modules/aws-eks", "kserve_registry_uri", {"aws_s3_bucket.this.bucket": "b"})
    assert registry == "s3://b/models" and kserve_accepts(f"{registry}/churn/1")


@pytest.mark.parametrize("example", ["aws", "azure"])
def test_the_examples_export_the_registry_uri_for_the_environment_files(example):
    outputs = named(config(f"examples/{example}"), "output")
    module = "eks" if example == "aws" else "aks"
    assert outputs["kserve_registry_uri"]["value"] == f"${{module.{module}.kserve_registry_uri}}"
