"""``skiff cloud azure ...``: model versions in Azure ML and the AKS cluster as its compute (see
skiff/cli/cloud.py). The logic lives in :mod:`skiff.cloud.azure`; these commands render."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from skiff.cli._common import JsonOption, console, emit, state
from skiff.errors import UsageError

_EnvironmentsOption = Annotated[
    Path | None,
    typer.Option("--environments", envvar="SKIFF_ENVIRONMENTS",
                 help="The GitOps environments folder (env: SKIFF_ENVIRONMENTS; default infra/environments)."),
]


def add_commands(cloud: typer.Typer) -> None:
    azure = typer.Typer(help="Azure ML: model versions where Azure ML users look, the AKS cluster as its compute.",
                        no_args_is_help=True)
    cloud.add_typer(azure, name="azure")

    @azure.command("sync-models")
    def sync_models(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="Model name.")],
        env: Annotated[str | None, typer.Option("--env", help="Only this environment's workspace (or "
                                                "registry).")] = None,
        verify: Annotated[bool, typer.Option(
            "--verify-storage", help="First check each version's files are where its model points (blob reads "
            "as the identity: Storage Blob Data Reader).")] = False,
        environments: _EnvironmentsOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Create or update every version of a model in the Azure ML workspace or registry of each environment
        that opted in (its azureml.yaml), completing the syncs registration or promotion left pending."""
        from skiff.cloud.azure.models import StorageCheck
        from skiff.cloud.azure.models import sync_models as sync
        from skiff.cloud.azure.storage import verify_version
        from skiff.cloud.azure.workspace import credential
        from skiff.registry import ModelRegistry

        reg = ModelRegistry.from_settings(state(ctx).settings)
        check: StorageCheck | None = None
        if verify:
            cred = credential()

            def check(version_path: str, model_path: str, kind: str) -> None:
                verify_version(version_path, model_path, kind, cred)

        results = [r.model_dump(mode="json") for r in sync(reg, name, environments=environments, env=env,
                                                           verify_storage=check)]

        def human(rows: list[dict[str, Any]]) -> None:
            for r in rows:
                stage = f" stage {r['stage']}" if r.get("stage") else ""
                where = f"registry {r['registry_name']}" if r.get("registry_name") else r["workspace"]
                console.print(f"{r['env']}: {where} {r['name']}:{r['version']} {r['type']} → {r['path']}{stage}")

        emit(results, json_out, human)

    @azure.command("attach-compute")
    def attach_compute(
        ctx: typer.Context,
        env: Annotated[str | None, typer.Option("--env", help="The environment whose azureml.yaml names the "
                                                "workspace.")] = None,
        subscription: Annotated[str | None, typer.Option("--subscription", help="Workspace subscription "
                                                         "(instead of --env).")] = None,
        resource_group: Annotated[str | None, typer.Option("--resource-group", help="Workspace resource group.")] = None,
        workspace: Annotated[str | None, typer.Option("--workspace", help="Azure ML workspace name.")] = None,
        tf_outputs: Annotated[Path | None, typer.Option(
            "--tf-outputs", help="File with `terraform output -json` of the azure-aks module's configuration.")] = None,
        terraform_dir: Annotated[Path | None, typer.Option(
            "--terraform-dir", help="Applied Terraform folder to run `terraform output -json` in.")] = None,
        gpu_vm_size: Annotated[str | None, typer.Option("--gpu-vm-size", help="GPU pool VM size when the outputs "
                                                        "lack gpu_vm_size.")] = None,
        compute_name: Annotated[str, typer.Option("--name", help="Compute target name in the workspace.")] = "skiff-aks",
        namespace: Annotated[str, typer.Option("--namespace", help="Namespace Azure ML jobs run in.")] = "azureml",
        manifests: Annotated[Path | None, typer.Option(
            "--instance-types-out", help="Also write the extension's InstanceType objects (with the GPU pool's "
            "tolerations) to this YAML file for kubectl apply.")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the compute target's YAML; attach nothing.")] = False,
        environments: _EnvironmentsOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Attach the AKS cluster (Terraform outputs) to an Azure ML workspace as a Kubernetes compute target with
        the GPU pool's instance types."""
        import yaml

        from skiff.cloud import terraform_outputs
        from skiff.cloud.azure import compute
        from skiff.cloud.azure.workspace import AzureMLTarget, environments_dir, ml_client, target

        def dump_yaml(doc: Any) -> str:
            return str(yaml.safe_dump(doc, sort_keys=False))

        del ctx
        outputs = terraform_outputs(tf_outputs, terraform_dir)
        cluster = compute.cluster_outputs(outputs, gpu_vm_size=gpu_vm_size)
        entity = compute.compute_entity(compute_name, cluster, namespace=namespace)
        if manifests is not None:
            manifests.write_text("---\n".join(dump_yaml(m) for m in compute.instance_type_manifests(cluster)))
        if dry_run:
            typer.echo(dump_yaml(json.loads(json.dumps(entity._to_dict()))))
            return
        if env is not None:
            if subscription or resource_group or workspace:
                raise UsageError("--env names the workspace; give it or --subscription/--resource-group/--workspace")
            t = target(environments_dir(environments), env)
            if t is None:
                raise UsageError(f"environment {env!r} has no azureml.yaml naming its workspace")
            if t.is_registry:
                raise UsageError(f"environment {env!r} shows its models in Azure ML registry {t.registry_name}; "
                                 "a compute target belongs to a workspace: --subscription, --resource-group and "
                                 "--workspace")
        elif subscription and resource_group and workspace:
            t = AzureMLTarget(subscription_id=subscription, resource_group=resource_group, workspace=workspace)
        else:
            raise UsageError("name the workspace: --env ENV, or --subscription, --resource-group and --workspace")
        result = compute.attach(ml_client(t), compute_name, cluster, namespace=namespace)
        kinds = sorted(compute.instance_types(cluster.gpu_vm_size, cluster.gpu_node_selector))
        out = {"workspace": t.workspace, "name": result.name, "resource_id": cluster.cluster_id,
               "namespace": namespace, "instance_types": kinds,
               "provisioning_state": getattr(result, "provisioning_state", None)}
        emit(out, json_out, f"{t.workspace}: compute {result.name} → {cluster.cluster_id} (instance types "
             f"{', '.join(kinds)}, namespace {namespace})")
