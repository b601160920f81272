"""Static checks of the Terraform under terraform/.

Providers cannot be downloaded here, so `terraform init/validate` cannot run. Instead:

- `terraform fmt -check` (the real binary) checks formatting and HCL syntax;
- python-hcl2 reads every configuration and the tests assert its structure and security settings;
- the real binary evaluates each module's variables (validation blocks) and its variable-only locals
  (ABAC conditions, scale-from-zero tags) in a scratch root module with no providers;
- checkov scans every resource (marked slow).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from functools import cache
from pathlib import Path

import hcl2
import pytest

from tests.checkov import failed_checks, run_checkov, summary

REPO = Path(__file__).resolve().parents[2]
TF = REPO / "terraform"
MODULES = ("aws-eks", "azure-aks", "platform")
EXAMPLES = ("aws", "azure")
CONFIGS = tuple(f"modules/{m}" for m in MODULES) + tuple(f"examples/{e}" for e in EXAMPLES)

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
GPU_LABEL = ("skiff.io/accelerator", "nvidia-gpu")
SERVICE_ACCOUNTS = {
    "namespace": "skiff",
    "pipeline_service_account": "skiff-pipeline",
    "serving_service_account": "skiff-serving",
    "rollout_service_account": "skiff-rollout",
    "api_service_account": "skiff-api",
    "stream_service_account": "skiff-stream",
}
# Application ID of the Azure Kubernetes Service AAD server: published by Microsoft, the same in every
# tenant (kubelogin's --server-id). The only GUID allowed in the configuration.
AKS_AAD_SERVER_APP_ID = "6dae42f8-4368-4678-94ff-3960e28e3630"


# --- helpers ----------------------------------------------------------------------------------------


def _tool(name: str) -> str | None:
    local = REPO / ".tools" / "bin" / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def _require_tool(name: str) -> str:
    path = _tool(name)
    if path is None:
        pytest.skip(f"{name} not found in .tools/bin or on PATH (`make test` fetches it)")
    return path


def _parse(path: Path) -> dict:
    text = path.read_text()
    options = getattr(hcl2, "SerializationOptions", None)
    try:
        if options is None:  # python-hcl2 < 8 strips quotes by default
            return hcl2.loads(text)
        return hcl2.loads(
            text,
            serialization_options=options(
                strip_string_quotes=True, explicit_blocks=False, with_comments=False
            ),
        )
    except Exception as e:  # the parser raises several lark exception types
        raise AssertionError(f"{path.relative_to(REPO)}: not valid HCL: {e}") from e


@cache
def config(rel: str) -> dict:
    """All *.tf files of one configuration merged: top-level keys map to lists of blocks."""
    merged: dict[str, list] = {}
    files = sorted((TF / rel).glob("*.tf"))
    assert files, f"terraform/{rel} has no .tf files"
    for f in files:
        for key, blocks in _parse(f).items():
            merged.setdefault(key, []).extend(blocks)
    return merged


def named(cfg: dict, kind: str) -> dict[str, dict]:
    """variable / output / module blocks by name."""
    out: dict[str, dict] = {}
    for block in cfg.get(kind, []):
        for name, body in block.items():
            assert name not in out, f"{kind} {name} declared twice"
            out[name] = body
    return out


def resources(cfg: dict, rtype: str, kind: str = "resource") -> dict[str, dict]:
    out: dict[str, dict] = {}
    for block in cfg.get(kind, []):
        for t, by_name in block.items():
            if t == rtype:
                out.update(by_name)
    return out


def resource(rel: str, rtype: str, name: str) -> dict:
    found = resources(config(rel), rtype)
    assert name in found, f"terraform/{rel}: no {rtype}.{name}"
    return found[name]


def locals_of(rel: str) -> dict:
    merged: dict = {}
    for block in config(rel).get("locals", []):
        merged.update(block)
    return merged


def one(block_list, what: str) -> dict:
    assert isinstance(block_list, list) and len(block_list) == 1, f"expected exactly one {what} block"
    return block_list[0]


def validation_set(variable: dict) -> set[str]:
    """The literal values a variable's validation accepts (from contains([...]))."""
    values: set[str] = set()
    for v in variable.get("validation", []):
        for lst in re.findall(r"contains\(\[(.*?)\]", v["condition"], flags=re.S):
            values.update(re.findall(r'"([^"]+)"', lst))
    return values


def _terraform_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CHECKPOINT_DISABLE="1",
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        TF_DATA_DIR=str(tmp / ".terraform"),
    )
    env.pop("TF_CLI_ARGS", None)
    return env


