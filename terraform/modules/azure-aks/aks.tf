# The AKS cluster (pinned version, Azure CNI overlay, Entra ID only with local accounts off, OIDC
# issuer and workload identity on, Azure Policy and Defender) with three pools: "system" for critical
# add-ons, "cpu" for the platform and CPU work, and "gpu" (NC-series) for GPU training and serving,
# tainted so only pods that tolerate nvidia.com/gpu land there and scaled from zero.

# The control plane's own identity, created first so it can be given rights on the node subnet
# before the cluster exists.
resource "azurerm_user_assigned_identity" "cluster" {
  name                = "id-${var.name}-aks"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name

  tags = local.tags
}

resource "azurerm_role_assignment" "cluster_network" {
  scope                = azurerm_subnet.nodes.id
  role_definition_name = "Network Contributor"
  principal_id         = azurerm_user_assigned_identity.cluster.principal_id
}

resource "azurerm_kubernetes_cluster" "this" {
  #checkov:skip=CKV_AZURE_117:Node OS disks use platform-managed keys with encryption at host on (host_encryption_enabled); a disk encryption set with a customer key is an opt-in per installation.
  #checkov:skip=CKV_AZURE_226:Ephemeral OS disks need VM sizes whose cache fits the OS disk; the NC sizes and the defaults here use managed OS disks.
  name                = var.name
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  dns_prefix          = var.name
  kubernetes_version  = var.kubernetes_version
  sku_tier            = var.sku_tier

  automatic_upgrade_channel = "patch"
  node_os_upgrade_channel   = "NodeImage"

  private_cluster_enabled = local.private_cluster
  private_dns_zone_id     = local.private_cluster ? "System" : null

  dynamic "api_server_access_profile" {
    for_each = local.private_cluster ? [] : [var.api_server_authorized_ip_ranges]

    content {
      authorized_ip_ranges = api_server_access_profile.value
    }
  }

  local_account_disabled            = true
  role_based_access_control_enabled = true

  azure_active_directory_role_based_access_control {
    tenant_id              = data.azurerm_client_config.current.tenant_id
    admin_group_object_ids = var.admin_group_object_ids
    azure_rbac_enabled     = true
  }

  oidc_issuer_enabled       = true
  workload_identity_enabled = true

  azure_policy_enabled  = var.azure_policy_enabled
  image_cleaner_enabled = true

  image_cleaner_interval_hours = 48

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.cluster.id]
  }

  default_node_pool {
    name                         = "system"
    vm_size                      = var.system_vm_size
    vnet_subnet_id               = azurerm_subnet.nodes.id
    zones                        = var.zones
    orchestrator_version         = var.kubernetes_version
    only_critical_addons_enabled = true
    auto_scaling_enabled         = true
    min_count                    = var.system_min_count
    max_count                    = var.system_max_count
    node_count                   = var.system_min_count
    max_pods                     = 110
    os_sku                       = "AzureLinux"
    host_encryption_enabled      = var.host_encryption_enabled
    temporary_name_for_rotation  = "systemtmp"

    node_labels = {
      "skiff.io/node-pool" = "system"
    }

    upgrade_settings {
      max_surge = "10%"
    }
  }

  network_profile {
    network_plugin      = "azure"
    network_plugin_mode = "overlay"
    network_data_plane  = "cilium"
    network_policy      = "cilium"
    load_balancer_sku   = "standard"
    outbound_type       = "loadBalancer"
    pod_cidr            = var.pod_cidr
    service_cidr        = var.service_cidr
    dns_service_ip      = cidrhost(var.service_cidr, 10)
  }

  oms_agent {
    log_analytics_workspace_id      = azurerm_log_analytics_workspace.this.id
    msi_auth_for_monitoring_enabled = true
  }

  dynamic "microsoft_defender" {
    for_each = var.defender_enabled ? [azurerm_log_analytics_workspace.this.id] : []

    content {
      log_analytics_workspace_id = microsoft_defender.value
    }
  }

  # Secrets Store CSI driver with the Azure provider: pods mount key vault secrets with their
  # workload identity, and rotated secrets reach them without a restart.
  key_vault_secrets_provider {
    secret_rotation_enabled  = true
    secret_rotation_interval = "2m"
  }

  tags = local.tags

  lifecycle {
    ignore_changes = [default_node_pool[0].node_count]
  }

  depends_on = [azurerm_role_assignment.cluster_network]
}

# Control-plane logs (parity with EKS control-plane logging): API server, audit, controller
# manager, scheduler and cluster autoscaler.
resource "azurerm_monitor_diagnostic_setting" "aks" {
  name                       = "${var.name}-control-plane"
  target_resource_id         = azurerm_kubernetes_cluster.this.id
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id

  dynamic "enabled_log" {
    for_each = toset(["kube-apiserver", "kube-audit-admin", "kube-controller-manager", "kube-scheduler", "cluster-autoscaler", "guard"])

    content {
      category = enabled_log.value
    }
  }
}

resource "azurerm_role_assignment" "deployer_cluster_admin" {
  count = var.grant_deployer_cluster_admin ? 1 : 0

  scope                = azurerm_kubernetes_cluster.this.id
  role_definition_name = "Azure Kubernetes Service RBAC Cluster Admin"
  principal_id         = data.azurerm_client_config.current.object_id
}

resource "azurerm_kubernetes_cluster_node_pool" "cpu" {
  name                    = "cpu"
  kubernetes_cluster_id   = azurerm_kubernetes_cluster.this.id
  mode                    = "User"
  vm_size                 = var.cpu_vm_size
  vnet_subnet_id          = azurerm_subnet.nodes.id
  zones                   = var.zones
  orchestrator_version    = var.kubernetes_version
  auto_scaling_enabled    = true
  min_count               = var.cpu_min_count
  max_count               = var.cpu_max_count
  node_count              = var.cpu_min_count
  max_pods                = 110
  os_sku                  = "AzureLinux"
  host_encryption_enabled = var.host_encryption_enabled

  node_labels = {
    "skiff.io/node-pool" = "cpu"
  }

  upgrade_settings {
    max_surge = "10%"
  }

  tags = local.tags

  lifecycle {
    ignore_changes = [node_count]
  }
}

resource "azurerm_kubernetes_cluster_node_pool" "gpu" {
  name                    = "gpu"
  kubernetes_cluster_id   = azurerm_kubernetes_cluster.this.id
  mode                    = "User"
  vm_size                 = var.gpu_vm_size
  vnet_subnet_id          = azurerm_subnet.nodes.id
  zones                   = length(var.gpu_zones) > 0 ? var.gpu_zones : null
  orchestrator_version    = var.kubernetes_version
  auto_scaling_enabled    = true
  min_count               = var.gpu_min_count
  max_count               = var.gpu_max_count
  node_count              = var.gpu_min_count
  max_pods                = 110
  os_sku                  = "Ubuntu"
  host_encryption_enabled = var.host_encryption_enabled

  node_labels = merge(var.gpu_node_labels, {
    "skiff.io/node-pool" = "gpu"
  })

  node_taints = ["nvidia.com/gpu=present:NoSchedule"]

  # One extra GPU node at a time during upgrades: surge capacity on GPU sizes is scarce and costly.
  upgrade_settings {
    max_surge = "1"
  }

  tags = local.tags

  lifecycle {
    ignore_changes = [node_count]
  }
}
