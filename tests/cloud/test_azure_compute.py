"""``skiff cloud azure attach-compute``: the AKS cluster from Terraform outputs as a KubernetesCompute with the
GPU pool's instance types; the PUT the SDK sends, read back with its REST model; the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml", reason="the azure extra (azure-ai-ml) is not installed")

from azure.ai.ml import load_compute  # noqa: E402
from azure.ai.ml._restclient.arm_ml_service.models import ComputeResource  # noqa: E402

from skiff.cloud.azure import compute, workspace  # noqa: E402
from skiff.errors import ConfigError, UsageError  # noqa: E402
from tests.cloud.azure_fixtures import (  # noqa: E402
    RESOURCE_GROUP,
    SUBSCRIPTION,
    WORKSPACE,
    FakeAzure,
    FakeCredential,
    rest_unknown_fields,
)

pytest_plugins = ["tests.cloud.azure_fixtures"]

CLUSTER_ID = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
              "Microsoft.ContainerService/managedClusters/skiff-dev")
#: `terraform output -json` of modules/azure-aks (the outputs attach-compute reads, in Terraform's shape)
TF_OUTPUTS = {
    "cluster_id": {"sensitive": False, "type": "string", "value": CLUSTER_ID},
    "gpu_vm_size": {"sensitive": False, "type": "string", "value": "Standard_NC24s_v3"},
    "gpu_node_selector": {"sensitive": False, "type": ["map", "string"], "value": {"skiff.dev/pool": "gpu"}},
    "gpu_tolerations": {"sensitive": False, "type": "list",
                        "value": [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
                                   "effect": "NoSchedule"}]},
}


def test_instance_types_split_the_gpu_node() -> None:
    kinds = compute.instance_types("Standard_NC24s_v3", {"skiff.dev/pool": "gpu"})
    assert sorted(kinds) == ["gpu-1", "gpu-2", "gpu-3", "gpu-4"]
    one, four = kinds["gpu-1"]["resources"]["requests"], kinds["gpu-4"]["resources"]["limits"]
    assert one == {"cpu": "5100m", "memory": "97484Mi", "nvidia.com/gpu": "1"}  # 24 vCPU * 0.85 / 4 GPUs
    assert four["nvidia.com/gpu"] == "4" and four["cpu"] == "20400m"
    assert all(k["nodeSelector"] == {"skiff.dev/pool": "gpu"} for k in kinds.values())
    with pytest.raises(UsageError, match="unknown GPU VM size"):
        compute.instance_types("Standard_D4s_v5", {})


def test_outputs_are_checked() -> None:
    c = compute.cluster_outputs(TF_OUTPUTS)
    assert (c.cluster_id, c.gpu_vm_size) == (CLUSTER_ID, "Standard_NC24s_v3")
    with pytest.raises(ConfigError, match="gpu_vm_size"):
        compute.cluster_outputs({k: v for k, v in TF_OUTPUTS.items() if k != "gpu_vm_size"})
    assert compute.cluster_outputs({k: v for k, v in TF_OUTPUTS.items() if k != "gpu_vm_size"},
                                   gpu_vm_size="Standard_NC4as_T4_v3").gpu_vm_size == "Standard_NC4as_T4_v3"
    with pytest.raises(ConfigError, match="not an AKS resource ID"):
        compute.cluster_outputs({**TF_OUTPUTS, "cluster_id": {"value": "skiff-dev"}})


def test_entity_yaml_round_trip_and_manifests(tmp_path: Path) -> None:
    cluster = compute.cluster_outputs(TF_OUTPUTS)
    entity = compute.compute_entity("skiff-aks", cluster)
    path = tmp_path / "compute.yaml"
    entity.dump(path)
    loaded = load_compute(path)
    assert loaded._to_dict() == entity._to_dict()
    assert loaded.resource_id == CLUSTER_ID and loaded.namespace == "azureml"
    manifests = compute.instance_type_manifests(cluster)
    assert [m["metadata"]["name"] for m in manifests] == ["gpu-1", "gpu-2", "gpu-3", "gpu-4"]
    assert manifests[0]["spec"]["tolerations"] == TF_OUTPUTS["gpu_tolerations"]["value"]


def test_attach_puts_the_compute_the_rest_model_reads(fake_azure: FakeAzure, azure_cloud: dict[str, Any]) -> None:
    client = workspace.ml_client(workspace.AzureMLTarget(subscription_id=SUBSCRIPTION, resource_group=RESOURCE_GROUP,
                                                         workspace=WORKSPACE), FakeCredential(), **azure_cloud)
    result = compute.attach(client, "skiff-aks", compute.cluster_outputs(TF_OUTPUTS))
    assert result.name == "skiff-aks"
    (put,) = fake_azure.calls("PUT", r"/computes/skiff-aks$")
    rest = ComputeResource(put.body)
    assert rest_unknown_fields(rest) == []
    props = rest.properties
    assert props.compute_type == "Kubernetes" and props.resource_id == CLUSTER_ID
    assert props.properties.namespace == "azureml" and props.properties.default_instance_type == "gpu-1"
    gpu2 = props.properties.instance_types["gpu-2"]
    assert gpu2.node_selector == {"skiff.dev/pool": "gpu"} and gpu2.resources.requests["nvidia.com/gpu"] == "2"


def test_cli_attach_compute_and_sync_models(fake_azure: FakeAzure, azure_cloud: dict[str, Any], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from skiff.cli import main

    workspace.ml_client(workspace.AzureMLTarget(subscription_id="s", resource_group="r", workspace="w"),
                        FakeCredential(), **azure_cloud)  # the local cloud, known to the SDK by name
    monkeypatch.setattr(workspace, "credential", FakeCredential)
    envs = tmp_path / "environments" / "dev"
    envs.mkdir(parents=True)
    (envs / "environment.yaml").write_text("name: dev\nnamespace: skiff\ningress_domain: example.com\n")
    (envs / "azureml.yaml").write_text(f"subscription_id: {SUBSCRIPTION}\nresource_group: {RESOURCE_GROUP}\n"
                                       f"workspace: {WORKSPACE}\ncloud: {azure_cloud['cloud']}\n")
    outputs = tmp_path / "tf.json"
    outputs.write_text(json.dumps(TF_OUTPUTS))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKIFF_ROOT", str(tmp_path / ".skiff"))
    monkeypatch.delenv("SKIFF_CONFIG", raising=False)
    attach = ["cloud", "azure", "attach-compute", "--tf-outputs", str(outputs)]
    assert main([*attach, "--dry-run", "--instance-types-out", str(tmp_path / "types.yaml")]) == 0
    dry = capsys.readouterr().out
    assert "type: kubernetes" in dry and CLUSTER_ID in dry
    assert "kind: InstanceType" in (tmp_path / "types.yaml").read_text()
    assert not fake_azure.calls("PUT", "/computes/")
    assert main([*attach, "--env", "dev", "--environments", str(tmp_path / "environments"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["instance_types"] == ["gpu-1", "gpu-2", "gpu-3", "gpu-4"]
    assert fake_azure.calls("PUT", "/computes/skiff-aks$")
    assert main(attach) == 2
    assert "name the workspace" in capsys.readouterr().err
    # sync-models of a model with no versions: the registry's own error, exit 2
    assert main(["cloud", "azure", "sync-models", "churn", "--environments", str(tmp_path / "environments")]) == 2
    assert "no versions" in capsys.readouterr().err
