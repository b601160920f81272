# What skiff's own cloud commands need on Azure, least privilege, for the person or CI job that runs them
# (docs/tasks/cloud-azure.md): built-in roles at the narrowest scope this module knows, output as role
# assignments (cloud_commands_role_assignments) to grant to that principal. This module does not decide
# who operates the platform, and the Azure ML workspace or registry is not the module's: the Azure ML
# roles (AzureML Data Scientist for the model sync, AzureML Compute Operator for attach-compute, AzureML
# Registry User for a registry) are granted where the workspace or registry lives.
#   skiff images push --registry acr   AcrPush on the registry
#   skiff doctor --cloud azure         Reader on the resource group (the storage account, its blob
#                                      service, the workload identities); the identity checks list role
#                                      assignments in the subscription (Reader there, or they fail alone)
#   skiff cloud azure sync-models --verify-storage
#                                      Storage Blob Data Reader on skiff's file system
#   skiff cloud azure attach-compute   Reader on the AKS cluster (attaching reads it and its extension)

locals {
  cloud_commands_role_assignments = [
    {
      command = "skiff images push --registry acr"
      role    = "AcrPush"
      scope   = azurerm_container_registry.this.id
    },
    {
      command = "skiff doctor --cloud azure"
      role    = "Reader"
      scope   = azurerm_resource_group.this.id
    },
    {
      command = "skiff cloud azure sync-models --verify-storage"
      role    = "Storage Blob Data Reader"
      scope   = local.container_scope
    },
    {
      command = "skiff cloud azure attach-compute"
      role    = "Reader"
      scope   = azurerm_kubernetes_cluster.this.id
    },
  ]
}