class Scratch:
    """A root module with no providers holding copies of a module's variable-only files.

    The real terraform binary evaluates its validation blocks and locals, offline.
    """

    def __init__(self, tmp: Path, module: str, files: tuple[str, ...], outputs: dict[str, str]) -> None:
        self.terraform = _require_tool("terraform")
        self.dir = tmp / module
        self.dir.mkdir(parents=True)
        for f in files:
            shutil.copy(TF / "modules" / module / f, self.dir / f)
        (self.dir / "scratch_outputs.tf").write_text(
            "".join(f'output "{k}" {{\n  value = {v}\n}}\n' for k, v in outputs.items())
        )
        self.env = _terraform_env(self.dir)
        self.run("init", "-backend=false")

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.terraform, *args, "-no-color"],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def evaluate(self, tfvars: dict) -> subprocess.CompletedProcess:
        (self.dir / "terraform.tfvars.json").write_text(json.dumps(tfvars))
        return self.run("apply", "-auto-approve", "-lock=false", "-refresh=false")

    def outputs(self, tfvars: dict) -> dict:
        result = self.evaluate(tfvars)
        assert result.returncode == 0, result.stdout + result.stderr
        shown = self.run("output", "-json")
        assert shown.returncode == 0, shown.stderr
        return {k: v["value"] for k, v in json.loads(shown.stdout).items()}


# --- formatting and layout --------------------------------------------------------------------------


def test_terraform_fmt_check():
    terraform = _require_tool("terraform")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", "-no-color", str(TF)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_terraform_env(REPO / ".tools"),
    )
    assert result.returncode == 0, f"terraform fmt -check failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("rel", CONFIGS)
def test_configuration_layout(rel):
    names = {p.name for p in (TF / rel).iterdir()}
    assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= names
    if rel.startswith("examples/"):
        assert {"terraform.tfvars.example", "backend.hcl.example", "README.md"} <= names


@pytest.mark.parametrize("rel", CONFIGS)
def test_versions_pin_terraform_and_providers(rel):
    terraform_block = one(_parse(TF / rel / "versions.tf").get("terraform"), "terraform")
    required = terraform_block["required_version"]
    assert ">= 1.0" in required and "< 2.0" in required, required
    providers = one(terraform_block["required_providers"], "required_providers")
    assert providers, "no required providers"
    for name, spec in providers.items():
        assert spec["source"].startswith("hashicorp/"), f"{name}: {spec}"
        assert ">=" in spec["version"] and "<" in spec["version"].replace("<=", ""), (
            f"{name} unpinned: {spec}"
        )


def test_modules_leave_provider_configuration_to_the_root():
    for m in MODULES:
        assert "provider" not in config(f"modules/{m}"), f"modules/{m} configures a provider"


# --- variables and outputs --------------------------------------------------------------------------


@pytest.mark.parametrize("rel", CONFIGS)
def test_every_variable_has_a_description_and_a_type(rel):
    variables = named(config(rel), "variable")
    assert variables
    for name, body in variables.items():
        assert str(body.get("description", "")).strip(), f"{rel}: variable {name} has no description"
        assert body.get("type"), f"{rel}: variable {name} has no type"
        for v in body.get("validation", []):
            assert v.get("condition") and v.get("error_message"), f"{rel}: variable {name} validation"


@pytest.mark.parametrize("rel", CONFIGS)
def test_every_output_has_a_description(rel):
    outputs = named(config(rel), "output")
    assert outputs
    for name, body in outputs.items():
        assert str(body.get("description", "")).strip(), f"{rel}: output {name} has no description"


@pytest.mark.parametrize(
    ("rel", "variable", "must_include"),
    [
        ("modules/aws-eks", "kubernetes_version", {"1.33"}),
        ("modules/aws-eks", "cpu_instance_types", {"m6i.xlarge"}),
        ("modules/aws-eks", "gpu_instance_types", {"g5.xlarge", "g4dn.xlarge"}),
        ("modules/aws-eks", "gpu_ami_type", {"AL2023_x86_64_NVIDIA"}),
        ("modules/azure-aks", "kubernetes_version", {"1.33"}),
        ("modules/azure-aks", "location", {"westeurope", "eastus"}),
        ("modules/azure-aks", "system_vm_size", {"Standard_D4ds_v5"}),
        ("modules/azure-aks", "cpu_vm_size", {"Standard_D8ds_v5"}),
        ("modules/azure-aks", "gpu_vm_size", {"Standard_NC4as_T4_v3"}),
        ("examples/aws", "region", {"eu-west-1", "us-east-1"}),
        ("examples/azure", "location", {"westeurope"}),
    ],
)
def test_fixed_sets_are_validated(rel, variable, must_include):
    body = named(config(rel), "variable")[variable]
    allowed = validation_set(body)
    assert must_include <= allowed, f"{rel}: {variable} validation allows {sorted(allowed)}"
    default = body.get("default")
    if default is not None:
        for value in default if isinstance(default, list) else [default]:
            assert value in allowed, f"{rel}: default {value!r} of {variable} fails its own validation"


def test_gpu_sizes_are_nvidia_only():
    aws = validation_set(named(config("modules/aws-eks"), "variable")["gpu_instance_types"])
    assert aws and all(re.match(r"^(g4dn|g5|g6|g6e|p4d|p5)\.", t) for t in aws), aws
    assert validation_set(named(config("modules/aws-eks"), "variable")["gpu_ami_type"]) <= {
        "AL2023_x86_64_NVIDIA",
        "BOTTLEROCKET_x86_64_NVIDIA",
    }
    azure = validation_set(named(config("modules/azure-aks"), "variable")["gpu_vm_size"])
    assert azure and all(s.startswith("Standard_NC") for s in azure), azure


