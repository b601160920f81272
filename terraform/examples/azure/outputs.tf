output "resource_group_name" {
  description = "Resource group of the installation."
  value       = module.aks.resource_group_name
}

output "cluster_name" {
  description = "Name of the AKS cluster."
  value       = module.aks.cluster_name
}

output "cluster_endpoint" {
  description = "HTTPS endpoint of the Kubernetes API server."
  value       = module.aks.cluster_endpoint
}

output "kubeconfig_command" {
  description = "Commands that write a kubeconfig entry for the cluster (Entra ID login through kubelogin)."
  value       = module.aks.kubeconfig_command
}

output "skiff_root" {
  description = "Set SKIFF_ROOT (or root in skiff.yaml) to this on the cluster."
  value       = module.aks.skiff_root
}

output "storage_account_name" {
  description = "ADLS Gen2 account of the lake, artifacts and model registry."
  value       = module.aks.storage_account_name
}

output "image_registry" {
  description = "Set SKIFF_IMAGE_REGISTRY to this when building images and compiling pipelines."
  value       = module.aks.image_registry
}

output "key_vault_uri" {
  description = "Key vault for skiff's secrets."
  value       = module.aks.key_vault_uri
}

output "pipeline_identity_client_id" {
  description = "Client ID of the pipeline runs' managed identity."
  value       = module.aks.pipeline_identity_client_id
}

output "serving_identity_client_id" {
  description = "Client ID of model serving's managed identity (reads models only)."
  value       = module.aks.serving_identity_client_id
}

output "rollout_identity_client_id" {
  description = "Client ID of the canary rollout controller's managed identity."
  value       = module.aks.rollout_identity_client_id
}

output "service_accounts" {
  description = "Service accounts, the annotations that bind them to the identities, and the pod labels they need."
  value       = module.aks.service_accounts
}

output "gpu_node_selector" {
  description = "Node selector of the GPU pool."
  value       = module.aks.gpu_node_selector
}

output "gpu_tolerations" {
  description = "Tolerations for the GPU pool."
  value       = module.aks.gpu_tolerations
}

output "kserve_registry_uri" {
  description = "The model registry in the storage URI form KServe accepts: registry of the environment files (s3://<bucket>/models; on Azure https://<account>.blob.core.windows.net/<container>/models)."
  value       = module.aks.kserve_registry_uri
}

output "kfp_runner" {
  description = "The service account Kubeflow Pipelines runs pipeline pods as, bound to the pipeline identity."
  value       = module.aks.kfp_runner
}
