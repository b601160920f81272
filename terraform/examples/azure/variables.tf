variable "subscription_id" {
  description = "Subscription to create the installation in. Null takes ARM_SUBSCRIPTION_ID or the Azure CLI's current subscription."
  type        = string
  default     = null
}

variable "location" {
  description = "Azure region of the installation (programmatic name, e.g. westeurope)."
  type        = string
  default     = "westeurope"

  validation {
    condition = contains([
      "eastus", "eastus2", "centralus", "southcentralus", "northcentralus", "westus2", "westus3",
      "canadacentral", "brazilsouth",
      "northeurope", "westeurope", "uksouth", "francecentral", "germanywestcentral", "swedencentral",
      "switzerlandnorth", "norwayeast", "italynorth", "polandcentral",
      "australiaeast", "japaneast", "koreacentral", "southeastasia", "centralindia", "uaenorth",
    ], var.location)
    error_message = "The location must be a supported Azure region name in lower case without spaces, e.g. westeurope, eastus2, swedencentral."
  }
}

variable "name" {
  description = "Name of the installation: the cluster and the prefix of every resource."
  type        = string
  default     = "skiff"
}

variable "kubernetes_version" {
  description = "Kubernetes version of the cluster (1.31 to 1.34)."
  type        = string
  default     = "1.33"
}

variable "api_server_authorized_ip_ranges" {
  description = "CIDR blocks allowed to reach the Kubernetes API. Empty makes a private cluster; the platform layer then has to be applied from the VNet or a peered network."
  type        = list(string)
  default     = []
}

variable "allowed_ip_ranges" {
  description = "Public addresses allowed through the storage account and key vault firewalls besides the nodes (include the machine running Terraform)."
  type        = list(string)
  default     = []
}

variable "admin_group_object_ids" {
  description = "Object IDs of the Entra ID groups that administer the cluster."
  type        = list(string)
  default     = []
}

variable "gpu_vm_size" {
  description = "NC-series VM size of the GPU pool."
  type        = string
  default     = "Standard_NC4as_T4_v3"
}

variable "gpu_max_count" {
  description = "Maximum number of GPU nodes; the pool scales from zero."
  type        = number
  default     = 2
}

variable "install_platform" {
  description = "Install cert-manager, KServe, the NVIDIA device plugin and the skiff charts on the new cluster with the helm provider. Needs the Kubernetes API reachable from where Terraform runs, and kubelogin on the PATH."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
