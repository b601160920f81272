# ---------------------------------------------------------------------------------------------------
# Naming, location and tags
# ---------------------------------------------------------------------------------------------------

variable "name" {
  description = "Name of the skiff installation: the AKS cluster, and the prefix of every other resource (resource group, network, storage, registry, key vault, identities)."
  type        = string
  default     = "skiff"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "The name must be 3-32 characters of lower-case letters, digits and '-', starting with a letter and not ending with '-'."
  }
}

variable "location" {
  description = "Azure region of every resource (its programmatic name, e.g. westeurope). Pick one that offers the chosen GPU VM size."
  type        = string

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

variable "resource_group_name" {
  description = "Name of the resource group created for the installation. Null derives 'rg-<name>'."
  type        = string
  default     = null

  validation {
    condition     = var.resource_group_name == null || can(regex("^[-\\w._()]{1,89}[-\\w_()]$", var.resource_group_name))
    error_message = "The resource_group_name must be 1-90 characters of letters, digits, '_', '-', '.', '(' and ')', not ending with '.'."
  }
}

variable "tags" {
  description = "Tags added to every resource that takes tags (cost centre, owner, environment)."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------------

variable "vnet_cidr" {
  description = "Address space of the virtual network. The node subnet takes its first /20 (with a /16); pods get overlay addresses from pod_cidr, not from the VNet."
  type        = string
  default     = "10.20.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vnet_cidr)) && tonumber(split("/", var.vnet_cidr)[1]) >= 8 && tonumber(split("/", var.vnet_cidr)[1]) <= 20
    error_message = "The vnet_cidr must be an IPv4 CIDR block from /8 to /20."
  }
}

variable "pod_cidr" {
  description = "Overlay address range of the pods (Azure CNI overlay). Must not overlap the VNet, the service range or any network peered with it."
  type        = string
  default     = "192.168.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.pod_cidr))
    error_message = "The pod_cidr must be an IPv4 CIDR block."
  }
}

variable "service_cidr" {
  description = "Address range of Kubernetes services; the cluster DNS service takes its tenth address."
  type        = string
  default     = "172.16.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.service_cidr))
    error_message = "The service_cidr must be an IPv4 CIDR block."
  }
}

variable "allowed_ip_ranges" {
  description = "Public IP addresses or ranges (operators, CI runners, the machine running Terraform) allowed through the storage account and key vault firewalls, in addition to the node subnet. Storage accepts single addresses and ranges of /30 and wider (no /31 or /32)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for r in var.allowed_ip_ranges : can(cidrnetmask(r)) || can(regex("^([0-9]{1,3}\\.){3}[0-9]{1,3}$", r))])
    error_message = "Each entry of allowed_ip_ranges must be an IPv4 address or CIDR block."
  }
}

# ---------------------------------------------------------------------------------------------------
# AKS control plane
# ---------------------------------------------------------------------------------------------------

variable "kubernetes_version" {
  description = "Kubernetes version of the AKS control plane and node pools (pinned: AKS applies patch releases automatically, minor upgrades are a deliberate change of this value)."
  type        = string
  default     = "1.33"

  validation {
    condition     = contains(["1.31", "1.32", "1.33", "1.34"], var.kubernetes_version)
    error_message = "The kubernetes_version must be one of the versions skiff is tested against: 1.31, 1.32, 1.33, 1.34."
  }
}

variable "sku_tier" {
  description = "AKS pricing tier: Standard (financially backed API server SLA, the default), Premium (long-term support) or Free (development only)."
  type        = string
  default     = "Standard"

  validation {
    condition     = contains(["Free", "Standard", "Premium"], var.sku_tier)
    error_message = "The sku_tier must be Free, Standard or Premium."
  }
}

variable "api_server_authorized_ip_ranges" {
  description = "CIDR blocks allowed to reach a public Kubernetes API server. Empty (the default) makes a private cluster: the API is reachable only from the VNet or networks peered with it. List the operators' and CI's egress ranges to apply the platform layer from outside. 0.0.0.0/0 is refused."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.api_server_authorized_ip_ranges : can(cidrnetmask(c)) && c != "0.0.0.0/0"])
    error_message = "Each entry of api_server_authorized_ip_ranges must be an IPv4 CIDR block, and 0.0.0.0/0 is not allowed."
  }
}