def test_every_allowed_gpu_type_has_a_gpu_count_for_scale_from_zero():
    allowed = validation_set(named(config("modules/aws-eks"), "variable")["gpu_instance_types"])
    counts = locals_of("modules/aws-eks")["gpu_count_by_type"]
    assert allowed == set(counts), f"missing: {allowed - set(counts)}, extra: {set(counts) - allowed}"
    assert all(isinstance(n, int) and n >= 1 for n in counts.values())


# The real terraform binary evaluates the validation blocks: good input passes, each bad input is
# refused with its own message.
AWS_REQUIRED = {"availability_zones": ["eu-west-1a", "eu-west-1b", "eu-west-1c"]}
AZURE_REQUIRED = {"location": "westeurope"}


@pytest.mark.parametrize(
    ("module", "required", "bad", "message"),
    [
        ("aws-eks", AWS_REQUIRED, {"kubernetes_version": "1.20"}, "kubernetes_version must be one of"),
        ("aws-eks", AWS_REQUIRED, {"gpu_instance_types": ["m5.large"]}, "gpu_instance_types must be"),
        ("aws-eks", AWS_REQUIRED, {"cpu_instance_types": []}, "cpu_instance_types must be"),
        ("aws-eks", AWS_REQUIRED, {"gpu_ami_type": "AL2023_x86_64_STANDARD"}, "gpu_ami_type must be"),
        (
            "aws-eks",
            AWS_REQUIRED,
            {"endpoint_public_access_cidrs": ["0.0.0.0/0"]},
            "0.0.0.0/0 is not allowed",
        ),
        ("aws-eks", AWS_REQUIRED, {"availability_zones": ["eu-west-1a"]}, "2 to 4 distinct zones"),
        ("aws-eks", AWS_REQUIRED, {"availability_zones": ["eu-west-1"] * 2}, "2 to 4 distinct zones"),
        ("aws-eks", AWS_REQUIRED, {"vpc_cidr": "10.0.0.0/24"}, "vpc_cidr must be"),
        ("aws-eks", AWS_REQUIRED, {"namespace": "Skiff_NS"}, "namespace must be a DNS-1123 label"),
        (
            "aws-eks",
            AWS_REQUIRED,
            {
                "workload_storage_access": {
                    "serving": {"read_prefixes": ["models"], "write_prefixes": ["models"]}
                }
            },
            "exactly the keys pipeline, serving, rollout, api and stream",
        ),
        (
            "azure-aks",
            AZURE_REQUIRED,
            {"location": "West Europe"},
            "location must be a supported Azure region",
        ),
        ("azure-aks", AZURE_REQUIRED, {"kubernetes_version": "1.29"}, "kubernetes_version must be one of"),
        ("azure-aks", AZURE_REQUIRED, {"gpu_vm_size": "Standard_D4s_v5"}, "gpu_vm_size must be an NC-series"),
        ("azure-aks", AZURE_REQUIRED, {"admin_group_object_ids": ["admins"]}, "must be an object ID"),
        (
            "azure-aks",
            AZURE_REQUIRED,
            {"storage_replication_type": "XYZ"},
            "storage_replication_type must be",
        ),
        (
            "azure-aks",
            AZURE_REQUIRED,
            {"api_server_authorized_ip_ranges": ["0.0.0.0/0"]},
            "0.0.0.0/0 is not allowed",
        ),
        (
            "azure-aks",
            AZURE_REQUIRED,
            {
                "workload_storage_access": {
                    "pipeline": {"read_prefixes": ["lake"], "write_prefixes": ["lake"]},
                    "serving": {"read_prefixes": ["models"], "write_prefixes": []},
                    "rollout": {"read_prefixes": ["models"], "write_prefixes": ["rollouts"]},
                }
            },
            "must also be a read prefix",
        ),
    ],
)
def test_validation_refuses_bad_input(tmp_path, module, required, bad, message):
    scratch = Scratch(tmp_path, module, ("variables.tf",), {})
    good = scratch.evaluate(required)
    assert good.returncode == 0, good.stdout + good.stderr
    result = scratch.evaluate({**required, **bad})
    assert result.returncode != 0, f"{bad} was accepted"
    assert message in " ".join(result.stderr.split()), result.stderr


# --- GPU pools --------------------------------------------------------------------------------------


