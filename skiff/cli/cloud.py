"""``skiff cloud``, ``skiff images`` and ``skiff doctor``: the platform's cloud chores.

``skiff cloud aws ...`` and ``skiff cloud azure ...`` are the providers' own commands (credentials for
the cluster, the Azure ML workspace); ``skiff images push --registry ecr|acr`` and
``skiff doctor --cloud aws|azure`` are one command each with a provider chosen by flag. The providers'
commands live in ``_cloud_aws.py`` and ``_cloud_azure.py``; the SDKs are imported only when one runs.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from skiff.cli import _cloud_aws, _cloud_azure
from skiff.cli._common import JsonOption, console, emit, state
from skiff.errors import ConfigError, EnvironmentMissing, GateFailed, UsageError


def _azure(module: str, function: str) -> Any:
    """``skiff.cloud.azure.<module>.<function>``, or a clear error when the Azure side does not have it."""
    try:
        mod = importlib.import_module(f"skiff.cloud.azure.{module}")
    except ImportError as e:
        raise EnvironmentMissing(f"the Azure side of this command is missing (skiff.cloud.azure.{module}: {e}); "
                                 "pip install 'skiff[azure]'") from e
    fn = getattr(mod, function, None)
    if fn is None:
        raise ConfigError(f"skiff.cloud.azure.{module} has no {function}(): this skiff cannot do that on Azure yet")
    return fn


def _skiff_images(names: list[str] | None) -> dict[str, str]:
    """The local images to push (components/_image.py), all of them unless named."""
    from components._image import IMAGES

    if not names:
        return dict(IMAGES)
    unknown = [n for n in names if n not in IMAGES]
    if unknown:
        raise UsageError(f"unknown image(s) {', '.join(unknown)}; skiff's images are {', '.join(IMAGES)}")
    return {n: IMAGES[n] for n in names}


def add_commands(app: typer.Typer) -> None:
    cloud = typer.Typer(help="Cloud chores on AWS and Azure with the identity skiff already has.",
                        no_args_is_help=True)
    app.add_typer(cloud, name="cloud")
    _cloud_aws.add_commands(cloud)
    _cloud_azure.add_commands(cloud)
    _register_images(app)
    _register_doctor(app)


def _register_images(app: typer.Typer) -> None:
    images = typer.Typer(help="skiff's container images in the cloud registry (ECR or ACR).", no_args_is_help=True)
    app.add_typer(images, name="images")

    @images.command("push")
    def push(
        registry: Annotated[Literal["ecr", "acr"], typer.Option("--registry", help="ecr or acr.")],
        image: Annotated[list[str] | None, typer.Option("--image", help="Push only this image (repeatable; "
                                                        "default: every image of components/_image.py).")] = None,
        tag: Annotated[str | None, typer.Option("--tag", help="Tag in the registry (default: the package "
                                                "version, the local images' tag).")] = None,
        prefix: Annotated[str | None, typer.Option("--prefix", help="ECR: repository prefix, the Terraform "
                                                   "module's name (default: from an ECR SKIFF_IMAGE_REGISTRY).")] = None,
        kms_key: Annotated[str | None, typer.Option("--kms-key", help="ECR: KMS key of repositories skiff creates "
                                                    "(default: the AWS-managed key).")] = None,
        acr: Annotated[str | None, typer.Option("--acr", help="ACR: the registry name or login server.")] = None,
        region: _cloud_aws.RegionOption = None,
        profile: _cloud_aws.ProfileOption = None,
        role_arn: _cloud_aws.RoleOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Push skiff's images: create missing repositories (scan on push, immutable tags), log in, push."""
        from components._image import REGISTRY, TAG

        local = _skiff_images(image)
        if registry == "ecr":
            _cloud_aws.push_ecr(local, tag=tag or TAG, prefix=_cloud_aws.ecr_prefix(prefix, REGISTRY),
                                kms_key=kms_key, region=region, profile=profile, role_arn=role_arn,
                                json_out=json_out)
            return
        result = _azure("acr", "push_images")(local, tag=tag or TAG, registry=acr)
        emit(result, json_out)


