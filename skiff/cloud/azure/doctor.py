"""``skiff doctor --cloud azure``: the storage account and identities skiff relies on, checked.

Reads the management plane (Azure Resource Manager) with the caller's azure-identity token through
:class:`skiff.cloud.azure.arm.Arm`: the settings that make the account safe for skiff (hierarchical
namespace, TLS 1.2, HTTPS only, no public blob access, no shared keys, soft delete of blobs and
containers) are properties of the account and its blob service, which the data plane does not show.
The caller needs ``Reader`` on the storage account and on the identities (role assignments are readable
with ``Reader`` too). Each failed check says how to fix it, the Terraform setting first
(``terraform/modules/azure-aks`` sets every one of them).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from skiff.cloud import Check, output_value
from skiff.cloud.azure.arm import ARM_ENDPOINT, AUTHORIZATION_API, IDENTITY_API, STORAGE_API, Arm
from skiff.config import Settings
from skiff.errors import NotFoundError, SkiffError, UsageError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = ["run_checks", "ROLES", "storage_target"]

#: Built-in role definitions by their fixed IDs (the same in every tenant).
ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "acdd72a7-3385-48ef-bd42-f606fba81ae7": "Reader",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": "Storage Blob Data Reader",
    "17d1049b-9a84-46fb-8f53-869881c3d3ab": "Storage Account Contributor",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "7f951dda-4ed3-4680-a7ca-43fe172d538d": "AcrPull",
    "8311e382-0749-4cb8-b61a-304f252e45ec": "AcrPush",
}
_READ_ONLY_WORKLOADS = {"serving"}
_ROOT = re.compile(r"^(abfss?|az)://(?P<container>[^@/]+)(@(?P<account>[a-z0-9]+)\.dfs\.[^/]+)?")
_TF = "terraform/modules/azure-aks (storage.tf)"


def storage_target(settings: Settings) -> tuple[str | None, str | None]:
    """``(account, container)`` of skiff's root when it is on ADLS (``abfs://<c>@<account>.dfs...``)."""
    m = _ROOT.match(settings.root)
    if not m:
        return None, None
    account = m.group("account") or settings.storage_options.get("account_name")
    return (str(account) if account else None), m.group("container")


def _account_id(arm: Arm, subscription_id: str, resource_group: str | None, account: str) -> str:
    if resource_group:
        return (f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/"
                f"Microsoft.Storage/storageAccounts/{account}")
    for acct in arm.get_all(f"/subscriptions/{subscription_id}/providers/Microsoft.Storage/storageAccounts",
                            STORAGE_API):
        if str(acct.get("name", "")).lower() == account.lower():
            return str(acct["id"])
    raise NotFoundError(f"storage account {account!r} not found in subscription {subscription_id}")


def _storage_checks(props: Mapping[str, Any], blob: Mapping[str, Any]) -> list[Check]:
    tls = props.get("minimumTlsVersion") or "TLS1_0"
    delete = blob.get("deleteRetentionPolicy") or {}
    container = blob.get("containerDeleteRetentionPolicy") or {}
    return [
        Check("storage: hierarchical namespace", props.get("isHnsEnabled") is True,
              "on (ADLS Gen2: atomic folder renames for published versions)" if props.get("isHnsEnabled")
              else "off: folder renames are copies, a version can appear half-written",
              f"is_hns_enabled = true in {_TF}; an existing account: az storage account hns-migration start"),
        Check("storage: TLS 1.2 minimum", tls in ("TLS1_2", "TLS1_3"), f"minimumTlsVersion {tls}",
              f"min_tls_version = \"TLS1_2\" in {_TF}; or az storage account update --min-tls-version TLS1_2"),
        Check("storage: HTTPS only", props.get("supportsHttpsTrafficOnly", True) is True,
              "HTTPS only" if props.get("supportsHttpsTrafficOnly", True) else "HTTP accepted",
              f"https_traffic_only_enabled = true in {_TF}; or az storage account update --https-only true"),
        Check("storage: no public blob access", props.get("allowBlobPublicAccess", False) is False,
              "public blob access off" if not props.get("allowBlobPublicAccess", False)
              else "allowBlobPublicAccess is on: a container can be made anonymous-readable",
              f"allow_nested_items_to_be_public = false in {_TF}; or az storage account update "
              "--allow-blob-public-access false"),
        Check("storage: no shared keys", props.get("allowSharedKeyAccess", True) is False,
              "Entra ID only" if props.get("allowSharedKeyAccess", True) is False
              else "shared keys and SAS accepted: anyone with a key bypasses the roles and ABAC conditions",
              f"shared_access_key_enabled = false in {_TF}; or az storage account update "
              "--allow-shared-key-access false"),
        Check("storage: blob soft delete", bool(delete.get("enabled")),
              f"{delete.get('days')} days" if delete.get("enabled") else "off: a deleted version is gone",
              f"blob_properties.delete_retention_policy in {_TF}; or az storage account blob-service-properties "
              "update --enable-delete-retention true --delete-retention-days 30"),
        Check("storage: container soft delete", bool(container.get("enabled")),
              f"{container.get('days')} days" if container.get("enabled") else "off: a deleted file system is gone",
              f"blob_properties.container_delete_retention_policy in {_TF}; or az storage account "
              "blob-service-properties update --enable-container-delete-retention true "
              "--container-delete-retention-days 30"),
    ]