def test_eks_gpu_node_group_is_tainted_labelled_and_scales_from_zero():
    rel = "modules/aws-eks"
    gpu = resource(rel, "aws_eks_node_group", "gpu")
    variables = named(config(rel), "variable")
    assert one(gpu["taint"], "taint") == {
        "key": "nvidia.com/gpu",
        "value": "present",
        "effect": "NO_SCHEDULE",
    }
    assert "var.gpu_node_labels" in gpu["labels"]
    assert variables["gpu_node_labels"]["default"] == dict([GPU_LABEL])
    assert gpu["ami_type"] == "${var.gpu_ami_type}"
    assert "NVIDIA" in variables["gpu_ami_type"]["default"]
    scaling = one(gpu["scaling_config"], "scaling_config")
    assert scaling["min_size"] == "${var.gpu_min_size}" and variables["gpu_min_size"]["default"] == 0
    assert (
        scaling["desired_size"] == "${var.gpu_desired_size}" and variables["gpu_desired_size"]["default"] == 0
    )
    assert locals_of(rel)["gpu_taint"] == GPU_TAINT
    # The cluster autoscaler learns about the would-be node from tags on the Auto Scaling group.
    asg_tags = resource(rel, "aws_autoscaling_group_tag", "gpu_node_template")
    assert asg_tags["for_each"] == "${local.gpu_autoscaler_template_tags}"
    assert "aws_eks_node_group.gpu" in asg_tags["autoscaling_group_name"]
    # The CPU group carries no taint: system add-ons and CPU work run there.
    assert "taint" not in resource(rel, "aws_eks_node_group", "cpu")


def test_eks_scale_from_zero_tags_evaluate_to_the_gpu_node_template(tmp_path):
    scratch = Scratch(
        tmp_path, "aws-eks", ("variables.tf", "gpu.tf"), {"tags": "local.gpu_autoscaler_template_tags"}
    )
    prefix = "k8s.io/cluster-autoscaler/node-template"
    tags = scratch.outputs({**AWS_REQUIRED, "gpu_instance_types": ["g5.12xlarge"]})["tags"]
    assert tags[f"{prefix}/taint/nvidia.com/gpu"] == "present:NoSchedule"
    assert tags[f"{prefix}/label/{GPU_LABEL[0]}"] == GPU_LABEL[1]
    assert tags[f"{prefix}/resources/nvidia.com/gpu"] == "4"
    tags = scratch.outputs(
        {**AWS_REQUIRED, "gpu_instance_types": ["g4dn.xlarge"], "gpu_capacity_type": "SPOT"}
    )["tags"]
    assert tags[f"{prefix}/resources/nvidia.com/gpu"] == "1"
    assert tags[f"{prefix}/label/eks.amazonaws.com/capacityType"] == "SPOT"


def test_aks_gpu_pool_is_tainted_labelled_and_scales_from_zero():
    rel = "modules/azure-aks"
    gpu = resource(rel, "azurerm_kubernetes_cluster_node_pool", "gpu")
    variables = named(config(rel), "variable")
    assert gpu["mode"] == "User"
    assert gpu["node_taints"] == ["nvidia.com/gpu=present:NoSchedule"]
    assert "var.gpu_node_labels" in gpu["node_labels"]
    assert variables["gpu_node_labels"]["default"] == dict([GPU_LABEL])
    assert gpu["vm_size"] == "${var.gpu_vm_size}" and variables["gpu_vm_size"]["default"].startswith(
        "Standard_NC"
    )
    assert gpu["auto_scaling_enabled"] is True
    assert gpu["min_count"] == "${var.gpu_min_count}" and variables["gpu_min_count"]["default"] == 0
    assert "node_count" in one(gpu["lifecycle"], "lifecycle")["ignore_changes"][0]
    assert locals_of(rel)["gpu_taint"] == GPU_TAINT
    assert "node_taints" not in resource(rel, "azurerm_kubernetes_cluster_node_pool", "cpu")


def test_both_clouds_export_the_same_gpu_scheduling_contract():
    for rel in ("modules/aws-eks", "modules/azure-aks"):
        outputs = named(config(rel), "output")
        assert outputs["gpu_node_selector"]["value"] == "${var.gpu_node_labels}"
        tolerations = outputs["gpu_tolerations"]["value"]
        assert "local.gpu_taint.key" in str(tolerations) and "local.gpu_taint.effect" in str(tolerations)


# --- clusters ---------------------------------------------------------------------------------------


def test_eks_cluster_is_pinned_private_logged_and_encrypts_secrets():
    rel = "modules/aws-eks"
    cluster = resource(rel, "aws_eks_cluster", "this")
    assert cluster["version"] == "${var.kubernetes_version}"
    encryption = one(cluster["encryption_config"], "encryption_config")
    assert encryption["resources"] == ["secrets"]
    assert one(encryption["provider"], "provider")["key_arn"] == "${aws_kms_key.eks.arn}"
    vpc = one(cluster["vpc_config"], "vpc_config")
    assert vpc["endpoint_private_access"] is True
    assert "aws_subnet.private" in vpc["subnet_ids"]
    assert named(config(rel), "variable")["endpoint_public_access_cidrs"]["default"] == []
    assert cluster["enabled_cluster_log_types"] == "${var.cluster_log_types}"
    assert set(named(config(rel), "variable")["cluster_log_types"]["default"]) == {
        "api",
        "audit",
        "authenticator",
        "controllerManager",
        "scheduler",
    }
    for name, key in resources(config(rel), "aws_kms_key").items():
        assert key["enable_key_rotation"] is True, f"aws_kms_key.{name} is not rotated"


