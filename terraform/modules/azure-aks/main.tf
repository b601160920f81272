# skiff on Azure: a resource group and VNet, an AKS cluster with a system pool, a CPU user pool and a
# GPU user pool, the ADLS Gen2 storage account that is the skiff root (lake/, artifacts/, models/), a
# container registry, a key vault, and user-assigned identities federated with the skiff service
# accounts (workload identity). Resources live in aks.tf, storage.tf and identities.tf; this file
# holds what they share and the network.

data "azurerm_client_config" "current" {}

locals {
  tags = merge(var.tags, {
    "app.kubernetes.io/part-of" = "skiff"
    "skiff.io/installation"     = var.name
  })

  # Short, stable suffix for names that must be globally unique: the same subscription and name give
  # the same names on every run.
  suffix       = substr(md5("${data.azurerm_client_config.current.subscription_id}/${var.name}"), 0, 8)
  compact_name = substr(replace(var.name, "-", ""), 0, 14)

  resource_group_name  = var.resource_group_name != null ? var.resource_group_name : "rg-${var.name}"
  storage_account_name = var.storage_account_name != null ? var.storage_account_name : "${local.compact_name}st${local.suffix}"
  acr_name             = var.acr_name != null ? var.acr_name : "${local.compact_name}cr${local.suffix}"
  key_vault_name       = var.key_vault_name != null ? var.key_vault_name : "${local.compact_name}kv${local.suffix}"

  private_cluster = length(var.api_server_authorized_ip_ranges) == 0

  node_subnet_cidr = cidrsubnet(var.vnet_cidr, 4, 0)
}

resource "azurerm_resource_group" "this" {
  name     = local.resource_group_name
  location = var.location

  tags = local.tags
}

# --- network ----------------------------------------------------------------------------------------

resource "azurerm_virtual_network" "this" {
  name                = "vnet-${var.name}"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  address_space       = [var.vnet_cidr]

  tags = local.tags
}

# Nodes only: pods take overlay addresses (Azure CNI overlay). The service endpoints let the storage
# account and key vault firewalls admit the nodes without opening them to the internet.
resource "azurerm_subnet" "nodes" {
  name                 = "snet-${var.name}-nodes"
  resource_group_name  = azurerm_resource_group.this.name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = [local.node_subnet_cidr]
  service_endpoints    = ["Microsoft.Storage", "Microsoft.KeyVault"]
}

resource "azurerm_network_security_group" "nodes" {
  name                = "nsg-${var.name}-nodes"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name

  tags = local.tags
}

resource "azurerm_subnet_network_security_group_association" "nodes" {
  subnet_id                 = azurerm_subnet.nodes.id
  network_security_group_id = azurerm_network_security_group.nodes.id
}

# --- monitoring -------------------------------------------------------------------------------------

resource "azurerm_log_analytics_workspace" "this" {
  name                = "log-${var.name}"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  sku                 = "PerGB2018"
  retention_in_days   = var.log_retention_days

  tags = local.tags
}