def _register_doctor(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor(
        ctx: typer.Context,
        cloud: Annotated[Literal["aws", "azure"], typer.Option("--cloud", help="aws or azure.")],
        workload: Annotated[str, typer.Option("--workload", help="The identity the caller stands for (pipeline, "
                                              "serving, rollout, api, stream): which prefixes must be "
                                              "writable.")] = "pipeline",
        prefix: Annotated[str | None, typer.Option("--prefix", help="AWS: ECR repository prefix to check "
                                                   "(default: from an ECR SKIFF_IMAGE_REGISTRY; none: skipped).")] = None,
        probe: Annotated[bool, typer.Option("--probe/--no-probe", help="Probe each prefix with a small write "
                                            "(removed again).")] = True,
        tf_outputs: Annotated[Path | None, typer.Option(
            "--tf-outputs", help="File with `terraform output -json` of the aws-eks or azure-aks module: check "
            "what Terraform made (AWS: skiff_root, ecr_repository_urls and the workload roles of "
            "service_accounts; Azure: the storage account and workload_identity_ids).")] = None,
        terraform_dir: Annotated[Path | None, typer.Option(
            "--terraform-dir", help="Applied Terraform folder to run `terraform output -json` in.")] = None,
        subscription: Annotated[str | None, typer.Option(
            "--subscription", help="Azure: the storage account's subscription (default: the Terraform outputs', "
            "else AZURE_SUBSCRIPTION_ID).")] = None,
        resource_group: Annotated[str | None, typer.Option("--resource-group", help="Azure: the storage "
                                                           "account's resource group.")] = None,
        storage_account: Annotated[str | None, typer.Option("--storage-account", help="Azure: the storage "
                                                            "account (default: the abfs:// root's).")] = None,
        arm_endpoint: Annotated[str | None, typer.Option(
            "--arm-endpoint", help="Azure: the Resource Manager of a sovereign cloud (default "
            "https://management.azure.com; e.g. https://management.usgovcloudapi.net).")] = None,
        region: _cloud_aws.RegionOption = None,
        profile: _cloud_aws.ProfileOption = None,
        role_arn: _cloud_aws.RoleOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Check what skiff relies on in the cloud account and say how to fix each; exit 1 when any fails."""
        from components._image import IMAGES, REGISTRY
        from skiff.cloud import failed, terraform_outputs

        settings = state(ctx).settings
        outputs = (terraform_outputs(tf_outputs, terraform_dir)
                   if tf_outputs is not None or terraform_dir is not None else None)
        if cloud == "aws":
            if subscription or resource_group or storage_account or arm_endpoint:
                raise UsageError("--subscription, --resource-group, --storage-account and --arm-endpoint are Azure's")
            root, repositories, roles = settings.root, None, None
            if outputs is not None:
                from skiff.cloud.aws.doctor import from_outputs

                tf = from_outputs(outputs)
                root, repositories, roles = tf.root or root, tf.repositories, tf.roles
            if repositories is None or prefix:  # an explicit --prefix wins over the outputs' repositories
                try:
                    pre = _cloud_aws.ecr_prefix(prefix, REGISTRY)
                except UsageError:
                    pre = None
                repositories = [f"{pre}/{n}" for n in IMAGES] if pre else []
            checks = _cloud_aws.doctor_checks(root, workload=workload, repositories=repositories, roles=roles,
                                              probe_writes=probe, region=region, profile=profile, role_arn=role_arn)
        else:
            if prefix or region or profile or role_arn:
                raise UsageError("--prefix, --region, --profile and --role-arn are AWS's")
            checks = list(_azure("doctor", "run_checks")(
                settings, subscription_id=subscription, resource_group=resource_group,
                storage_account=storage_account, terraform_outputs=outputs,
                **({"arm_endpoint": arm_endpoint} if arm_endpoint else {})))
        bad = failed(checks)
        out = {"cloud": cloud, "ok": not bad, "checks": [vars(c) for c in checks]}

        def human(_: Any) -> None:
            for c in checks:
                mark = "[green]ok  [/]" if c.ok else "[red]FAIL[/]"
                console.print(f"{mark} {c.name}: {c.detail}", highlight=False, soft_wrap=True)
                if not c.ok and c.fix:
                    console.print(f"     fix: {c.fix}", highlight=False, soft_wrap=True)

        emit(out, json_out, human)
        if bad:
            raise GateFailed(f"{len(bad)} of {len(checks)} checks failed: {', '.join(c.name for c in bad)}")