def test_eks_nodes_require_imdsv2_and_encrypted_volumes():
    template = resource("modules/aws-eks", "aws_launch_template", "node")
    metadata = one(template["metadata_options"], "metadata_options")
    assert metadata["http_tokens"] == "required" and metadata["http_put_response_hop_limit"] == 1
    ebs = one(one(template["block_device_mappings"], "block_device_mappings")["ebs"], "ebs")
    assert ebs["encrypted"] is True


def test_vpc_has_private_subnets_across_zones_and_nat():
    rel = "modules/aws-eks"
    private = resource(rel, "aws_subnet", "private")
    assert private["for_each"] == "${local.private_subnet_cidrs}"
    assert locals_of(rel)["azs"] == "${var.availability_zones}"
    assert "kubernetes.io/role/internal-elb" in private["tags"]
    assert resource(rel, "aws_subnet", "public")["map_public_ip_on_launch"] is False
    assert "aws_nat_gateway.this" in str(resource(rel, "aws_route_table", "private")["route"])
    assert resource(rel, "aws_flow_log", "this")["traffic_type"] == "ALL"


def test_aks_has_local_accounts_off_and_workload_identity_on():
    rel = "modules/azure-aks"
    aks = resource(rel, "azurerm_kubernetes_cluster", "this")
    assert aks["local_account_disabled"] is True
    assert aks["workload_identity_enabled"] is True
    assert aks["oidc_issuer_enabled"] is True
    assert aks["kubernetes_version"] == "${var.kubernetes_version}"
    assert one(aks["network_profile"], "network_profile")["network_plugin"] == "azure"
    assert aks["azure_policy_enabled"] == "${var.azure_policy_enabled}"
    assert "microsoft_defender" in str(aks.get("dynamic", ""))
    assert one(aks["azure_active_directory_role_based_access_control"], "aad")["azure_rbac_enabled"] is True
    system = one(aks["default_node_pool"], "default_node_pool")
    assert system["only_critical_addons_enabled"] is True
    assert aks["private_cluster_enabled"] == "${local.private_cluster}"
    assert named(config(rel), "variable")["api_server_authorized_ip_ranges"]["default"] == []


# --- storage and registries -------------------------------------------------------------------------


def test_s3_bucket_is_encrypted_versioned_private_and_has_lifecycle_rules():
    rel = "modules/aws-eks"
    sse = resource(rel, "aws_s3_bucket_server_side_encryption_configuration", "this")
    rule = one(sse["rule"], "rule")
    default = one(rule["apply_server_side_encryption_by_default"], "default")
    assert default["sse_algorithm"] == "aws:kms" and default["kms_master_key_id"] == "${aws_kms_key.data.arn}"
    assert rule["bucket_key_enabled"] is True
    versioning = resource(rel, "aws_s3_bucket_versioning", "this")
    assert one(versioning["versioning_configuration"], "versioning_configuration")["status"] == "Enabled"
    block = resource(rel, "aws_s3_bucket_public_access_block", "this")
    for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert block[flag] is True, flag
    lifecycle = resource(rel, "aws_s3_bucket_lifecycle_configuration", "this")
    ids = {r["id"] for r in lifecycle["rule"]}
    assert {"abort-incomplete-multipart-uploads", "expire-noncurrent-versions"} <= ids
    assert all(r["status"] == "Enabled" for r in lifecycle["rule"])
    policy = resources(config(rel), "aws_iam_policy_document", kind="data")["bucket"]
    statement = one(policy["statement"], "statement")
    assert statement["effect"] == "Deny" and "aws:SecureTransport" in str(statement["condition"])
    for b in ("aws_s3_bucket_versioning", "aws_s3_bucket_public_access_block", "aws_s3_bucket_policy"):
        assert resource(rel, b, "this")["bucket"] == "${aws_s3_bucket.this.id}"


def test_storage_account_is_adls_tls12_private_versioned_with_soft_delete():
    rel = "modules/azure-aks"
    account = resource(rel, "azurerm_storage_account", "this")
    assert account["is_hns_enabled"] is True
    assert account["min_tls_version"] == "TLS1_2"
    assert account["https_traffic_only_enabled"] is True
    assert account["allow_nested_items_to_be_public"] is False
    assert account["shared_access_key_enabled"] is False
    assert one(account["network_rules"], "network_rules")["default_action"] == "Deny"
    blob = one(account["blob_properties"], "blob_properties")
    assert blob["versioning_enabled"] == "${var.blob_versioning_enabled}"
    assert named(config(rel), "variable")["blob_versioning_enabled"]["default"] is True
    assert one(blob["delete_retention_policy"], "delete_retention_policy")["days"]
    assert one(blob["container_delete_retention_policy"], "container_delete_retention_policy")["days"]
    assert resource(rel, "azurerm_storage_container", "root")["container_access_type"] == "private"


def test_ecr_repositories_are_immutable_scanned_and_kms_encrypted():
    repo = resource("modules/aws-eks", "aws_ecr_repository", "this")
    assert repo["image_tag_mutability"] == "IMMUTABLE"
    assert one(repo["image_scanning_configuration"], "scan")["scan_on_push"] is True
    assert one(repo["encryption_configuration"], "encryption")["encryption_type"] == "KMS"


