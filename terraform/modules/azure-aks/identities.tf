# Workload identity. Each skiff workload gets a user-assigned identity federated with exactly one
# Kubernetes service account (<namespace>/<service account>) of this cluster's OIDC issuer, and one
# role assignment on the skiff file system whose ABAC condition limits it to its own folders: pipeline
# runs read and write the lake, artifacts, features and the registry; serving reads models and writes the inference log; the
# rollout controller reads models and writes rollout state.

locals {
  container_scope = "${azurerm_storage_account.this.id}/blobServices/default/containers/${azurerm_storage_container.root.name}"
}

resource "azurerm_user_assigned_identity" "workload" {
  for_each = local.workloads

  name                = "id-${var.name}-${each.key}"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name

  tags = local.tags
}

resource "azurerm_federated_identity_credential" "workload" {
  for_each = local.federated_subjects

  name                = "${var.name}-${each.key}"
  resource_group_name = azurerm_resource_group.this.name
  parent_id           = azurerm_user_assigned_identity.workload[each.value.workload].id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = azurerm_kubernetes_cluster.this.oidc_issuer_url
  subject             = each.value.subject
}

resource "azurerm_role_assignment" "workload_storage" {
  for_each = var.workload_storage_access

  scope                = local.container_scope
  role_definition_name = length(each.value.write_prefixes) > 0 ? "Storage Blob Data Contributor" : "Storage Blob Data Reader"
  principal_id         = azurerm_user_assigned_identity.workload[each.key].principal_id
  principal_type       = "ServicePrincipal"
  description          = "skiff ${each.key}: ${join(", ", each.value.read_prefixes)} (read), ${length(each.value.write_prefixes) > 0 ? join(", ", each.value.write_prefixes) : "nothing"} (write)"
  condition_version    = "2.0"
  condition            = local.storage_conditions[each.key]
}

resource "azurerm_role_assignment" "workload_key_vault_secrets" {
  for_each = toset(var.key_vault_secret_readers)

  scope                = azurerm_key_vault.this.id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_user_assigned_identity.workload[each.value].principal_id
  principal_type       = "ServicePrincipal"
}
