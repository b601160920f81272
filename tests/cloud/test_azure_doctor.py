"""``skiff doctor --cloud azure`` against a local Resource Manager: a storage account as modules/azure-aks
makes it passes; a misconfigured one fails each check with its fix; workload identities holding more than
their least roles are named."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from skiff.cloud import failed
from skiff.cloud.azure import doctor
from skiff.config import Settings
from skiff.errors import UsageError
from tests.cloud.azure_fixtures import (
    ACCOUNT,
    ACCOUNT_ID,
    BLOB_CONTRIBUTOR,
    BLOB_READER,
    CONTAINER,
    CONTAINER_SCOPE,
    CONTRIBUTOR,
    KV_SECRETS_USER,
    RESOURCE_GROUP,
    SUBSCRIPTION,
    FakeAzure,
    FakeCredential,
)

pytest_plugins = ["tests.cloud.azure_fixtures"]

ROOT = f"abfs://{CONTAINER}@{ACCOUNT}.dfs.core.windows.net"
IDENTITY = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.ManagedIdentity/" \
           "userAssignedIdentities/skiff-dev-{}"
VAULT = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.KeyVault/vaults/skiffkv"
CONDITION = "((!(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write'})))"


def _run(fake: FakeAzure, **kw: Any) -> dict[str, Any]:
    checks = doctor.run_checks(Settings(root=ROOT), subscription_id=SUBSCRIPTION, credential=FakeCredential(),
                               arm_endpoint=fake.url, **kw)
    return {c.name: c for c in checks}


def _least_roles(fake: FakeAzure) -> dict[str, str]:
    ids = {}
    for workload in ("pipeline", "serving"):
        principal = f"principal-{workload}"
        fake.identities[IDENTITY.format(workload)] = principal
        ids[workload] = IDENTITY.format(workload)
        fake.assign(principal, KV_SECRETS_USER, VAULT)
    fake.assign("principal-pipeline", BLOB_CONTRIBUTOR, CONTAINER_SCOPE, condition=CONDITION)
    fake.assign("principal-serving", BLOB_READER, CONTAINER_SCOPE)
    return ids


def test_the_account_terraform_makes_passes(fake_azure: FakeAzure) -> None:
    ids = _least_roles(fake_azure)
    checks = _run(fake_azure, identities=ids)
    assert failed(list(checks.values())) == []
    assert set(checks) >= {"storage: hierarchical namespace", "storage: TLS 1.2 minimum",
                           "storage: no public blob access", "storage: blob soft delete",
                           "storage: container soft delete", "identity: pipeline", "identity: serving"}
    assert checks["identity: serving"].detail == "Key Vault Secrets User, Storage Blob Data Reader"
    # the account was found by name in the subscription (no resource group given), with a bearer token
    listing = fake_azure.calls("GET", r"/providers/Microsoft.Storage/storageAccounts$")
    assert listing and listing[0].query["api-version"] == ["2023-05-01"]
    assert all(r.authorization and r.authorization.startswith("Bearer ") for r in fake_azure.requests)


def test_a_misconfigured_account_fails_each_check_with_its_fix(fake_azure: FakeAzure) -> None:
    props = fake_azure.storage["account"]["properties"]
    props.update({"isHnsEnabled": False, "minimumTlsVersion": "TLS1_0", "allowBlobPublicAccess": True,
                  "allowSharedKeyAccess": True})
    fake_azure.storage["blob"]["properties"] = {"deleteRetentionPolicy": {"enabled": False},
                                                "containerDeleteRetentionPolicy": {"enabled": False}}
    checks = _run(fake_azure, resource_group=RESOURCE_GROUP)
    bad = {c.name for c in failed(list(checks.values()))}
    assert bad == {"storage: hierarchical namespace", "storage: TLS 1.2 minimum", "storage: no public blob access",
                   "storage: no shared keys", "storage: blob soft delete", "storage: container soft delete"}
    assert "TLS1_0" in checks["storage: TLS 1.2 minimum"].detail
    assert "min_tls_version" in checks["storage: TLS 1.2 minimum"].fix
    assert "--allow-blob-public-access false" in checks["storage: no public blob access"].fix
    assert checks["identities"].ok and "not checked" in checks["identities"].detail
    assert not fake_azure.calls("GET", r"/providers/Microsoft.Storage/storageAccounts$")  # went straight to it
    assert fake_azure.calls("GET", f"^{ACCOUNT_ID}$")


def test_identities_with_more_than_their_least_roles_are_named(fake_azure: FakeAzure) -> None:
    ids = _least_roles(fake_azure)
    fake_azure.assign("principal-serving", BLOB_CONTRIBUTOR, CONTAINER_SCOPE, condition=CONDITION)
    fake_azure.assign("principal-pipeline", CONTRIBUTOR, f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}")
    fake_azure.assign("principal-pipeline", BLOB_READER, ACCOUNT_ID)
    checks = _run(fake_azure, identities=ids)
    assert "serving only reads" in checks["identity: serving"].detail and not checks["identity: serving"].ok
    pipeline = checks["identity: pipeline"]
    assert not pipeline.ok
    assert "Contributor at" in pipeline.detail and "wider than skiff's file system" in pipeline.detail
    # a contributor role without its ABAC condition is every prefix writable
    fake_azure.assignments["principal-pipeline"] = []
    fake_azure.assign("principal-pipeline", BLOB_CONTRIBUTOR, CONTAINER_SCOPE)
    assert "without an ABAC condition" in _run(fake_azure, identities=ids)["identity: pipeline"].detail


def test_an_unknown_account_and_missing_inputs(fake_azure: FakeAzure, monkeypatch: pytest.MonkeyPatch) -> None:
    checks = doctor.run_checks(Settings(root=ROOT), subscription_id=SUBSCRIPTION, storage_account="otheraccount",
                               credential=FakeCredential(), arm_endpoint=fake_azure.url)
    assert [(c.name, c.ok) for c in checks] == [("storage: account", False)]
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    with pytest.raises(UsageError, match="subscription"):
        doctor.run_checks(Settings(root=ROOT), credential=FakeCredential(), arm_endpoint=fake_azure.url)
    with pytest.raises(UsageError, match="storage account"):
        doctor.run_checks(Settings(root="s3://bucket/skiff"), subscription_id=SUBSCRIPTION,
                          credential=FakeCredential(), arm_endpoint=fake_azure.url)


def test_terraform_outputs_give_the_account_and_the_identities(fake_azure: FakeAzure,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    ids = _least_roles(fake_azure)
    outputs = {
        "cluster_id": {"value": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
                                "Microsoft.ContainerService/managedClusters/skiff-dev"},
        "resource_group_name": {"value": RESOURCE_GROUP}, "storage_account_name": {"value": ACCOUNT},
        "storage_container_name": {"value": CONTAINER}, "workload_identity_ids": {"value": ids},
    }
    checks = doctor.run_checks(Settings(), terraform_outputs=outputs, credential=FakeCredential(),
                               arm_endpoint=fake_azure.url)
    assert failed(checks) == []
    assert {"identity: pipeline", "identity: serving"} <= {c.name for c in checks}


def _tf_outputs(tmp_path: Path, ids: dict[str, str]) -> Path:
    """What `terraform output -json` of modules/azure-aks prints (the outputs the doctor reads, and others)."""
    outputs = {
        "cluster_id": {"sensitive": False, "type": "string",
                       "value": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
                                "Microsoft.ContainerService/managedClusters/skiff-dev"},
        "resource_group_name": {"sensitive": False, "type": "string", "value": RESOURCE_GROUP},
        "storage_account_name": {"sensitive": False, "type": "string", "value": ACCOUNT},
        "storage_container_name": {"sensitive": False, "type": "string", "value": CONTAINER},
        "skiff_root": {"sensitive": False, "type": "string", "value": ROOT},
        "workload_identity_ids": {"sensitive": False, "type": ["map", "string"], "value": ids},
        "redis": {"sensitive": True, "type": "dynamic", "value": None},
    }
    path = tmp_path / "aks-outputs.json"
    path.write_text(json.dumps(outputs))
    return path


@pytest.fixture
def doctor_cli(fake_azure: FakeAzure, skiff_env: Path, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, dict[str, Any], str]]:
    """``skiff doctor --cloud azure --json ARGS`` against the local Resource Manager, with a local skiff root
    (so whatever the doctor checks comes from the arguments) and no subscription in the environment."""
    from skiff.cli import main
    from skiff.cloud.azure import workspace

    monkeypatch.setattr(workspace, "credential", FakeCredential)
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)

    def run(*args: str) -> tuple[int, dict[str, Any], str]:
        code = main(["doctor", "--cloud", "azure", "--arm-endpoint", fake_azure.url, "--json", *args])
        out = capsys.readouterr()
        return code, (json.loads(out.out) if out.out.strip() else {}), out.err

    return run


def test_doctor_cli_checks_what_the_terraform_outputs_name(fake_azure: FakeAzure, tmp_path: Path,
                                                            doctor_cli: Any) -> None:
    ids = _least_roles(fake_azure)
    outputs = _tf_outputs(tmp_path, ids)
    code, out, err = doctor_cli("--tf-outputs", str(outputs))
    assert code == 0 and out["ok"], (err, out)
    by_name = {c["name"]: c for c in out["checks"]}
    assert {"identity: pipeline", "identity: serving"} <= set(by_name)
    assert by_name["storage: account"]["detail"].startswith(ACCOUNT)
    # straight to the account Terraform names (its resource group known), and each identity read by its ID
    assert fake_azure.calls("GET", f"^{ACCOUNT_ID}$")
    assert not fake_azure.calls("GET", r"/providers/Microsoft.Storage/storageAccounts$")
    assert {r.path for r in fake_azure.calls("GET", "userAssignedIdentities")} == set(ids.values())
    # an identity Terraform made that holds more than its roles fails the command
    fake_azure.assign("principal-serving", CONTRIBUTOR, f"/subscriptions/{SUBSCRIPTION}")
    code, out, err = doctor_cli("--tf-outputs", str(outputs))
    assert code == 1 and not out["ok"]
    assert [c["name"] for c in out["checks"] if not c["ok"]] == ["identity: serving"]
    assert "identity: serving" in err


def test_doctor_cli_explicit_options_win_and_bad_outputs_are_config_errors(
        fake_azure: FakeAzure, tmp_path: Path, doctor_cli: Any) -> None:
    outputs = _tf_outputs(tmp_path, _least_roles(fake_azure))
    code, out, _ = doctor_cli("--tf-outputs", str(outputs), "--storage-account", "otheraccount")
    assert code == 1 and [(c["name"], c["ok"]) for c in out["checks"]] == [("storage: account", False)]
    bad = tmp_path / "bad.json"
    bad.write_text("Outputs:\n\nskiff_root = \"abfs://...\"\n")  # `terraform output` without -json
    code, _, err = doctor_cli("--tf-outputs", str(bad))
    assert code == 2 and "terraform output -json" in err
    code, _, err = doctor_cli("--tf-outputs", str(outputs), "--terraform-dir", str(tmp_path))
    assert code == 2 and "one of --tf-outputs" in err
    code, _, err = doctor_cli("--region", "us-east-1")
    assert code == 2 and "AWS's" in err
    code, _, err = doctor_cli()  # no outputs, no abfs:// root, no subscription
    assert code == 2 and "subscription" in err


def test_doctor_cli_without_an_identity_is_a_config_error(fake_azure: FakeAzure, tmp_path: Path, skiff_env: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from azure.identity import ChainedTokenCredential, EnvironmentCredential

    from skiff.cli import main

    for key in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_SUBSCRIPTION_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr("azure.identity.DefaultAzureCredential",
                        lambda **_: ChainedTokenCredential(EnvironmentCredential()))
    outputs = _tf_outputs(tmp_path, _least_roles(fake_azure))
    code = main(["doctor", "--cloud", "azure", "--arm-endpoint", fake_azure.url, "--tf-outputs", str(outputs)])
    err = capsys.readouterr().err
    assert code == 2 and "no Azure identity found" in err, err
    assert "unexpected error" not in err
    assert fake_azure.requests == []


def test_skiffs_credential_passes_tokens_through_the_bearer_policy(fake_azure: FakeAzure) -> None:
    """The wrapper azure-identity's chain runs in, around a credential of the get_token protocol only:
    Resource Manager gets its bearer token (azure-core asks get_token_info)."""
    from skiff.cloud.azure.workspace import SkiffCredential

    inner = FakeCredential()
    checks = doctor.run_checks(Settings(root=ROOT), subscription_id=SUBSCRIPTION, arm_endpoint=fake_azure.url,
                               credential=SkiffCredential(inner))  # type: ignore[arg-type]
    assert failed(checks) == [] and inner.scopes == [f"{fake_azure.url}/.default"]
    assert all(r.authorization == "Bearer fake-aad-token-1" for r in fake_azure.requests)
    with pytest.raises(UsageError, match="https"):
        doctor.run_checks(Settings(root=ROOT), subscription_id=SUBSCRIPTION, credential=FakeCredential(),
                          arm_endpoint=fake_azure.url.replace("https://", "http://"))


def test_doctor_cli_runs_terraform_output_in_an_applied_folder(fake_azure: FakeAzure, tmp_path: Path,
                                                                doctor_cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """--terraform-dir: the real terraform binary prints the outputs of an applied configuration (one with
    outputs only, applied offline: no provider to download) and the doctor checks what they name."""
    import shutil
    import subprocess

    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed")
    ids = _least_roles(fake_azure)
    folder = tmp_path / "applied"
    folder.mkdir()
    values = {"cluster_id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
                            "Microsoft.ContainerService/managedClusters/skiff-dev",
              "resource_group_name": RESOURCE_GROUP, "storage_account_name": ACCOUNT,
              "storage_container_name": CONTAINER, "workload_identity_ids": ids}
    # a JSON value is an HCL expression (objects take "key": value as well as key = value)
    (folder / "main.tf").write_text("".join(f"output \"{k}\" {{\n  value = {json.dumps(v)}\n}}\n"
                                            for k, v in values.items()))
    for key, value in {"CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "TF_INPUT": "0"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TF_CLI_ARGS", raising=False)
    monkeypatch.setenv("TF_DATA_DIR", str(folder / ".terraform"))
    for args in (["init", "-backend=false"], ["apply", "-auto-approve"]):
        proc = subprocess.run([terraform, f"-chdir={folder}", *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    code, out, err = doctor_cli("--terraform-dir", str(folder))
    assert code == 0 and out["ok"], (err, out)
    assert {"identity: pipeline", "identity: serving"} <= {c["name"] for c in out["checks"]}
    code, _, err = doctor_cli("--terraform-dir", str(tmp_path / "not-applied"))
    assert code == 2 and "terraform output failed" in err
