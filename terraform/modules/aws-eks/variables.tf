# ---------------------------------------------------------------------------------------------------
# Naming and tags
# ---------------------------------------------------------------------------------------------------

variable "name" {
  description = "Name of the skiff installation: the EKS cluster, and the prefix of every other resource (VPC, bucket, roles, ECR repositories)."
  type        = string
  default     = "skiff"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "The name must be 3-32 characters of lower-case letters, digits and '-', starting with a letter and not ending with '-'."
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

variable "vpc_cidr" {
  description = "CIDR block of the VPC. Private subnets take /20s (with a /16) for nodes and pods (the VPC CNI gives pods VPC addresses); public subnets take small blocks at the top for the NAT gateways and internet-facing load balancers."
  type        = string
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr)) && tonumber(split("/", var.vpc_cidr)[1]) >= 16 && tonumber(split("/", var.vpc_cidr)[1]) <= 18
    error_message = "The vpc_cidr must be an IPv4 CIDR block from /16 to /18 (AWS allows /16 at most; smaller than /18 leaves too few pod addresses)."
  }
}

variable "availability_zones" {
  description = "Availability zones to spread the subnets, NAT gateways and node groups over (2 to 4, e.g. [\"eu-west-1a\", \"eu-west-1b\", \"eu-west-1c\"]). Named explicitly so the set never changes when AWS adds a zone, and so zones without capacity for the chosen GPU types can be left out."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 4 && length(distinct(var.availability_zones)) == length(var.availability_zones)
    error_message = "The availability_zones must list 2 to 4 distinct zones (EKS needs subnets in at least two)."
  }

  validation {
    condition     = alltrue([for z in var.availability_zones : can(regex("^[a-z]{2}(-[a-z]+)+-[0-9][a-z]$", z))])
    error_message = "Each entry of availability_zones must be a zone name such as eu-west-1a."
  }
}

variable "single_nat_gateway" {
  description = "Use one NAT gateway for all zones (cheaper, but a zone outage cuts egress for the others). The default is one NAT gateway per zone."
  type        = bool
  default     = false
}

variable "flow_log_retention_days" {
  description = "Days to keep the VPC flow logs in CloudWatch Logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "The flow_log_retention_days must be one of the retention periods CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)."
  }
}

# ---------------------------------------------------------------------------------------------------
# EKS control plane
# ---------------------------------------------------------------------------------------------------

variable "kubernetes_version" {
  description = "Kubernetes version of the EKS control plane and the managed node groups (pinned: upgrades are a deliberate change of this value, one minor version at a time)."
  type        = string
  default     = "1.33"

  validation {
    condition     = contains(["1.31", "1.32", "1.33", "1.34"], var.kubernetes_version)
    error_message = "The kubernetes_version must be one of the versions skiff is tested against: 1.31, 1.32, 1.33, 1.34."
  }
}

variable "endpoint_public_access_cidrs" {
  description = "CIDR blocks allowed to reach a public Kubernetes API endpoint. Empty (the default) keeps the API private: reachable only from inside the VPC (a VPN, a bastion, a CI runner in the VPC). List the operators' and CI's egress ranges to apply the platform layer from outside. 0.0.0.0/0 is refused."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.endpoint_public_access_cidrs : can(cidrnetmask(c)) && c != "0.0.0.0/0"])
    error_message = "Each entry of endpoint_public_access_cidrs must be an IPv4 CIDR block, and 0.0.0.0/0 is not allowed."
  }
}

variable "cluster_log_types" {
  description = "Control-plane log types sent to CloudWatch Logs."
  type        = list(string)
  default     = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  validation {
    condition     = alltrue([for t in var.cluster_log_types : contains(["api", "audit", "authenticator", "controllerManager", "scheduler"], t)])
    error_message = "The cluster_log_types may contain only api, audit, authenticator, controllerManager and scheduler."
  }
}

variable "cluster_log_retention_days" {
  description = "Days to keep the control-plane logs in CloudWatch Logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.cluster_log_retention_days)
    error_message = "The cluster_log_retention_days must be one of the retention periods CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)."
  }
}