variable "admin_group_object_ids" {
  description = "Object IDs of the Microsoft Entra groups whose members administer the cluster (local accounts are disabled: Entra ID is the only way in)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for g in var.admin_group_object_ids : can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", g))])
    error_message = "Each entry of admin_group_object_ids must be an object ID (a GUID)."
  }
}

variable "grant_deployer_cluster_admin" {
  description = "Give the identity running Terraform the 'Azure Kubernetes Service RBAC Cluster Admin' role on the cluster (needed when the same run installs the platform layer)."
  type        = bool
  default     = true
}

variable "azure_policy_enabled" {
  description = "Turn on the Azure Policy add-on (Gatekeeper) so the subscription's Kubernetes policies are enforced in the cluster."
  type        = bool
  default     = true
}

variable "defender_enabled" {
  description = "Turn on Microsoft Defender for Containers on the cluster (runtime threat detection; billed per vCore)."
  type        = bool
  default     = true
}

variable "host_encryption_enabled" {
  description = "Encrypt node temp disks and caches at the VM host. Needs the EncryptionAtHost feature registered on the subscription (az feature register --namespace Microsoft.Compute --name EncryptionAtHost)."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Days the Log Analytics workspace keeps container insights, control-plane logs and Defender data."
  type        = number
  default     = 90

  validation {
    condition     = var.log_retention_days >= 30 && var.log_retention_days <= 730
    error_message = "The log_retention_days must be from 30 to 730."
  }
}

# ---------------------------------------------------------------------------------------------------
# Node pools
# ---------------------------------------------------------------------------------------------------

variable "zones" {
  description = "Availability zones of the system and CPU pools."
  type        = list(string)
  default     = ["1", "2", "3"]

  validation {
    condition     = alltrue([for z in var.zones : contains(["1", "2", "3"], z)])
    error_message = "The zones may contain only \"1\", \"2\" and \"3\"."
  }
}

variable "system_vm_size" {
  description = "VM size of the system pool (critical add-ons only: CoreDNS, metrics, CSI drivers)."
  type        = string
  default     = "Standard_D4ds_v5"

  validation {
    condition = contains([
      "Standard_D2ds_v5", "Standard_D4ds_v5", "Standard_D8ds_v5",
      "Standard_D2s_v5", "Standard_D4s_v5", "Standard_D8s_v5",
      "Standard_D4as_v5", "Standard_D8as_v5",
    ], var.system_vm_size)
    error_message = "The system_vm_size must be one of Standard_D{2,4,8}ds_v5, Standard_D{2,4,8}s_v5, Standard_D{4,8}as_v5."
  }
}

variable "system_min_count" {
  description = "Minimum number of system nodes (3 spreads CoreDNS over three zones)."
  type        = number
  default     = 3

  validation {
    condition     = var.system_min_count >= 1
    error_message = "The system_min_count must be at least 1."
  }
}

variable "system_max_count" {
  description = "Maximum number of system nodes."
  type        = number
  default     = 5

  validation {
    condition     = var.system_max_count >= 1
    error_message = "The system_max_count must be at least 1."
  }
}

variable "cpu_vm_size" {
  description = "VM size of the CPU user pool (KFP, Feast, CPU training and serving)."
  type        = string
  default     = "Standard_D8ds_v5"

  validation {
    condition = contains([
      "Standard_D4ds_v5", "Standard_D8ds_v5", "Standard_D16ds_v5", "Standard_D32ds_v5",
      "Standard_D4s_v5", "Standard_D8s_v5", "Standard_D16s_v5", "Standard_D32s_v5",
      "Standard_E4ds_v5", "Standard_E8ds_v5", "Standard_E16ds_v5",
      "Standard_F8s_v2", "Standard_F16s_v2",
    ], var.cpu_vm_size)
    error_message = "The cpu_vm_size must be one of Standard_D{4,8,16,32}ds_v5, Standard_D{4,8,16,32}s_v5, Standard_E{4,8,16}ds_v5, Standard_F{8,16}s_v2."
  }
}

variable "cpu_min_count" {
  description = "Minimum number of CPU user nodes."
  type        = number
  default     = 1

  validation {
    condition     = var.cpu_min_count >= 0
    error_message = "The cpu_min_count must be 0 or more."
  }
}

variable "cpu_max_count" {
  description = "Maximum number of CPU user nodes the autoscaler may reach."
  type        = number
  default     = 6

  validation {
    condition     = var.cpu_max_count >= 1
    error_message = "The cpu_max_count must be at least 1."
  }
}

