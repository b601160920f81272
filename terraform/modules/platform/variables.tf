variable "cloud" {
  description = "Cloud the cluster runs on: aws (EKS: cluster autoscaler, gp3 default StorageClass on the EBS CSI driver) or azure (AKS, whose autoscaler and disk StorageClasses are built in)."
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
  description = "Namespace the skiff charts install into; must be the namespace the workload identities are bound to. The module creates it."
  type        = string
  default     = "skiff"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "The namespace must be a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters)."
  }
}

variable "service_accounts" {
  description = "The skiff service accounts by workload (pipeline, serving, rollout, api, stream): namespace, name, annotations binding them to the cloud identity, and labels their pods need. Pass the service_accounts output of the aws-eks or azure-aks module."
  type = map(object({
    namespace   = string
    name        = string
    annotations = map(string)
    pod_labels  = map(string)
  }))

  validation {
    condition     = alltrue([for k in ["pipeline", "serving", "rollout"] : contains(keys(var.service_accounts), k)]) && alltrue([for k in keys(var.service_accounts) : contains(["pipeline", "serving", "rollout", "api", "stream"], k)])
    error_message = "The service_accounts must have the keys pipeline, serving and rollout, and may have api and stream."
  }
}

variable "kfp_runner" {
  description = "The service account Kubeflow Pipelines runs pipeline pods as (standalone install: pipeline-runner in the KFP namespace) and the annotations binding it to the pipeline identity: the kfp_runner output of the aws-eks or azure-aks module."
  type = object({
    namespace   = string
    name        = string
    annotations = map(string)
    pod_labels  = map(string)
  })

  validation {
    condition     = var.kfp_runner.name == "pipeline-runner"
    error_message = "The kfp_runner name must be pipeline-runner: the standalone KFP API server runs every pipeline pod as it (DEFAULTPIPELINERUNNERSERVICEACCOUNT)."
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
  description = "Registry prefix of the skiff images (the image_registry output of the cluster module). Knative resolves no tags for this registry (its controller has no pull credentials for a private one)."
  type        = string
}

variable "ingress_domain" {
  description = "DNS domain of the InferenceServices (Knative config-domain and KServe's gateway domain): a model is reached at <name>-<namespace>.<ingress_domain>. The environment file's ingress_domain must name the same domain."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.ingress_domain))
    error_message = "The ingress_domain must be a DNS name such as models.example.com."
  }
}

variable "gpu_node_selector" {
  description = "Node selector of the GPU pool (the gpu_node_selector output of the cluster module): the labels the GPU node group/pool sets. The NVIDIA device plugin requires them through its node affinity."
  type        = map(string)

  validation {
    condition     = length(var.gpu_node_selector) > 0
    error_message = "The gpu_node_selector must hold at least one label of the GPU pool."
  }
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

variable "kserve_deployment_mode" {
  description = "KServe's default deployment mode (chart value kserve.controller.deploymentMode): Knative (Knative Serving with Kourier, needed for canaryTrafficPercent and scale to zero) or Standard (plain Deployments; canary percentages are ignored)."
  type        = string
  default     = "Knative"

  validation {
    condition     = contains(["Knative", "Standard"], var.kserve_deployment_mode)
    error_message = "The kserve_deployment_mode must be Knative or Standard."
  }
}

variable "kourier_service_type" {
  description = "Service type of the Kourier gateway that receives model traffic: LoadBalancer (a cloud load balancer) or ClusterIP (reached through your own ingress or a port-forward)."
  type        = string
  default     = "LoadBalancer"

  validation {
    condition     = contains(["LoadBalancer", "ClusterIP", "NodePort"], var.kourier_service_type)
    error_message = "The kourier_service_type must be LoadBalancer, ClusterIP or NodePort."
  }
}

variable "install_nvidia_device_plugin" {
  description = "Install the NVIDIA device plugin on the GPU nodes, which advertises nvidia.com/gpu to the scheduler. Turn off when the NVIDIA GPU Operator manages the nodes."
  type        = bool
  default     = true
}

variable "install_monitoring" {
  description = "Install kube-prometheus-stack (Prometheus operator, Prometheus, Alertmanager, Grafana) in the monitoring namespace. The rollout controller and the skiff alerts need a Prometheus; turn off where one is already run (its operator must select skiff's PodMonitor and PrometheusRule)."
  type        = bool
  default     = true
}

variable "prometheus_retention" {
  description = "How long Prometheus keeps samples (kube-prometheus-stack prometheus.prometheusSpec.retention)."
  type        = string
  default     = "15d"

  validation {
    condition     = can(regex("^[0-9]+(h|d|w|y)$", var.prometheus_retention))
    error_message = "The prometheus_retention must be a duration such as 15d or 12h."
  }
}

variable "install_argo_cd" {
  description = "Install Argo CD in the argocd namespace. It syncs Kubeflow Pipelines (below) and the GitOps environments under infra/."
  type        = bool
  default     = true
}

variable "install_kubeflow_pipelines" {
  description = "Install Kubeflow Pipelines (standalone, upstream kustomize manifests at the pinned tag) through Argo CD Applications. Needs install_argo_cd."
  type        = bool
  default     = true
}

variable "redis_mode" {
  description = "The Feast online store: managed (the cluster module's ElastiCache / Azure Cache for Redis, passed in redis), in-cluster (one Redis pod for development, no persistence) or none (no feature server)."
  type        = string
  default     = "in-cluster"

  validation {
    condition     = contains(["managed", "in-cluster", "none"], var.redis_mode)
    error_message = "The redis_mode must be managed, in-cluster or none."
  }
}

variable "redis" {
  description = "Connection of the managed Redis (the redis output of the aws-eks or azure-aks module): host, port, whether it speaks TLS, and its password. Used when redis_mode is managed."
  type = object({
    host     = string
    port     = number
    ssl      = bool
    password = string
  })
  default   = null
  sensitive = true
}

variable "redis_secret_name" {
  description = "Name of the Secret holding the Redis connection (key connection-string, Feast's format host:port,ssl=...,password=...), written into the skiff namespace and the KFP namespace. helm/skiff's featureServer.redis.secretName and the pipelines read it by this name."
  type        = string
  default     = "skiff-redis"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.redis_secret_name))
    error_message = "The redis_secret_name must be a DNS-1123 subdomain."
  }
}

variable "cluster_autoscaler_extra_args" {
  description = "Extra command-line flags of the cluster autoscaler (AWS only), merged over skiff's defaults."
  type        = map(string)
  default     = {}
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