def test_acr_has_no_admin_user_or_anonymous_pull():
    acr = resource("modules/azure-aks", "azurerm_container_registry", "this")
    assert acr["admin_enabled"] is False
    assert acr["anonymous_pull_enabled"] is False


def test_key_vault_uses_rbac_and_purge_protection():
    vault = resource("modules/azure-aks", "azurerm_key_vault", "this")
    assert vault["enable_rbac_authorization"] is True and vault["purge_protection_enabled"] is True
    assert one(vault["network_acls"], "network_acls")["default_action"] == "Deny"


# --- identities -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rel", ["modules/aws-eks", "modules/azure-aks"])
def test_service_account_names_match_the_helm_charts(rel):
    variables = named(config(rel), "variable")
    for name, default in SERVICE_ACCOUNTS.items():
        assert variables[name]["default"] == default, name
    workloads = locals_of(rel)["workloads"]
    assert workloads == {
        "pipeline": "${var.pipeline_service_account}",
        "serving": "${var.serving_service_account}",
        "rollout": "${var.rollout_service_account}",
        "api": "${var.api_service_account}",
        "stream": "${var.stream_service_account}",
    }
    access = variables["workload_storage_access"]["default"]
    # serving writes the inference log and nothing else: not the lake, not the registry
    assert access["serving"] == {"read_prefixes": ["models", "feast", "inference"], "write_prefixes": ["inference"]}
    assert access["rollout"]["write_prefixes"] == ["rollouts"]
    assert {"lake", "artifacts", "models"} <= set(access["pipeline"]["write_prefixes"])