variable "cluster_admin_arns" {
  description = "IAM role or user ARNs given cluster-admin through EKS access entries (platform team roles, CI roles)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.cluster_admin_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]+:(role|user)/.+$", a))])
    error_message = "Each entry of cluster_admin_arns must be an IAM role or user ARN."
  }
}

variable "bootstrap_cluster_creator_admin" {
  description = "Give the identity that creates the cluster cluster-admin through an access entry (needed when the same Terraform run installs the platform layer)."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------------------------------
# Node groups
# ---------------------------------------------------------------------------------------------------

variable "cpu_instance_types" {
  description = "Instance types of the CPU node group (system add-ons, KFP, Feast, CPU training and serving)."
  type        = list(string)
  default     = ["m6i.xlarge"]

  validation {
    condition = length(var.cpu_instance_types) > 0 && alltrue([for t in var.cpu_instance_types : contains([
      "m6i.large", "m6i.xlarge", "m6i.2xlarge", "m6i.4xlarge", "m6i.8xlarge",
      "m7i.large", "m7i.xlarge", "m7i.2xlarge", "m7i.4xlarge", "m7i.8xlarge",
      "c6i.xlarge", "c6i.2xlarge", "c6i.4xlarge", "c7i.xlarge", "c7i.2xlarge", "c7i.4xlarge",
      "r6i.xlarge", "r6i.2xlarge", "r6i.4xlarge", "r7i.xlarge", "r7i.2xlarge", "r7i.4xlarge",
    ], t)])
    error_message = "The cpu_instance_types must be a non-empty list of supported x86_64 types: m6i/m7i large-8xlarge, c6i/c7i xlarge-4xlarge, r6i/r7i xlarge-4xlarge."
  }
}

variable "cpu_min_size" {
  description = "Minimum number of CPU nodes."
  type        = number
  default     = 2

  validation {
    condition     = var.cpu_min_size >= 1
    error_message = "The cpu_min_size must be at least 1: cluster add-ons (CoreDNS) and controllers run on the CPU group."
  }
}

variable "cpu_max_size" {
  description = "Maximum number of CPU nodes the autoscaler may reach."
  type        = number
  default     = 6

  validation {
    condition     = var.cpu_max_size >= 1
    error_message = "The cpu_max_size must be at least 1."
  }
}

variable "cpu_desired_size" {
  description = "Number of CPU nodes at creation; the cluster autoscaler owns it afterwards (changes are ignored)."
  type        = number
  default     = 2

  validation {
    condition     = var.cpu_desired_size >= 1
    error_message = "The cpu_desired_size must be at least 1."
  }
}

variable "gpu_instance_types" {
  description = "Instance types of the GPU node group. List types with the same number of GPUs: the cluster autoscaler's scale-from-zero template advertises the GPU count of the first one."
  type        = list(string)
  default     = ["g5.xlarge"]

  validation {
    condition = length(var.gpu_instance_types) > 0 && alltrue([for t in var.gpu_instance_types : contains([
      "g4dn.xlarge", "g4dn.2xlarge", "g4dn.4xlarge", "g4dn.8xlarge", "g4dn.12xlarge",
      "g5.xlarge", "g5.2xlarge", "g5.4xlarge", "g5.8xlarge", "g5.12xlarge", "g5.48xlarge",
      "g6.xlarge", "g6.2xlarge", "g6.4xlarge", "g6.8xlarge", "g6.12xlarge",
      "g6e.xlarge", "g6e.2xlarge", "g6e.12xlarge",
      "p4d.24xlarge", "p5.48xlarge",
    ], t)])
    error_message = "The gpu_instance_types must be a non-empty list of NVIDIA GPU types: g4dn, g5, g6, g6e (listed sizes), p4d.24xlarge or p5.48xlarge."
  }
}

variable "gpu_ami_type" {
  description = "EKS AMI type of the GPU node group: an accelerated image with the NVIDIA driver and container toolkit."
  type        = string
  default     = "AL2023_x86_64_NVIDIA"

  validation {
    condition     = contains(["AL2023_x86_64_NVIDIA", "BOTTLEROCKET_x86_64_NVIDIA"], var.gpu_ami_type)
    error_message = "The gpu_ami_type must be AL2023_x86_64_NVIDIA or BOTTLEROCKET_x86_64_NVIDIA."
  }
}

variable "gpu_capacity_type" {
  description = "Capacity type of the GPU node group: ON_DEMAND, or SPOT for interruptible training at lower cost."
  type        = string
  default     = "ON_DEMAND"

  validation {
    condition     = contains(["ON_DEMAND", "SPOT"], var.gpu_capacity_type)
    error_message = "The gpu_capacity_type must be ON_DEMAND or SPOT."
  }
}

variable "gpu_min_size" {
  description = "Minimum number of GPU nodes. 0 (the default) scales the group to zero when no GPU pod is pending."
  type        = number
  default     = 0

  validation {
    condition     = var.gpu_min_size >= 0
    error_message = "The gpu_min_size must be 0 or more."
  }
}

variable "gpu_max_size" {
  description = "Maximum number of GPU nodes the autoscaler may reach."
  type        = number
  default     = 2

  validation {
    condition     = var.gpu_max_size >= 1
    error_message = "The gpu_max_size must be at least 1."
  }
}

variable "gpu_desired_size" {
  description = "Number of GPU nodes at creation; the cluster autoscaler owns it afterwards (changes are ignored)."
  type        = number
  default     = 0

  validation {
    condition     = var.gpu_desired_size >= 0
    error_message = "The gpu_desired_size must be 0 or more."
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

variable "node_disk_size_gib" {
  description = "Root volume size of CPU nodes, in GiB (encrypted gp3)."
  type        = number
  default     = 100

  validation {
    condition     = var.node_disk_size_gib >= 20 && var.node_disk_size_gib <= 16384
    error_message = "The node_disk_size_gib must be from 20 to 16384."
  }
}

variable "gpu_node_disk_size_gib" {
  description = "Root volume size of GPU nodes, in GiB (encrypted gp3). CUDA images are large."
  type        = number
  default     = 200

  validation {
    condition     = var.gpu_node_disk_size_gib >= 50 && var.gpu_node_disk_size_gib <= 16384
    error_message = "The gpu_node_disk_size_gib must be from 50 to 16384."
  }
}

# ---------------------------------------------------------------------------------------------------
# Storage: lake, artifacts, model registry
# ---------------------------------------------------------------------------------------------------

variable "bucket_name" {
  description = "Name of the S3 bucket holding the lake, artifacts and model registry (the skiff root). Null derives '<name>-<account id>-<region>', unique per account and region."
  type        = string
  default     = null

  validation {
    condition     = var.bucket_name == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "The bucket_name must be 3-63 characters of lower-case letters, digits, '.' and '-'."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which overwritten or deleted object versions are removed from the bucket."
  type        = number
  default     = 90

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1
    error_message = "The noncurrent_version_expiration_days must be at least 1."
  }
}

variable "artifacts_infrequent_access_days" {
  description = "Days after which objects under artifacts/ move to S3 Standard-IA (pipeline run outputs are rarely read again)."
  type        = number
  default     = 30

  validation {
    condition     = var.artifacts_infrequent_access_days >= 30
    error_message = "The artifacts_infrequent_access_days must be at least 30 (the S3 minimum for Standard-IA transitions)."
  }
}

variable "lake_intelligent_tiering_days" {
  description = "Days after which objects under lake/ move to S3 Intelligent-Tiering."
  type        = number
  default     = 30

  validation {
    condition     = var.lake_intelligent_tiering_days >= 0
    error_message = "The lake_intelligent_tiering_days must be 0 or more."
  }
}

variable "workload_storage_access" {
  description = "Bucket prefixes (top-level folders under the skiff root) each workload identity may read and write. Keys are the five workloads of skiff.layout.ACCESS (tests/cluster holds them equal): pipeline, serving, rollout, api, stream. Pipeline runs write the lake, artifacts, models and the Feast registry (feast/); serving (the predictors and the Feast feature server) reads models and feast/ and writes the inference log (inference/); the drift monitor runs as a pipeline and reads inference/; the rollout controller reads models and keeps its state under rollouts/; the REST API reads what it lists and writes models/ (champions); a stream consumer writes the lake only."
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
}

# ---------------------------------------------------------------------------------------------------
# Container registry
# ---------------------------------------------------------------------------------------------------

variable "ecr_repositories" {
  description = "ECR repositories created under '<name>/': one per image skiff builds (components/_image.py IMAGES: skiff, which also runs the predictors and transformers, skiff-tfdv and skiff-gpu). Set SKIFF_IMAGE_REGISTRY to the image_registry output when building images and compiling pipelines."
  type        = list(string)
  default     = ["skiff", "skiff-tfdv", "skiff-gpu"]

  validation {
    condition     = length(var.ecr_repositories) > 0 && alltrue([for r in var.ecr_repositories : can(regex("^[a-z0-9]+([._-][a-z0-9]+)*$", r))])
    error_message = "Each ECR repository name must be lower-case letters and digits, separated by single '.', '_' or '-'."
  }
}

variable "ecr_untagged_image_expiry_days" {
  description = "Days after which untagged images (superseded layers of a build) are removed from the ECR repositories."
  type        = number
  default     = 14

  validation {
    condition     = var.ecr_untagged_image_expiry_days >= 1
    error_message = "The ecr_untagged_image_expiry_days must be at least 1."
  }
}

# ---------------------------------------------------------------------------------------------------
# Workload identities (IRSA)
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
  description = "Service account of pipeline runs (KFP steps); its IAM role reads and writes the lake, artifacts and registry."
  type        = string
  default     = "skiff-pipeline"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.pipeline_service_account))
    error_message = "The pipeline_service_account must be a DNS-1123 subdomain."
  }
}

