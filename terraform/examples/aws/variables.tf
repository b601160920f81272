variable "region" {
  description = "AWS region of the installation."
  type        = string
  default     = "eu-west-1"

  validation {
    condition = contains([
      "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "sa-east-1",
      "eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1", "eu-south-2",
      "ap-south-1", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-southeast-1", "ap-southeast-2",
      "me-central-1", "il-central-1",
    ], var.region)
    error_message = "The region must be a commercial AWS region with EKS and NVIDIA GPU instances, e.g. eu-west-1 or us-east-1."
  }
}

variable "availability_zones" {
  description = "Availability zones of the region to use (2 to 4). Leave out zones without capacity for the GPU instance types."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
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

variable "endpoint_public_access_cidrs" {
  description = "CIDR blocks allowed to reach the Kubernetes API from outside the VPC. Empty keeps the API private; the platform layer then has to be applied from inside the VPC."
  type        = list(string)
  default     = []
}

variable "cluster_admin_arns" {
  description = "IAM role or user ARNs given cluster-admin (platform team, CI)."
  type        = list(string)
  default     = []
}

variable "cpu_instance_types" {
  description = "Instance types of the CPU node group."
  type        = list(string)
  default     = ["m6i.xlarge"]
}

variable "gpu_instance_types" {
  description = "Instance types of the GPU node group (same GPU count each)."
  type        = list(string)
  default     = ["g5.xlarge"]
}

variable "gpu_max_size" {
  description = "Maximum number of GPU nodes; the group scales from zero."
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