def test_irsa_trust_is_limited_to_named_service_accounts(tmp_path):
    rel = "modules/aws-eks"
    assume = resources(config(rel), "aws_iam_policy_document", kind="data")["workload_assume"]
    statement = one(assume["statement"], "statement")
    assert statement["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    conditions = {c["variable"]: c for c in statement["condition"]}
    sub = conditions["${local.oidc_issuer}:sub"]
    assert sub["test"] == "StringEquals", "a StringLike trust would admit a wildcard of accounts"
    assert sub["values"] == "${local.workload_subjects[each.key]}"
    subjects = Scratch(tmp_path, "aws-eks", ("variables.tf", "trust.tf"), {"s": "local.workload_subjects"}).outputs(
        AWS_REQUIRED
    )["s"]
    assert subjects == {
        "pipeline": [
            "system:serviceaccount:skiff:skiff-pipeline",
            "system:serviceaccount:kubeflow:skiff-pipeline",
            "system:serviceaccount:kubeflow:pipeline-runner",
        ],
        "serving": ["system:serviceaccount:skiff:skiff-serving"],
        "rollout": ["system:serviceaccount:skiff:skiff-rollout"],
        "api": ["system:serviceaccount:skiff:skiff-api"],
        "stream": ["system:serviceaccount:skiff:skiff-stream"],
    }
    assert all("*" not in s for subs in subjects.values() for s in subs)
    assert conditions["${local.oidc_issuer}:aud"]["values"] == ["sts.amazonaws.com"]
    assert resource(rel, "aws_iam_role", "workload")["for_each"] == "${local.workloads}"
    storage = resources(config(rel), "aws_iam_policy_document", kind="data")["workload_storage"]
    assert storage["for_each"] == "${var.workload_storage_access}"
    text = json.dumps(storage)
    assert '"s3:*"' not in text and '"*"' not in text, "workload storage policies must name their resources"


def test_federated_credentials_bind_one_service_account_each():
    rel = "modules/azure-aks"
    credential = resource(rel, "azurerm_federated_identity_credential", "workload")
    assert credential["for_each"] == "${local.federated_subjects}"
    assert credential["subject"] == "${each.value.subject}"
    assert credential["parent_id"] == "${azurerm_user_assigned_identity.workload[each.value.workload].id}"
    assert credential["audience"] == ["api://AzureADTokenExchange"]
    assert credential["issuer"] == "${azurerm_kubernetes_cluster.this.oidc_issuer_url}"
    assignment = resource(rel, "azurerm_role_assignment", "workload_storage")
    assert assignment["condition"] == "${local.storage_conditions[each.key]}"
    assert assignment["condition_version"] == "2.0"


def test_abac_conditions_confine_each_workload_to_its_folders(tmp_path):
    scratch = Scratch(
        tmp_path, "azure-aks", ("variables.tf", "abac.tf"), {"conditions": "local.storage_conditions"}
    )
    conditions = scratch.outputs(AZURE_REQUIRED)["conditions"]

    def folders(condition: str) -> set[str]:
        return set(re.findall(r"StringStartsWith '([a-z0-9_-]+)/'", condition))

    serving, rollout, pipeline = conditions["serving"], conditions["rollout"], conditions["pipeline"]
    assert folders(serving) == {"models", "feast", "inference"}  # the feature server reads the Feast registry
    assert folders(serving[serving.index("/write'"):]) == {"inference"}, "serving writes the inference log only"
    assert folders(rollout) == {"models", "rollouts"}
    write_clause = rollout[rollout.index("/write'") :]
    assert folders(write_clause) == {"rollouts"}, "the rollout controller writes rollouts/ only"
    assert folders(pipeline) == {"lake", "artifacts", "models", "feast", "inference"}
    assert "inference" not in folders(pipeline[pipeline.index("/write'"):]), "the monitor only reads the log"
    for c in conditions.values():
        assert c.count("(") == c.count(")")


# --- examples ---------------------------------------------------------------------------------------


def test_examples_have_remote_state_backends():
    aws = one(one(config("examples/aws")["terraform"], "terraform")["backend"], "backend")
    assert set(aws) == {"s3"} and aws["s3"]["encrypt"] is True and aws["s3"]["key"]
    settings = _parse(TF / "examples/aws/backend.hcl.example")
    assert {"bucket", "region", "dynamodb_table"} <= set(settings)
    azure = one(one(config("examples/azure")["terraform"], "terraform")["backend"], "backend")
    assert set(azure) == {"azurerm"} and azure["azurerm"]["key"]
    settings = _parse(TF / "examples/azure/backend.hcl.example")
    assert {"resource_group_name", "storage_account_name", "container_name"} <= set(settings)


@pytest.mark.parametrize("example", EXAMPLES)
def test_tfvars_example_sets_only_declared_variables(example):
    declared = named(config(f"examples/{example}"), "variable")
    tfvars = _parse(TF / "examples" / example / "terraform.tfvars.example")
    assert tfvars, "terraform.tfvars.example sets nothing"
    assert set(tfvars) <= set(declared), f"undeclared: {set(tfvars) - set(declared)}"
    assert tfvars.get("install_platform") is False


@pytest.mark.parametrize("example", EXAMPLES)
def test_examples_call_the_modules_with_their_variables(example):
    """What `terraform validate` would check of the module calls, without providers."""
    modules = named(config(f"examples/{example}"), "module")
    assert "platform" in modules
    for name, call in modules.items():
        source = call["source"]
        assert source.startswith("../../modules/"), source
        target = (TF / "examples" / example / source).resolve()
        assert target.is_dir(), f"{name}: {source} does not exist"
        rel = str(target.relative_to(TF))
        variables = named(config(rel), "variable")
        passed = set(call) - {"source", "count", "for_each", "providers", "depends_on"}
        assert passed <= set(variables), f"{name}: unknown arguments {passed - set(variables)}"
        required = {v for v, body in variables.items() if "default" not in body}
        assert required <= passed, f"{name}: required variables not passed: {required - passed}"
    # Every module.<name>.<output> the example refers to (module calls, providers, outputs) exists.
    text = "\n".join(p.read_text() for p in sorted((TF / "examples" / example).glob("*.tf")))
    for mod, out in set(re.findall(r"module\.(\w+)\.(\w+)", text)):
        assert mod in modules, f"module.{mod} is not declared"
        mod_rel = str((TF / "examples" / example / modules[mod]["source"]).resolve().relative_to(TF))
        assert out in named(config(mod_rel), "output"), f"module.{mod}.{out} is not an output of {mod_rel}"
    platform = modules["platform"]
    assert platform["count"] == "${var.install_platform ? 1 : 0}"
    assert named(config(f"examples/{example}"), "variable")["install_platform"]["default"] is False


def test_platform_installs_kserve_cert_manager_and_the_skiff_charts_by_relative_path():
    rel = "modules/platform"
    releases = resources(config(rel), "helm_release")
    assert {"cert_manager", "kserve_crd", "kserve", "skiff", "skiff_model"} <= set(releases)
    # chart names and versions come from components.yaml (tests/cluster holds them against upstream)
    assert releases["cert_manager"]["chart"] == '${local.components["cert-manager"].chart}'
    assert releases["kserve"]["chart"] == '${local.components["kserve-resources"].chart}'
    for name in ("knative_serving", "kubeflow_pipelines", "redis_dev"):
        chart = re.search(r'"\$\{path\.module\}/([^"]+)"', f'"{releases[name]["chart"]}"').group(1)
        assert (TF / rel / chart / "Chart.yaml").is_file(), f"{name}: no local chart at {chart}"
    chart_locals = locals_of(rel)
    for local, chart in (("skiff_chart", "helm/skiff"), ("skiff_model_chart", "helm/skiff-model")):
        path = re.search(r'"\$\{path\.module\}/([^"]+)"', chart_locals[local]).group(1)
        assert (TF / rel / path).resolve() == (REPO / chart).resolve(), f"{local} points at {path}"
    assert releases["skiff"]["chart"] == "${local.skiff_chart}"
    assert releases["skiff_model"]["chart"] == "${local.skiff_model_chart}"


# --- secrets ----------------------------------------------------------------------------------------

SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "12-digit AWS account id": re.compile(r"(?<![0-9])[0-9]{12}(?![0-9])"),
    "GUID (subscription, tenant or object id)": re.compile(
        r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
    ),
    "credential assignment": re.compile(
        r"^\s*(access_key|secret_key|client_secret|client_certificate_password|password|token|sas_token)\s*=\s*\"",
        re.M | re.I,
    ),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
}