variable "gpu_vm_size" {
  description = "VM size of the GPU user pool (NC-series, NVIDIA). Check the region's quota for the family before applying."
  type        = string
  default     = "Standard_NC4as_T4_v3"

  validation {
    condition = contains([
      "Standard_NC4as_T4_v3", "Standard_NC8as_T4_v3", "Standard_NC16as_T4_v3", "Standard_NC64as_T4_v3",
      "Standard_NC6s_v3", "Standard_NC12s_v3", "Standard_NC24s_v3",
      "Standard_NC24ads_A100_v4", "Standard_NC48ads_A100_v4", "Standard_NC96ads_A100_v4",
      "Standard_NC40ads_H100_v5", "Standard_NC80adis_H100_v5",
    ], var.gpu_vm_size)
    error_message = "The gpu_vm_size must be an NC-series size: Standard_NC{4,8,16,64}as_T4_v3, Standard_NC{6,12,24}s_v3, Standard_NC{24,48,96}ads_A100_v4, Standard_NC40ads_H100_v5 or Standard_NC80adis_H100_v5."
  }
}

variable "gpu_zones" {
  description = "Availability zones of the GPU pool. Empty (the default) lets Azure place GPU nodes wherever the size has capacity; NC sizes are not offered in every zone."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for z in var.gpu_zones : contains(["1", "2", "3"], z)])
    error_message = "The gpu_zones may contain only \"1\", \"2\" and \"3\"."
  }
}

variable "gpu_min_count" {
  description = "Minimum number of GPU nodes. 0 (the default) scales the pool to zero when no GPU pod is pending."
  type        = number
  default     = 0

  validation {
    condition     = var.gpu_min_count >= 0
    error_message = "The gpu_min_count must be 0 or more."
  }
}

variable "gpu_max_count" {
  description = "Maximum number of GPU nodes the autoscaler may reach."
  type        = number
  default     = 2

  validation {
    condition     = var.gpu_max_count >= 1
    error_message = "The gpu_max_count must be at least 1."
  }
}

variable "gpu_node_labels" {
  description = "Labels on GPU nodes. KFP GPU tasks and KServe GPU predictors select these nodes with a node selector built from this map (also exported as the gpu_node_selector output)."
  type        = map(string)
  default = {
    "skiff.io/accelerator" = "nvidia-gpu"
  }

  validation {
    condition     = length(var.gpu_node_labels) > 0
    error_message = "The gpu_node_labels must hold at least one label, or GPU workloads cannot select the GPU nodes."
  }
}

# ---------------------------------------------------------------------------------------------------
# Storage: lake, artifacts, model registry (ADLS Gen2)
# ---------------------------------------------------------------------------------------------------

variable "storage_account_name" {
  description = "Name of the storage account (globally unique, 3-24 lower-case letters and digits). Null derives one from the name and a hash of the subscription."
  type        = string
  default     = null

  validation {
    condition     = var.storage_account_name == null || can(regex("^[a-z0-9]{3,24}$", var.storage_account_name))
    error_message = "The storage_account_name must be 3-24 lower-case letters and digits."
  }
}

variable "storage_replication_type" {
  description = "Replication of the storage account: GZRS (three zones plus the paired region, the default: the registry is the record of every model), RAGZRS, GRS, RAGRS, or ZRS/LRS where one region is enough."
  type        = string
  default     = "GZRS"

  validation {
    condition     = contains(["LRS", "ZRS", "GRS", "RAGRS", "GZRS", "RAGZRS"], var.storage_replication_type)
    error_message = "The storage_replication_type must be LRS, ZRS, GRS, RAGRS, GZRS or RAGZRS."
  }
}

variable "container_name" {
  description = "Name of the ADLS Gen2 file system (blob container) that is the skiff root."
  type        = string
  default     = "skiff"

  validation {
    condition     = can(regex("^[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62}$", var.container_name))
    error_message = "The container_name must be 3-63 lower-case letters, digits and single '-', starting and ending with a letter or digit."
  }
}

variable "blob_versioning_enabled" {
  description = "Keep previous versions of overwritten and deleted blobs. On accounts with a hierarchical namespace, check that blob versioning is available in the region before turning it off or on."
  type        = bool
  default     = true
}

