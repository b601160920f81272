"""``skiff cloud aws ...``: the cluster's credentials (see skiff/cli/cloud.py), and the AWS side of
``skiff images push``, ``skiff doctor`` and ``skiff promote``'s scan gate. The work is in skiff.cloud.aws;
this module parses options and renders."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from skiff.cli._common import JsonOption, emit, err_console

if TYPE_CHECKING:
    from serving.deploy.gitops import Environments
    from serving.deploy.isvc import RuntimeImages
    from skiff.cloud.aws.ecr import ScanGateDecision
    from skiff.layout import Workload
    from skiff.registry import ModelRegistry

RegionOption = Annotated[str | None, typer.Option("--region", help="AWS region (default: boto3's chain, "
                                                  "AWS_REGION or the profile's).")]
ProfileOption = Annotated[str | None, typer.Option("--profile", help="AWS profile (default: AWS_PROFILE).")]
RoleOption = Annotated[str | None, typer.Option("--role-arn", help="Assume this IAM role over the chain's "
                                                "identity.")]


def aws_session(region: str | None, profile: str | None, role_arn: str | None) -> Any:
    from skiff.cloud.aws.session import session

    return session(profile=profile, region=region, role_arn=role_arn)


def add_commands(cloud: typer.Typer) -> None:
    aws = typer.Typer(help="AWS: EKS credentials and kubeconfig with no AWS CLI.", no_args_is_help=True)
    cloud.add_typer(aws, name="aws")

    @aws.command("token")
    def token(
        cluster: Annotated[str, typer.Option("--cluster", help="EKS cluster name.")],
        region: RegionOption = None,
        profile: ProfileOption = None,
        role_arn: RoleOption = None,
    ) -> None:
        """Print an EKS bearer token as an ExecCredential (what a kubeconfig exec plugin prints)."""
        from skiff.cloud.aws.eks import exec_credential, get_token

        sess = aws_session(region, profile, role_arn)
        sys.stdout.write(json.dumps(exec_credential(get_token(sess, cluster))) + "\n")

    @aws.command("kubeconfig")
    def kubeconfig(
        cluster: Annotated[str, typer.Option("--cluster", help="EKS cluster name.")],
        kubeconfig_path: Annotated[Path | None, typer.Option(
            "--kubeconfig", help="File to write (default: the first KUBECONFIG path, else ~/.kube/config).")] = None,
        alias: Annotated[str | None, typer.Option("--alias", help="Context name (default: the cluster ARN).")] = None,
        command: Annotated[str, typer.Option("--exec-command", help="The skiff executable the exec plugin "
                                             "runs.")] = "skiff",
        set_current: Annotated[bool, typer.Option("--set-current/--no-set-current",
                                                  help="Make it the current context.")] = True,
        region: RegionOption = None,
        profile: ProfileOption = None,
        role_arn: RoleOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Write (or update) the kubeconfig entry of an EKS cluster; its user runs `skiff cloud aws token`."""
        from skiff.cloud.aws.eks import (
            default_kubeconfig,
            describe_cluster,
            kubeconfig_entry,
            write_kubeconfig,
        )

        sess = aws_session(region, profile, role_arn)
        info = describe_cluster(sess, cluster)
        entry = kubeconfig_entry(info, command=command, profile=profile or os.environ.get("AWS_PROFILE"),
                                 role_arn=role_arn, alias=alias)
        path = write_kubeconfig(kubeconfig_path or default_kubeconfig(), entry, set_current=set_current)
        emit({"kubeconfig": str(path), "context": entry["context"]["name"], "cluster": info.name,
              "endpoint": info.endpoint, "region": info.region}, json_out,
             f"wrote context {entry['context']['name']} to {path}")


