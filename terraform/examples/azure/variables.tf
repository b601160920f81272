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
  description = "Second phase of the apply: install the platform layer (modules/platform: cert-manager, Knative Serving + Kourier, KServe, Kubeflow Pipelines, kube-prometheus-stack, Argo CD, Redis, the NVIDIA device plugin and the skiff charts) with the helm and kubernetes providers, which need the cluster to exist and its API reachable from where Terraform runs."
  type        = bool
  default     = false
}

variable "ingress_domain" {
  description = "DNS domain of the InferenceServices (Knative config-domain); point *.<domain> at the Kourier load balancer. The environment files' ingress_domain must match."
  type        = string
  default     = "models.example.com"
}

variable "redis_mode" {
  description = "Feast's online store: managed (the cloud's Redis, created in the first phase), in-cluster (a development pod) or none."
  type        = string
  default     = "managed"

  validation {
    condition     = contains(["managed", "in-cluster", "none"], var.redis_mode)
    error_message = "The redis_mode must be managed, in-cluster or none."
  }
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