def _terraform_files() -> list[Path]:
    return sorted(
        p
        for p in TF.rglob("*")
        if p.is_file() and ".terraform" not in p.parts and not p.name.endswith((".tfstate", ".lock.hcl"))
    )


def find_secrets(text: str) -> list[str]:
    text = text.replace(AKS_AAD_SERVER_APP_ID, "<aks-aad-server>")
    return [what for what, pattern in SECRET_PATTERNS.items() if pattern.search(text)]


def test_secret_scan_catches_what_it_looks_for():
    assert find_secrets('principal = "arn:aws:iam::123456789012:root"') == ["12-digit AWS account id"]
    assert find_secrets('subscription_id = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"') == [
        "GUID (subscription, tenant or object id)"
    ]
    assert find_secrets('  secret_key = "abc"') == ["credential assignment"]
    assert find_secrets("AKIAIOSFODNN7EXAMPLE") == ["AWS access key id"]
    assert find_secrets(f'args = ["--server-id", "{AKS_AAD_SERVER_APP_ID}"]') == []


def test_no_hard_coded_credentials_account_ids_or_guids():
    files = _terraform_files()
    assert len(files) > 20
    found = {str(p.relative_to(REPO)): hits for p in files if (hits := find_secrets(p.read_text()))}
    assert not found, found


# --- checkov ----------------------------------------------------------------------------------------

SKIP_COMMENT = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")


def test_every_checkov_skip_names_a_check_and_a_reason():
    skips = []
    for p in TF.rglob("*.tf"):
        for line in p.read_text().splitlines():
            if "checkov:skip" in line:
                m = SKIP_COMMENT.search(line)
                assert m and re.fullmatch(r"CKV2?_[A-Z]+_\d+", m.group(1)), f"{p.name}: {line.strip()}"
                assert m.group(2) and len(m.group(2).strip()) >= 20, (
                    f"{p.name}: skip without a reason: {line}"
                )
                skips.append(m.group(1))
    assert skips, "no checkov skips found: the scan above would be looking at the wrong files"


@pytest.mark.slow
def test_checkov_finds_no_failed_checks():
    checkov = _require_tool("checkov")
    started = time.monotonic()
    reports = run_checkov(checkov, "terraform", [TF], REPO)
    elapsed = time.monotonic() - started
    failed, totals = failed_checks(reports), summary(reports)
    assert totals["parsing_errors"] == 0, totals
    assert not failed, "\n".join(
        f"{f['check_id']} {f['resource']} {f['file_path']}:{f['file_line_range']} {f['check_name']}"
        for f in failed
    )
    # A scan that checked next to nothing would pass vacuously.
    assert totals["passed"] >= 200, totals
    assert elapsed < 120, f"checkov took {elapsed:.0f} s"


# --- references (what `terraform validate` would catch, offline) -------------------------------------

_RESOURCE_PREFIXES = ("aws_", "azurerm_", "kubernetes_", "helm_", "random_", "tls_")
_RESOURCE_REF = re.compile(r"(?<![\w.\"/-])((?:" + "|".join(_RESOURCE_PREFIXES) + r")\w+)\.(\w+)")


def _declared(cfg: dict) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {"var": set(named(cfg, "variable")), "local": set(), "module": set(named(cfg, "module"))}
    for block in cfg.get("locals", []):
        found["local"].update(block)
    for kind in ("resource", "data"):
        for block in cfg.get(kind, []):
            for rtype, by_name in block.items():
                found.setdefault(f"{kind}:{rtype}", set()).update(by_name)
    return found


@pytest.mark.parametrize("rel", CONFIGS)
def test_every_reference_names_something_declared(rel):
    """var.X, local.X, module.X, data.T.N and T.N (a resource) each exist in the configuration."""
    declared = _declared(config(rel))
    text = "\n".join(
        re.sub(r"#.*", "", p.read_text()) for p in sorted((TF / rel).glob("*.tf"))
    )
    problems = []
    for kind in ("var", "local", "module"):
        for name in set(re.findall(rf"(?<![\w.]){kind}\.(\w+)", text)):
            if name not in declared[kind]:
                problems.append(f"{kind}.{name}")
    for rtype, name in set(re.findall(r"(?<![\w.])data\.(\w+)\.(\w+)", text)):
        if name not in declared.get(f"data:{rtype}", set()):
            problems.append(f"data.{rtype}.{name}")
    for rtype, name in set(_RESOURCE_REF.findall(text)):
        if name not in declared.get(f"resource:{rtype}", set()):
            problems.append(f"{rtype}.{name}")
    assert not problems, f"terraform/{rel}: undeclared: {sorted(problems)}"


def test_the_reference_check_sees_references():
    declared = _declared(config("modules/platform"))
    assert {"cloud", "namespace", "redis_mode"} <= declared["var"]
    assert "components" in declared["local"] and "skiff" in declared["resource:helm_release"]