def _identity_check(arm: Arm, subscription_id: str, workload: str, identity: str, account_id: str,
                    container: str | None) -> Check:
    """One workload identity's role assignments are the least ones: data roles on skiff's file system only
    (writes under an ABAC condition, none for serving), Key Vault secrets read, image pulls; nothing else."""
    name = f"identity: {workload}"
    fix = "terraform/modules/azure-aks (identities.tf) grants exactly these; remove the others: az role assignment delete"
    principal = identity
    if identity.startswith("/"):
        principal = str(arm.get(identity, IDENTITY_API).get("properties", {}).get("principalId", ""))
        if not principal:
            return Check(name, False, f"{identity} has no principal ID", fix)
    assignments = arm.get_all(f"/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleAssignments",
                              AUTHORIZATION_API, **{"$filter": f"principalId eq '{principal}'"})
    container_scope = f"{account_id}/blobServices/default/containers/{container}".lower() if container else None
    problems: list[str] = []
    held: list[str] = []
    for a in assignments:
        p = a.get("properties", {})
        role_id = str(p.get("roleDefinitionId", "")).rsplit("/", 1)[-1].lower()
        role = ROLES.get(role_id, f"custom role {role_id}")
        scope = str(p.get("scope", ""))
        held.append(role)
        if role in ("Storage Blob Data Reader", "Storage Blob Data Contributor"):
            if container_scope is None or scope.lower() != container_scope:
                problems.append(f"{role} at {scope} (wider than skiff's file system)")
            elif role == "Storage Blob Data Contributor":
                if workload in _READ_ONLY_WORKLOADS:
                    problems.append(f"{role}: {workload} only reads")
                elif not p.get("condition"):
                    problems.append(f"{role} without an ABAC condition (every prefix writable)")
        elif role == "Key Vault Secrets User":
            if "/providers/microsoft.keyvault/vaults/" not in scope.lower():
                problems.append(f"{role} at {scope} (wider than one key vault)")
        elif role != "AcrPull":
            problems.append(f"{role} at {scope}")
    if problems:
        return Check(name, False, "; ".join(problems), fix)
    return Check(name, True, ", ".join(sorted(set(held))) or "no role assignments", fix)


def _from_outputs(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """What the doctor takes from ``terraform output -json`` of modules/azure-aks."""
    cluster = output_value(outputs, "cluster_id")
    m = re.match(r"^/subscriptions/([^/]+)/", cluster) if isinstance(cluster, str) else None
    ids = output_value(outputs, "workload_identity_ids")
    return {"subscription_id": m.group(1) if m else None, "resource_group": output_value(outputs, "resource_group_name"),
            "storage_account": output_value(outputs, "storage_account_name"),
            "container": output_value(outputs, "storage_container_name"),
            "identities": dict(ids) if isinstance(ids, dict) else None}


def run_checks(settings: Settings, *, subscription_id: str | None = None, resource_group: str | None = None,
               storage_account: str | None = None, identities: Mapping[str, str] | None = None,
               terraform_outputs: Mapping[str, Any] | None = None, credential: TokenCredential | None = None,
               arm_endpoint: str = ARM_ENDPOINT) -> list[Check]:
    """The Azure checks: skiff's storage account (``storage_account``, else the account of the ``abfs://``
    root) in ``subscription_id`` (else ``AZURE_SUBSCRIPTION_ID``), and the role assignments of
    ``identities`` (workload -> user-assigned identity resource ID, as the Terraform output
    ``workload_identity_ids`` gives them, or a principal ID). ``terraform_outputs`` (``terraform output
    -json`` of modules/azure-aks) gives all of these at once; explicit arguments win."""
    from skiff.cloud.azure.workspace import credential as default_credential

    tf = _from_outputs(terraform_outputs or {})
    subscription_id = subscription_id or tf["subscription_id"] or os.environ.get("AZURE_SUBSCRIPTION_ID")
    resource_group = resource_group or tf["resource_group"]
    identities = identities or tf["identities"]
    account, container = storage_target(settings)
    if tf["storage_account"] and not storage_account:
        account, container = str(tf["storage_account"]), str(tf["container"] or container or "")
    account = storage_account or account
    if not subscription_id:
        raise UsageError("the subscription is needed: --subscription or AZURE_SUBSCRIPTION_ID")
    if not account:
        raise UsageError(f"no storage account: skiff's root {settings.root!r} is not abfs://<container>@<account>."
                         "dfs.core.windows.net; name the account (--storage-account)")
    arm = Arm(credential or default_credential(), arm_endpoint)
    try:
        account_id = _account_id(arm, subscription_id, resource_group, account)
        acct = arm.get(account_id, STORAGE_API)
    except NotFoundError as e:
        return [Check("storage: account", False, e.message,
                      "apply terraform/modules/azure-aks, or name the account skiff's root is in")]
    blob = arm.get(f"{account_id}/blobServices/default", STORAGE_API)
    checks = [Check("storage: account", True, f"{account} ({acct.get('kind', '?')}, {acct.get('location', '?')})")]
    checks += _storage_checks(acct.get("properties", {}), blob.get("properties", {}))
    if not identities:
        checks.append(Check("identities", True, "not checked: give the workload identities (Terraform output "
                            "workload_identity_ids) to check their role assignments"))
        return checks
    for workload, identity in sorted(identities.items()):
        try:
            checks.append(_identity_check(arm, subscription_id, workload, identity, account_id, container))
        except SkiffError as e:
            checks.append(Check(f"identity: {workload}", False, e.message, "check the identity's resource ID"))
    return checks
