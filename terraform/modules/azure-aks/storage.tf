# The skiff root: an ADLS Gen2 file system (lake/, artifacts/, models/, features/, rollouts/) in a
# storage account that takes Entra ID only (no shared keys, no SAS), TLS 1.2+, no public blob access,
# a firewall that admits the node subnet and listed addresses, versioning and soft delete; a
# container registry without an admin user; a key vault for skiff's secrets.

resource "azurerm_storage_account" "this" {
  #checkov:skip=CKV2_AZURE_1:Data is encrypted with Microsoft-managed keys and infrastructure (double) encryption; a customer-managed key is an opt-in per installation.
  #checkov:skip=CKV_AZURE_33:The account holds no queues; queue logging has nothing to log.
  #checkov:skip=CKV_AZURE_59:The firewall denies by default and admits only the node subnet (service endpoint) and allowed_ip_ranges; disabling public access altogether needs private endpoints and private DNS, an opt-in per installation.
  #checkov:skip=CKV2_AZURE_33:Private endpoints need private DNS zones owned by the platform network; the firewall closes the account meanwhile.
  name                     = local.storage_account_name
  resource_group_name      = azurerm_resource_group.this.name
  location                 = azurerm_resource_group.this.location
  account_kind             = "StorageV2"
  account_tier             = "Standard"
  account_replication_type = var.storage_replication_type

  is_hns_enabled                    = true
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  allow_nested_items_to_be_public   = false
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  infrastructure_encryption_enabled = true
  cross_tenant_replication_enabled  = false
  local_user_enabled                = false
  sftp_enabled                      = false
  public_network_access_enabled     = true

  network_rules {
    default_action             = "Deny"
    bypass                     = ["AzureServices", "Logging", "Metrics"]
    ip_rules                   = var.allowed_ip_ranges
    virtual_network_subnet_ids = [azurerm_subnet.nodes.id]
  }

  blob_properties {
    versioning_enabled = var.blob_versioning_enabled

    delete_retention_policy {
      days = var.soft_delete_retention_days
    }

    container_delete_retention_policy {
      days = var.soft_delete_retention_days
    }
  }

  tags = local.tags
}

# Created through Azure Resource Manager (storage_account_id), so neither shared keys nor a hole in the
# firewall are needed to create it.
resource "azurerm_storage_container" "root" {
  #checkov:skip=CKV2_AZURE_21:Blob reads, writes and deletes are logged by the diagnostic setting on the blob service (azurerm_monitor_diagnostic_setting.blob); the check wants the legacy storage insights resource, which needs an account key, and keys are off.
  name                  = var.container_name
  storage_account_id    = azurerm_storage_account.this.id
  container_access_type = "private"
}

resource "azurerm_monitor_diagnostic_setting" "blob" {
  name                       = "${var.name}-blob-access"
  target_resource_id         = "${azurerm_storage_account.this.id}/blobServices/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id

  dynamic "enabled_log" {
    for_each = toset(["StorageRead", "StorageWrite", "StorageDelete"])

    content {
      category = enabled_log.value
    }
  }
}

resource "azurerm_storage_management_policy" "this" {
  storage_account_id = azurerm_storage_account.this.id

  rule {
    name    = "expire-previous-versions"
    enabled = true

    filters {
      blob_types = ["blockBlob"]
    }

    actions {
      version {
        delete_after_days_since_creation = var.noncurrent_version_expiration_days
      }
    }
  }

  rule {
    name    = "artifacts-to-cool"
    enabled = true

    filters {
      blob_types   = ["blockBlob"]
      prefix_match = ["${var.container_name}/artifacts/"]
    }

    actions {
      base_blob {
        tier_to_cool_after_days_since_modification_greater_than = var.artifacts_cool_tier_days
      }
    }
  }
}

# --- container registry -----------------------------------------------------------------------------

resource "azurerm_container_registry" "this" {
  #checkov:skip=CKV_AZURE_139:Pulls and pushes need Entra ID (admin user and anonymous pull are off); AKS nodes pull over the public endpoint unless the platform network adds a private endpoint.
  #checkov:skip=CKV_AZURE_166:Quarantine holds every pushed image until an external scanner releases it; without that scanner no image could be pulled. Use Defender for Containers' registry scanning.
  #checkov:skip=CKV_AZURE_164:Docker Content Trust is being retired by ACR; sign images with Notation instead.
  #checkov:skip=CKV_AZURE_165:Geo-replication is a per-installation choice (a second region, billed per replica).
  #checkov:skip=CKV_AZURE_237:Dedicated data endpoints matter for firewalled clients; the registry is reached over its public endpoint.
  name                = local.acr_name
  resource_group_name = azurerm_resource_group.this.name
  location            = azurerm_resource_group.this.location
  sku                 = "Premium"

  admin_enabled                 = false
  anonymous_pull_enabled        = false
  public_network_access_enabled = true
  zone_redundancy_enabled       = true
  retention_policy_in_days      = var.acr_untagged_retention_days

  tags = local.tags
}

resource "azurerm_role_assignment" "kubelet_acr_pull" {
  scope                = azurerm_container_registry.this.id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_kubernetes_cluster.this.kubelet_identity[0].object_id
}

# --- key vault --------------------------------------------------------------------------------------

resource "azurerm_key_vault" "this" {
  #checkov:skip=CKV2_AZURE_32:Private endpoints need private DNS zones owned by the platform network; the vault firewall denies by default meanwhile.
  name                = local.key_vault_name
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tenant_id           = data.azurerm_client_config.current.tenant_id
  sku_name            = "standard"

  enable_rbac_authorization     = true
  purge_protection_enabled      = true
  soft_delete_retention_days    = 90
  public_network_access_enabled = true

  network_acls {
    default_action             = "Deny"
    bypass                     = "AzureServices"
    ip_rules                   = var.allowed_ip_ranges
    virtual_network_subnet_ids = [azurerm_subnet.nodes.id]
  }

  tags = local.tags
}

resource "azurerm_role_assignment" "deployer_key_vault_secrets" {
  scope                = azurerm_key_vault.this.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}
