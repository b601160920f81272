# skiff on Azure: an AKS cluster with a GPU node pool and everything skiff stores and pulls, and,
# when install_platform is true (second phase), the platform skiff runs on: cert-manager, Knative
# Serving with Kourier, KServe, Kubeflow Pipelines, Prometheus, Argo CD, Redis, the NVIDIA device plugin
# and the skiff charts.

locals {
  # Application ID of the Azure Kubernetes Service AAD server: a Microsoft-published constant, the same
  # in every tenant, that kubelogin asks Entra ID for a token to.
  aks_aad_server_app_id = "6dae42f8-4368-4678-94ff-3960e28e3630"
}

provider "azurerm" {
  # Null takes the subscription from ARM_SUBSCRIPTION_ID or the Azure CLI's current one.
  subscription_id = var.subscription_id
  # Shared keys are off on the storage account: talk to its data plane with Entra ID.
  storage_use_azuread = true

  features {
    key_vault {
      purge_soft_delete_on_destroy = false
    }
    resource_group {
      prevent_deletion_if_contains_resources = true
    }
  }
}

# The helm provider reaches the new cluster with an Entra ID token from kubelogin (local accounts are
# off); the helm and kubernetes providers are used only when install_platform is true (the second phase).
provider "helm" {
  kubernetes {
    host                   = module.aks.cluster_endpoint
    cluster_ca_certificate = base64decode(module.aks.cluster_ca_certificate)

    exec {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "kubelogin"
      args        = ["get-token", "--login", "azurecli", "--server-id", local.aks_aad_server_app_id]
    }
  }
}

provider "kubernetes" {
  host                   = module.aks.cluster_endpoint
  cluster_ca_certificate = base64decode(module.aks.cluster_ca_certificate)

  exec {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "kubelogin"
    args        = ["get-token", "--login", "azurecli", "--server-id", local.aks_aad_server_app_id]
  }
}

module "aks" {
  source = "../../modules/azure-aks"

  name                            = var.name
  location                        = var.location
  kubernetes_version              = var.kubernetes_version
  api_server_authorized_ip_ranges = var.api_server_authorized_ip_ranges
  allowed_ip_ranges               = var.allowed_ip_ranges
  admin_group_object_ids          = var.admin_group_object_ids
  gpu_vm_size                     = var.gpu_vm_size
  gpu_max_count                   = var.gpu_max_count
  tags                            = var.tags
  create_redis                    = var.redis_mode == "managed"
}

module "platform" {
  source = "../../modules/platform"
  count  = var.install_platform ? 1 : 0

  cloud             = "azure"
  cluster_name      = module.aks.cluster_name
  service_accounts  = module.aks.service_accounts
  skiff_root        = module.aks.skiff_root
  image_registry    = module.aks.image_registry
  gpu_node_selector = module.aks.gpu_node_selector
  gpu_tolerations   = module.aks.gpu_tolerations
  kfp_runner        = module.aks.kfp_runner
  ingress_domain    = var.ingress_domain
  redis_mode        = var.redis_mode
  redis             = module.aks.redis
}
