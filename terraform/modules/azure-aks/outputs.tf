output "resource_group_name" {
  description = "Name of the resource group holding the installation."
  value       = azurerm_resource_group.this.name
}

output "cluster_name" {
  description = "Name of the AKS cluster."
  value       = azurerm_kubernetes_cluster.this.name
}

output "cluster_id" {
  description = "Resource ID of the AKS cluster."
  value       = azurerm_kubernetes_cluster.this.id
}

output "cluster_endpoint" {
  description = "HTTPS endpoint of the Kubernetes API server (the private FQDN for a private cluster)."
  value       = "https://${local.private_cluster ? azurerm_kubernetes_cluster.this.private_fqdn : azurerm_kubernetes_cluster.this.fqdn}:443"
}

output "cluster_ca_certificate" {
  description = "Base64-encoded certificate of the cluster's certificate authority (for kubeconfig and the helm provider)."
  value       = azurerm_kubernetes_cluster.this.kube_config[0].cluster_ca_certificate
  sensitive   = true
}

output "kubeconfig_command" {
  description = "Commands that write a kubeconfig entry for the cluster and switch it to Entra ID login through kubelogin (local accounts are disabled)."
  value       = "az aks get-credentials --resource-group ${azurerm_resource_group.this.name} --name ${azurerm_kubernetes_cluster.this.name} && kubelogin convert-kubeconfig -l azurecli"
}

output "oidc_issuer_url" {
  description = "OIDC issuer URL of the cluster's service-account tokens (for further federated credentials)."
  value       = azurerm_kubernetes_cluster.this.oidc_issuer_url
}

output "vnet_id" {
  description = "Resource ID of the virtual network."
  value       = azurerm_virtual_network.this.id
}

output "node_subnet_id" {
  description = "Resource ID of the subnet the nodes run in."
  value       = azurerm_subnet.nodes.id
}

output "storage_account_name" {
  description = "Name of the ADLS Gen2 storage account holding the lake, artifacts and model registry."
  value       = azurerm_storage_account.this.name
}

output "storage_container_name" {
  description = "Name of the file system (blob container) that is the skiff root."
  value       = azurerm_storage_container.root.name
}

output "skiff_root" {
  description = "Value for skiff's `root` setting (SKIFF_ROOT) on this cluster: lake/, artifacts/ and models/ live under it."
  value       = "abfs://${azurerm_storage_container.root.name}@${azurerm_storage_account.this.name}.dfs.core.windows.net"
}

output "acr_login_server" {
  description = "Login server of the container registry."
  value       = azurerm_container_registry.this.login_server
}

output "image_registry" {
  description = "Value for SKIFF_IMAGE_REGISTRY when compiling pipelines and building images: images are pushed as <image_registry>/<image>:<version>."
  value       = "${azurerm_container_registry.this.login_server}/${var.name}"
}

output "key_vault_uri" {
  description = "URI of the key vault for skiff's secrets."
  value       = azurerm_key_vault.this.vault_uri
}

output "key_vault_name" {
  description = "Name of the key vault."
  value       = azurerm_key_vault.this.name
}

output "tenant_id" {
  description = "Microsoft Entra tenant of the identities (for the Secrets Store CSI SecretProviderClass)."
  value       = data.azurerm_client_config.current.tenant_id
}

output "pipeline_identity_client_id" {
  description = "Client ID of the managed identity of pipeline runs (service account skiff/skiff-pipeline by default)."
  value       = azurerm_user_assigned_identity.workload["pipeline"].client_id
}

output "serving_identity_client_id" {
  description = "Client ID of the managed identity of model serving (reads models only)."
  value       = azurerm_user_assigned_identity.workload["serving"].client_id
}

output "rollout_identity_client_id" {
  description = "Client ID of the managed identity of the canary rollout controller."
  value       = azurerm_user_assigned_identity.workload["rollout"].client_id
}

output "workload_identity_ids" {
  description = "Resource IDs of the three workload identities, by workload (pipeline, serving, rollout)."
  value       = { for k, id in azurerm_user_assigned_identity.workload : k => id.id }
}

output "service_accounts" {
  description = "The Kubernetes service accounts federated with the workload identities, by workload: namespace, name, the annotation the Helm charts put on them, and the label their pods need for the workload identity webhook."
  value = {
    for k, sa in local.workloads : k => {
      namespace   = var.namespace
      name        = sa
      annotations = { "azure.workload.identity/client-id" = azurerm_user_assigned_identity.workload[k].client_id }
      pod_labels  = { "azure.workload.identity/use" = "true" }
    }
  }
}

output "gpu_node_selector" {
  description = "Node selector that places a pod on the GPU pool (for KFP GPU tasks and KServe GPU predictors)."
  value       = var.gpu_node_labels
}

output "gpu_tolerations" {
  description = "Tolerations a pod needs to run on the tainted GPU pool."
  value = [{
    key      = local.gpu_taint.key
    operator = "Equal"
    value    = local.gpu_taint.value
    effect   = local.gpu_taint.effect
  }]
}

output "kfp_runner" {
  description = "The service account Kubeflow Pipelines (standalone) runs pipeline pods as, the annotation binding it to the pipeline identity and the pod label the workload identity webhook needs (KFP pods must carry it: kfp-kubernetes add_pod_label): pass to modules/platform's kfp_runner."
  value = {
    namespace   = var.kfp_namespace
    name        = var.kfp_runner_service_account
    annotations = { "azure.workload.identity/client-id" = azurerm_user_assigned_identity.workload["pipeline"].client_id }
    pod_labels  = { "azure.workload.identity/use" = "true" }
  }
}

output "kserve_storage_uri" {
  description = "The skiff root in the form KServe's storage initializer accepts (https://<account>.blob.core.windows.net/<container>): the abfs:// root is not among KServe's storage URI formats. InferenceServices name model versions under <this>/models/<name>/<version>."
  value       = "https://${azurerm_storage_account.this.name}.blob.core.windows.net/${azurerm_storage_container.root.name}"
}

output "kserve_registry_uri" {
  description = "The model registry (<skiff_root>/models) in KServe's storage URI form: the registry of the environment files' InferenceServices (storageUri) on Azure."
  value       = "https://${azurerm_storage_account.this.name}.blob.core.windows.net/${azurerm_storage_container.root.name}/models"
}

output "redis" {
  description = "Connection of the Azure Cache for Redis (private endpoint host, TLS port 6380, access key) for modules/platform's redis input, or null when create_redis is false."
  sensitive   = true
  value = var.create_redis ? {
    host     = azurerm_redis_cache.this[0].hostname
    port     = azurerm_redis_cache.this[0].ssl_port
    ssl      = true
    password = azurerm_redis_cache.this[0].primary_access_key
  } : null
}

output "gpu_vm_size" {
  description = "VM size of the GPU node pool: `skiff cloud azure attach-compute` derives the Azure ML instance types (GPUs, CPU and memory per share of a node) from it."
  value       = var.gpu_vm_size
}

output "cloud_commands_role_assignments" {
  description = "Least-privilege role assignments (command, built-in role, scope) for whoever runs skiff's cloud commands: `skiff images push --registry acr`, `skiff doctor --cloud azure`, `skiff cloud azure sync-models --verify-storage` and `attach-compute` (docs/tasks/cloud-azure.md). Grant them to that person's or CI job's own principal; the Azure ML roles are granted on the workspace or registry."
  value       = local.cloud_commands_role_assignments
}
