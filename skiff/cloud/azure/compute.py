"""The AKS cluster as an Azure ML Kubernetes compute target, with the GPU pool's instance types.

Azure ML runs jobs on an attached AKS cluster through its cluster extension (``Microsoft.AzureML.Kubernetes``,
installed by ``terraform/modules/azure-aks`` when ``azureml_extension`` is on). Attaching is one ARM call
(``computes/<name>`` PUT) that the SDK's ``KubernetesCompute`` makes; the instance types tell Azure ML
users which share of a GPU node a job may ask for (``gpu-1`` = one GPU with its share of CPU and memory,
up to ``gpu-<n>`` = the whole node), placed on the GPU pool by its node selector.

What the cluster has comes from the Terraform outputs of ``modules/azure-aks`` (``terraform output -json``):
``cluster_id``, ``gpu_vm_size``, ``gpu_node_selector``, ``gpu_tolerations``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skiff.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import KubernetesCompute

__all__ = ["GPU_VM_SIZES", "ClusterOutputs", "cluster_outputs", "instance_types", "compute_entity", "attach",
           "instance_type_manifests", "NAMESPACE"]

#: The namespace Azure ML jobs run in on the cluster (the extension's default is "default"; a namespace of
#: their own keeps them apart from skiff's).
NAMESPACE = "azureml"

#: The GPU pool's sizes (modules/azure-aks's gpu_vm_size validation): vCPUs, memory GiB, GPUs.
GPU_VM_SIZES: dict[str, tuple[int, int, int]] = {
    "Standard_NC4as_T4_v3": (4, 28, 1),
    "Standard_NC8as_T4_v3": (8, 56, 1),
    "Standard_NC16as_T4_v3": (16, 110, 1),
    "Standard_NC64as_T4_v3": (64, 440, 4),
    "Standard_NC6s_v3": (6, 112, 1),
    "Standard_NC12s_v3": (12, 224, 2),
    "Standard_NC24s_v3": (24, 448, 4),
    "Standard_NC24ads_A100_v4": (24, 220, 1),
    "Standard_NC48ads_A100_v4": (48, 440, 2),
    "Standard_NC96ads_A100_v4": (96, 880, 4),
    "Standard_NC40ads_H100_v5": (40, 320, 1),
    "Standard_NC80adis_H100_v5": (80, 640, 2),
}

#: Share of a node's CPU and memory an instance type may request: the rest is the kubelet's, the system
#: daemons' and the GPU pool's DaemonSets' (device plugin, monitoring).
_ALLOCATABLE = 0.85


@dataclass(frozen=True)
class ClusterOutputs:
    """What attach-compute needs from ``modules/azure-aks``'s Terraform outputs."""

    cluster_id: str
    gpu_vm_size: str
    gpu_node_selector: dict[str, str]
    gpu_tolerations: list[dict[str, str]]


def _value(outputs: Mapping[str, Any], key: str) -> Any:
    if key not in outputs:
        raise ConfigError(f"Terraform outputs have no {key!r} (outputs of terraform/modules/azure-aks expected; "
                          f"have: {', '.join(sorted(outputs)) or 'none'})")
    v = outputs[key]
    return v["value"] if isinstance(v, dict) and "value" in v else v


def cluster_outputs(outputs: Mapping[str, Any], *, gpu_vm_size: str | None = None) -> ClusterOutputs:
    """Read ``terraform output -json`` (each output ``{"value": ...}``) or a plain mapping of values."""
    cluster_id = _value(outputs, "cluster_id")
    if not isinstance(cluster_id, str) or "/providers/Microsoft.ContainerService/managedClusters/" not in cluster_id:
        raise ConfigError(f"cluster_id {cluster_id!r} is not an AKS resource ID")
    size = gpu_vm_size or _value(outputs, "gpu_vm_size")
    selector = _value(outputs, "gpu_node_selector")
    tolerations = _value(outputs, "gpu_tolerations") if "gpu_tolerations" in outputs else []
    if not isinstance(selector, dict) or not all(isinstance(v, str) for v in selector.values()):
        raise ConfigError("gpu_node_selector must map labels to values")
    if not isinstance(tolerations, list):
        raise ConfigError("gpu_tolerations must be a list")
    return ClusterOutputs(cluster_id, str(size), dict(selector), [dict(t) for t in tolerations])


def terraform_outputs(directory: Path) -> dict[str, Any]:
    """``terraform output -json`` of an applied configuration folder."""
    from skiff.cloud import terraform_outputs as read

    return read(directory=directory)


def instance_types(vm_size: str, node_selector: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Azure ML instance types of a GPU node size, in the REST shape (``instanceTypes``): ``gpu-<k>`` for
    k GPUs, each with k/n of the node's allocatable CPU and memory, on the GPU pool's nodes."""
    if vm_size not in GPU_VM_SIZES:
        raise UsageError(f"unknown GPU VM size {vm_size!r}; known: {', '.join(sorted(GPU_VM_SIZES))}")
    vcpus, mem_gib, gpus = GPU_VM_SIZES[vm_size]
    out: dict[str, dict[str, Any]] = {}
    for k in range(1, gpus + 1):
        cpu_m = math.floor(vcpus * 1000 * _ALLOCATABLE * k / gpus)
        mem_mi = math.floor(mem_gib * 1024 * _ALLOCATABLE * k / gpus)
        amount = {"cpu": f"{cpu_m}m", "memory": f"{mem_mi}Mi", "nvidia.com/gpu": str(k)}
        out[f"gpu-{k}"] = {"nodeSelector": dict(node_selector),
                           "resources": {"requests": dict(amount), "limits": dict(amount)}}
    return out


def compute_entity(name: str, cluster: ClusterOutputs, *, namespace: str = NAMESPACE) -> KubernetesCompute:
    """The ``KubernetesCompute`` that attaches the cluster (default instance type: one GPU)."""
    from azure.ai.ml.entities import KubernetesCompute

    return KubernetesCompute(
        name=name, resource_id=cluster.cluster_id, namespace=namespace,
        description="skiff's AKS cluster (GPU pool instance types)",
        properties={"instanceTypes": instance_types(cluster.gpu_vm_size, cluster.gpu_node_selector),
                    "defaultInstanceType": "gpu-1"})


def attach(client: MLClient, name: str, cluster: ClusterOutputs, *, namespace: str = NAMESPACE) -> KubernetesCompute:
    """Attach (or update) the compute target and wait for Azure ML to accept it."""
    compute = compute_entity(name, cluster, namespace=namespace)
    result: KubernetesCompute = client.compute.begin_attach(compute).result()
    return result


def instance_type_manifests(cluster: ClusterOutputs) -> list[dict[str, Any]]:
    """The extension's ``InstanceType`` objects (``amlarc.azureml.com/v1alpha1``) with the GPU pool's
    tolerations, which the ARM compute properties cannot carry: ``kubectl apply`` them after attaching."""
    out = []
    for name, spec in instance_types(cluster.gpu_vm_size, cluster.gpu_node_selector).items():
        out.append({"apiVersion": "amlarc.azureml.com/v1alpha1", "kind": "InstanceType",
                    "metadata": {"name": name},
                    "spec": {"nodeSelector": spec["nodeSelector"], "tolerations": cluster.gpu_tolerations,
                             "resources": spec["resources"]}})
    return out