variable "soft_delete_retention_days" {
  description = "Days deleted blobs and deleted containers can be restored."
  type        = number
  default     = 30

  validation {
    condition     = var.soft_delete_retention_days >= 1 && var.soft_delete_retention_days <= 365
    error_message = "The soft_delete_retention_days must be from 1 to 365."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which previous blob versions are deleted."
  type        = number
  default     = 90

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1
    error_message = "The noncurrent_version_expiration_days must be at least 1."
  }
}

variable "artifacts_cool_tier_days" {
  description = "Days after their last change at which blobs under artifacts/ move to the Cool tier."
  type        = number
  default     = 30

  validation {
    condition     = var.artifacts_cool_tier_days >= 1
    error_message = "The artifacts_cool_tier_days must be at least 1."
  }
}

variable "workload_storage_access" {
  description = "Folders under the skiff root each workload identity may read and write (enforced with Azure ABAC conditions on its role assignment). Keys are the five workloads of skiff.layout.ACCESS (tests/cluster holds them equal): pipeline, serving, rollout, api, stream. Pipeline runs write the lake, artifacts, models and the Feast registry (feast/); serving (the predictors and the Feast feature server) reads models and feast/ and writes the inference log (inference/); the drift monitor runs as a pipeline and reads inference/; the rollout controller reads models and keeps its state under rollouts/; the REST API reads what it lists and writes models/ (champions); a stream consumer writes the lake only."
  type = map(object({
    read_prefixes  = list(string)
    write_prefixes = list(string)
  }))
  default = {
    pipeline = {
      read_prefixes  = ["lake", "artifacts", "models", "feast", "inference"]
      write_prefixes = ["lake", "artifacts", "models", "feast"]
    }
    serving = {
      read_prefixes  = ["models", "feast", "inference"]
      write_prefixes = ["inference"]
    }
    rollout = {
      read_prefixes  = ["models", "rollouts"]
      write_prefixes = ["rollouts"]
    }
    api = {
      read_prefixes  = ["lake", "artifacts", "models", "rollouts"]
      write_prefixes = ["models"]
    }
    stream = {
      read_prefixes  = ["lake"]
      write_prefixes = ["lake"]
    }
  }

  validation {
    condition     = length(var.workload_storage_access) == 5 && alltrue([for k in ["pipeline", "serving", "rollout", "api", "stream"] : contains(keys(var.workload_storage_access), k)])
    error_message = "The workload_storage_access must have exactly the keys pipeline, serving, rollout, api and stream."
  }

  validation {
    condition = alltrue(flatten([for w in values(var.workload_storage_access) : [
      for p in concat(w.read_prefixes, w.write_prefixes) : can(regex("^[a-z0-9][a-z0-9_-]*$", p))
    ]]))
    error_message = "Each prefix in workload_storage_access must be one folder name (lower-case letters, digits, '_' and '-'), without slashes."
  }

  validation {
    condition = alltrue(flatten([for w in values(var.workload_storage_access) : [
      for p in w.write_prefixes : contains(w.read_prefixes, p)
    ]]))
    error_message = "Each write prefix in workload_storage_access must also be a read prefix of the same workload."
  }

  validation {
    condition     = alltrue([for w in values(var.workload_storage_access) : length(w.read_prefixes) > 0])
    error_message = "Each workload in workload_storage_access needs at least one read prefix."
  }
}

# ---------------------------------------------------------------------------------------------------
# Container registry and key vault
# ---------------------------------------------------------------------------------------------------

variable "acr_name" {
  description = "Name of the container registry (globally unique, 5-50 letters and digits). Null derives one from the name and a hash of the subscription."
  type        = string
  default     = null

  validation {
    condition     = var.acr_name == null || can(regex("^[a-zA-Z0-9]{5,50}$", var.acr_name))
    error_message = "The acr_name must be 5-50 letters and digits."
  }
}

variable "acr_untagged_retention_days" {
  description = "Days untagged manifests are kept in the registry before they are purged."
  type        = number
  default     = 7

  validation {
    condition     = var.acr_untagged_retention_days >= 0 && var.acr_untagged_retention_days <= 365
    error_message = "The acr_untagged_retention_days must be from 0 to 365."
  }
}

variable "key_vault_name" {
  description = "Name of the key vault for skiff's secrets (database URL, Redis password), globally unique. Null derives one from the name and a hash of the subscription."
  type        = string
  default     = null

  validation {
    condition     = var.key_vault_name == null || can(regex("^[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$", var.key_vault_name))
    error_message = "The key_vault_name must be 3-24 letters, digits and '-', starting with a letter."
  }
}

