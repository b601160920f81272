# Azure ML's cluster extension, opt-in (azureml_extension): the agent that lets an Azure ML workspace run
# training jobs on this cluster once `skiff cloud azure attach-compute` attaches it as a Kubernetes compute.
# Training only (skiff serves with KServe); the platform module already installs the NVIDIA device plugin
# and Prometheus, so the extension installs neither; Volcano is its job scheduler.

resource "azurerm_kubernetes_cluster_extension" "azureml" {
  count          = var.azureml_extension ? 1 : 0
  name           = "azureml"
  cluster_id     = azurerm_kubernetes_cluster.this.id
  extension_type = "Microsoft.AzureML.Kubernetes"
  release_train  = "stable"

  configuration_settings = {
    enableTraining            = "True"
    enableInference           = "False"
    allowInsecureConnections  = "False"
    installNvidiaDevicePlugin = "False"
    installPromOp             = "False"
    installDcgmExporter       = "False"
    installVolcano            = "True"
  }
}