# -- skiff images push --registry ecr -----------------------------------------------------------------------
def ecr_prefix(prefix: str | None, configured_registry: str) -> str:
    """The repository prefix: ``--prefix``, else the path of an ECR ``SKIFF_IMAGE_REGISTRY``."""
    from skiff.cloud.aws.ecr import parse_ecr_image
    from skiff.errors import UsageError

    if prefix:
        return prefix.strip("/")
    parsed = parse_ecr_image(configured_registry.rstrip("/") + "/x")
    if parsed is not None and "/" in parsed.repository:
        return parsed.repository.rsplit("/", 1)[0]
    raise UsageError("give --prefix NAME (the Terraform module's name: repositories are <name>/<image>), or set "
                     "SKIFF_IMAGE_REGISTRY to the module's image_registry output")


def push_ecr(images: dict[str, str], *, tag: str, prefix: str, kms_key: str | None, region: str | None,
             profile: str | None, role_arn: str | None, json_out: bool) -> None:
    from skiff.cloud.aws.ecr import push_images

    states, pushed = push_images(aws_session(region, profile, role_arn), images, prefix=prefix, tag=tag,
                                 kms_key=kms_key)
    out = {"registry": "ecr", "repositories": [vars(s) for s in states], "images": [vars(p) for p in pushed]}

    def human(_: Any) -> None:
        for s in states:
            note = "created" if s.created else "exists"
            err_console.print(f"repository {s.name}: {note}" + (f" (warning: {', '.join(s.problems)})"
                                                                 if s.problems else ""), highlight=False)
        for p in pushed:
            typer.echo(f"{p.action:8} {p.target}" + (f" {p.digest}" if p.digest else ""))

    emit(out, json_out, human)


# -- skiff promote's scan gate -------------------------------------------------------------------------------
def serving_image_refs(envs: Environments, reg: ModelRegistry, env: str, name: str, version: int | str | None,
                       images: RuntimeImages) -> list[str]:
    """The images the version would be served with in ``env``: the (GPU) predictor, and the transformer of a
    model with a feature service (the environment's overrides over skiff's images)."""
    from serving.deploy.gitops import Resources
    from serving.deploy.isvc import needs_gpu

    cfg = envs.environment(env)
    mv = reg.get(name, version)
    imgs = images.with_overrides(cfg.images, f"{env}/environment.yaml")
    dep = envs.deployment(env, name) if envs.model_path(env, name).is_file() else None
    resources = ((dep.resources if dep else None) or Resources()).merged_over(cfg.defaults.resources)
    refs = [imgs.gpu_predictor if needs_gpu(mv.metadata, resources) else imgs.predictor]
    if mv.metadata.feature_service:
        refs.append(imgs.transformer)
    return refs


def promotion_scan_gate(envs: Environments, reg: ModelRegistry, env: str, name: str, version: int | str | None,
                        images: RuntimeImages, *, force: bool, reason: str | None) -> ScanGateDecision | None:
    """ECR's scan gate on a promotion: None when no serving image of the environment is in ECR (no AWS
    call then); else the decision (raises GateFailed when refused)."""
    from skiff.cloud.aws.ecr import check_serving_images, parse_ecr_image

    cfg = envs.environment(env)
    every = images.with_overrides(cfg.images, f"{env}/environment.yaml")
    if not any(parse_ecr_image(ref) for ref in (every.predictor, every.gpu_predictor, every.transformer)):
        return None
    refs = serving_image_refs(envs, reg, env, name, version, images)
    mv = reg.get(name, version)
    return check_serving_images(refs, session_for_region=lambda r: aws_session(r, None, None), force=force,
                                reason=reason, what=f"{name} version {mv.version}")


# -- skiff doctor --cloud aws --------------------------------------------------------------------------------
def doctor_checks(root: str, *, workload: str, repositories: list[str], probe_writes: bool, region: str | None,
                  profile: str | None, role_arn: str | None, roles: Any = None) -> list[Any]:
    from skiff.cloud.aws.doctor import run_checks

    return run_checks(aws_session(region, profile, role_arn), root=root, workload=cast("Workload", workload),
                      repositories=repositories, probe_writes=probe_writes, roles=roles)


def with_scan_note(reason: str | None, decision: ScanGateDecision | None) -> str | None:
    """The reason a promotion records: the user's, plus what the scan gate overrode (when it did)."""
    note = decision.recorded_reason() if decision is not None else None
    return f"{reason} [{note}]" if note and reason else reason