variable "serving_service_account" {
  description = "Service account of KServe predictors and transformers; its IAM role reads models only."
  type        = string
  default     = "skiff-serving"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.serving_service_account))
    error_message = "The serving_service_account must be a DNS-1123 subdomain."
  }
}

variable "rollout_service_account" {
  description = "Service account of the canary rollout controller; its IAM role reads models and writes rollout state."
  type        = string
  default     = "skiff-rollout"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.rollout_service_account))
    error_message = "The rollout_service_account must be a DNS-1123 subdomain."
  }
}

variable "api_service_account" {
  description = "Service account of the REST API (skiff api); its IAM role reads the lake, artifacts, models and rollout state and writes models (champions)."
  type        = string
  default     = "skiff-api"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.api_service_account))
    error_message = "The api_service_account must be a DNS-1123 subdomain."
  }
}

variable "stream_service_account" {
  description = "Service account of the stream consumers (skiff stream); its IAM role writes the lake only."
  type        = string
  default     = "skiff-stream"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.stream_service_account))
    error_message = "The stream_service_account must be a DNS-1123 subdomain."
  }
}

variable "kfp_namespace" {
  description = "Namespace of Kubeflow Pipelines (standalone), where it runs pipeline pods; the pipeline role trusts its runner account there too."
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

variable "create_cluster_autoscaler_role" {
  description = "Create an IRSA role for the Kubernetes cluster autoscaler (kube-system/cluster-autoscaler), which scales the node groups, the GPU group from zero included."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------------------------------
# Redis (Feast online store)
# ---------------------------------------------------------------------------------------------------

variable "create_redis" {
  description = "Create an ElastiCache (Redis OSS) replication group for Feast's online store; modules/platform writes its connection into a Kubernetes Secret (redis_mode managed). False: use the platform module's in-cluster development Redis or none."
  type        = bool
  default     = true
}

variable "redis_node_type" {
  description = "ElastiCache node type of the Redis primary and replica."
  type        = string
  default     = "cache.t4g.medium"

  validation {
    condition     = can(regex("^cache\\.(t4g|m6g|m7g|r6g|r7g)\\.[a-z0-9]+$", var.redis_node_type))
    error_message = "The redis_node_type must be a Graviton ElastiCache node type (cache.t4g/m6g/m7g/r6g/r7g.*)."
  }
}

variable "redis_engine_version" {
  description = "Redis OSS engine version of the replication group (the parameter group is default.redis7)."
  type        = string
  default     = "7.1"

  validation {
    condition     = can(regex("^7\\.[0-9]+$", var.redis_engine_version))
    error_message = "The redis_engine_version must be a Redis 7 minor version such as 7.1."
  }
}
