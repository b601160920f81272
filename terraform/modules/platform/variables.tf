variable "cloud" {
  description = "Cloud the cluster runs on: aws (EKS, installs the cluster autoscaler) or azure (AKS, whose autoscaler is built in)."
  type        = string

  validation {
    condition     = contains(["aws", "azure"], var.cloud)
    error_message = "The cloud must be aws or azure."
  }
}

variable "cluster_name" {
  description = "Name of the Kubernetes cluster (the cluster autoscaler discovers its node groups by it)."
  type        = string
}

variable "aws_region" {
  description = "AWS region of the cluster, for the cluster autoscaler. Ignored on Azure."
  type        = string
  default     = null
}

variable "cluster_autoscaler_role_arn" {
  description = "IAM role ARN of the cluster autoscaler (the aws-eks module's cluster_autoscaler_role_arn output). Null skips the cluster autoscaler on AWS."
  type        = string
  default     = null
}

variable "namespace" {
  description = "Namespace the skiff charts install into; must be the namespace the workload identities are bound to."
  type        = string
  default     = "skiff"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "The namespace must be a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters)."
  }
}

variable "service_accounts" {
  description = "The skiff service accounts by workload (pipeline, serving, rollout): namespace, name, annotations binding them to the cloud identity, and labels their pods need. Pass the service_accounts output of the aws-eks or azure-aks module."
  type = map(object({
    namespace   = string
    name        = string
    annotations = map(string)
    pod_labels  = map(string)
  }))

  validation {
    condition     = length(var.service_accounts) == 3 && alltrue([for k in ["pipeline", "serving", "rollout"] : contains(keys(var.service_accounts), k)])
    error_message = "The service_accounts must have exactly the keys pipeline, serving and rollout."
  }
}

variable "skiff_root" {
  description = "skiff root URI on the cloud's object store (s3://... or abfs://...): the skiff_root output of the cluster module."
  type        = string

  validation {
    condition     = can(regex("^(s3|abfs|abfss)://", var.skiff_root))
    error_message = "The skiff_root must be an s3://, abfs:// or abfss:// URI."
  }
}

variable "image_registry" {
  description = "Registry prefix of the skiff images (the image_registry output of the cluster module)."
  type        = string
}

variable "gpu_node_selector" {
  description = "Node selector of the GPU pool (the gpu_node_selector output of the cluster module)."
  type        = map(string)
}

variable "gpu_tolerations" {
  description = "Tolerations for the GPU pool's taint (the gpu_tolerations output of the cluster module)."
  type = list(object({
    key      = string
    operator = string
    value    = string
    effect   = string
  }))
}

variable "cert_manager_version" {
  description = "Version of the cert-manager chart (KServe's webhooks need its certificates)."
  type        = string
  default     = "v1.17.0"
}

variable "kserve_version" {
  description = "Version of the KServe CRD and controller charts."
  type        = string
  default     = "v0.17.0"
}

variable "kserve_deployment_mode" {
  description = "KServe's default deployment mode. Serverless (Knative) is what canaryTrafficPercent needs and requires Knative Serving with a networking layer on the cluster; RawDeployment runs plain Deployments and ignores canary percentages."
  type        = string
  default     = "Serverless"

  validation {
    condition     = contains(["Serverless", "RawDeployment"], var.kserve_deployment_mode)
    error_message = "The kserve_deployment_mode must be Serverless or RawDeployment."
  }
}

variable "install_nvidia_device_plugin" {
  description = "Install the NVIDIA device plugin on the GPU nodes, which advertises nvidia.com/gpu to the scheduler. Turn off when the NVIDIA GPU Operator manages the nodes."
  type        = bool
  default     = true
}

variable "nvidia_device_plugin_version" {
  description = "Version of the NVIDIA device plugin chart."
  type        = string
  default     = "0.17.0"
}

variable "cluster_autoscaler_chart_version" {
  description = "Version of the cluster-autoscaler chart (AWS only); pick the release whose autoscaler matches the Kubernetes minor version."
  type        = string
  default     = "9.46.0"
}

variable "skiff_chart_path" {
  description = "Path of the skiff platform chart. Null uses helm/skiff of this repository."
  type        = string
  default     = null
}

variable "skiff_model_chart_path" {
  description = "Path of the per-model chart. Null uses helm/skiff-model of this repository."
  type        = string
  default     = null
}

variable "skiff_values" {
  description = "Extra values for the skiff platform chart, as YAML, applied over the values this module derives from the cluster module."
  type        = string
  default     = ""
}

variable "models" {
  description = "Models to deploy with the per-model chart: release name (the model name) to extra values as YAML. Empty deploys none (models usually arrive through GitOps)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.models) : can(regex("^[a-z0-9]([a-z0-9-]{0,51}[a-z0-9])?$", k))])
    error_message = "Each key of models must be a valid Helm release name (lower-case letters, digits and '-', at most 53 characters)."
  }
}

variable "helm_timeout_seconds" {
  description = "Seconds each Helm release may take to become ready."
  type        = number
  default     = 600

  validation {
    condition     = var.helm_timeout_seconds >= 60
    error_message = "The helm_timeout_seconds must be at least 60."
  }
}
