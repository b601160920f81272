output "cluster_name" {
  description = "Name of the EKS cluster."
  value       = module.eks.cluster_name
}

output "cluster_endpoint" {
  description = "HTTPS endpoint of the Kubernetes API server."
  value       = module.eks.cluster_endpoint
}

output "kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for the cluster."
  value       = module.eks.kubeconfig_command
}

output "skiff_root" {
  description = "Set SKIFF_ROOT (or root in skiff.yaml) to this on the cluster."
  value       = module.eks.skiff_root
}

output "bucket_name" {
  description = "S3 bucket of the lake, artifacts and model registry."
  value       = module.eks.bucket_name
}

output "image_registry" {
  description = "Set SKIFF_IMAGE_REGISTRY to this when building images and compiling pipelines."
  value       = module.eks.image_registry
}

output "ecr_repository_urls" {
  description = "ECR repository URL of each image."
  value       = module.eks.ecr_repository_urls
}

output "pipeline_role_arn" {
  description = "IAM role of pipeline runs."
  value       = module.eks.pipeline_role_arn
}

output "serving_role_arn" {
  description = "IAM role of model serving (reads models only)."
  value       = module.eks.serving_role_arn
}

output "rollout_role_arn" {
  description = "IAM role of the canary rollout controller."
  value       = module.eks.rollout_role_arn
}

output "service_accounts" {
  description = "Service accounts and the annotations that bind them to the roles."
  value       = module.eks.service_accounts
}

output "gpu_node_selector" {
  description = "Node selector of the GPU node group."
  value       = module.eks.gpu_node_selector
}

output "gpu_tolerations" {
  description = "Tolerations for the GPU node group."
  value       = module.eks.gpu_tolerations
}

output "kserve_registry_uri" {
  description = "The model registry in the storage URI form KServe accepts: registry of the environment files (s3://<bucket>/models; on Azure https://<account>.blob.core.windows.net/<container>/models)."
  value       = module.eks.kserve_registry_uri
}

output "kfp_runner" {
  description = "The service account Kubeflow Pipelines runs pipeline pods as, bound to the pipeline identity."
  value       = module.eks.kfp_runner
}
