# Which Kubernetes service account each workload identity is federated with, from variables only
# (tests/cluster evaluates it offline and holds every subject against a service account something runs as).

locals {
  # The skiff workloads (skiff.layout.ACCESS's keys) federated with their Kubernetes service accounts.
  workloads = {
    pipeline = var.pipeline_service_account
    serving  = var.serving_service_account
    rollout  = var.rollout_service_account
    api      = var.api_service_account
    stream   = var.stream_service_account
  }

  # One federated credential per subject (Entra ID matches the subject exactly): the skiff service
  # account of each workload in the skiff namespace; for the pipeline identity also, in the namespace of
  # Kubeflow Pipelines (standalone), where KFP runs pipeline pods, the same account (runs skiff submits
  # name it; modules/platform creates it there) and KFP's default runner (runs started without an account).
  federated_subjects = merge(
    { for k, sa in local.workloads : k => { workload = k, subject = "system:serviceaccount:${var.namespace}:${sa}" } },
    {
      "pipeline-kfp"        = { workload = "pipeline", subject = "system:serviceaccount:${var.kfp_namespace}:${var.pipeline_service_account}" }
      "pipeline-kfp-runner" = { workload = "pipeline", subject = "system:serviceaccount:${var.kfp_namespace}:${var.kfp_runner_service_account}" }
    },
  )
}