variable "key_vault_secret_readers" {
  description = "Workloads whose identity may read the key vault's secrets (Key Vault Secrets User), e.g. through the Secrets Store CSI driver."
  type        = list(string)
  default     = ["pipeline", "serving"]

  validation {
    condition     = alltrue([for w in var.key_vault_secret_readers : contains(["pipeline", "serving", "rollout", "api", "stream"], w)])
    error_message = "The key_vault_secret_readers may contain only pipeline, serving, rollout, api and stream."
  }
}

# ---------------------------------------------------------------------------------------------------
# Workload identities (federated credentials)
# ---------------------------------------------------------------------------------------------------

variable "namespace" {
  description = "Kubernetes namespace of the skiff workloads; must match the namespace the skiff Helm charts install into."
  type        = string
  default     = "skiff"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "The namespace must be a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters)."
  }
}

variable "pipeline_service_account" {
  description = "Service account of pipeline runs (KFP steps); its identity reads and writes the lake, artifacts and registry."
  type        = string
  default     = "skiff-pipeline"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.pipeline_service_account))
    error_message = "The pipeline_service_account must be a DNS-1123 subdomain."
  }
}

variable "serving_service_account" {
  description = "Service account of KServe predictors and transformers; its identity reads models only."
  type        = string
  default     = "skiff-serving"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.serving_service_account))
    error_message = "The serving_service_account must be a DNS-1123 subdomain."
  }
}

variable "rollout_service_account" {
  description = "Service account of the canary rollout controller; its identity reads models and writes rollout state."
  type        = string
  default     = "skiff-rollout"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.rollout_service_account))
    error_message = "The rollout_service_account must be a DNS-1123 subdomain."
  }
}

variable "api_service_account" {
  description = "Service account of the REST API (skiff api); its identity reads the lake, artifacts, models and rollout state and writes models (champions)."
  type        = string
  default     = "skiff-api"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.api_service_account))
    error_message = "The api_service_account must be a DNS-1123 subdomain."
  }
}

variable "stream_service_account" {
  description = "Service account of the stream consumers (skiff stream); its identity writes the lake only."
  type        = string
  default     = "skiff-stream"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.stream_service_account))
    error_message = "The stream_service_account must be a DNS-1123 subdomain."
  }
}

variable "kfp_namespace" {
  description = "Namespace of Kubeflow Pipelines (standalone), where it runs pipeline pods; the pipeline identity is federated with its runner account there too."
  type        = string
  default     = "kubeflow"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.kfp_namespace))
    error_message = "The kfp_namespace must be a DNS-1123 label."
  }
}

variable "kfp_runner_service_account" {
  description = "Service account Kubeflow Pipelines (standalone) runs pipeline pods as: pipeline-runner, the API server's default (DEFAULTPIPELINERUNNERSERVICEACCOUNT)."
  type        = string
  default     = "pipeline-runner"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.kfp_runner_service_account))
    error_message = "The kfp_runner_service_account must be a DNS-1123 subdomain."
  }
}

# ---------------------------------------------------------------------------------------------------
# Redis (Feast online store)
# ---------------------------------------------------------------------------------------------------

variable "create_redis" {
  description = "Create an Azure Cache for Redis (private endpoint, TLS only) for Feast's online store; modules/platform writes its connection into a Kubernetes Secret (redis_mode managed). False: use the platform module's in-cluster development Redis or none."
  type        = bool
  default     = true
}

variable "redis_sku_name" {
  description = "Azure Cache for Redis tier: Standard (a replicated pair) or Premium (also persistence and zones)."
  type        = string
  default     = "Standard"

  validation {
    condition     = contains(["Standard", "Premium"], var.redis_sku_name)
    error_message = "The redis_sku_name must be Standard or Premium (Basic has no replica)."
  }
}

variable "redis_capacity" {
  description = "Size of the cache within its tier (C0-C6 for Standard, P1-P5 for Premium)."
  type        = number
  default     = 1

  validation {
    condition     = var.redis_capacity >= 0 && var.redis_capacity <= 6
    error_message = "The redis_capacity must be from 0 to 6."
  }
}

variable "azureml_extension" {
  description = "Install Azure ML's cluster extension (Microsoft.AzureML.Kubernetes, training only) so an Azure ML workspace can run jobs on the GPU pool once `skiff cloud azure attach-compute` attaches the cluster."
  type        = bool
  default     = false
}
