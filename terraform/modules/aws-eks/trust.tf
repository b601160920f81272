# Who may assume each workload role, from variables only (tests/cluster evaluates it offline and holds
# every subject against a service account something runs as).

locals {
  # The skiff workloads (skiff.layout.ACCESS's keys) bound to IAM roles through their Kubernetes service accounts.
  workloads = {
    pipeline = var.pipeline_service_account
    serving  = var.serving_service_account
    rollout  = var.rollout_service_account
    api      = var.api_service_account
    stream   = var.stream_service_account
  }

  # IRSA trust "sub" values per workload role: the skiff service account in the skiff namespace; for the
  # pipeline role also, in the namespace of Kubeflow Pipelines (standalone), where KFP runs pipeline pods,
  # the same account (runs skiff submits name it; modules/platform creates it there) and KFP's default
  # runner (runs started without an account, e.g. from the KFP UI).
  workload_subjects = {
    for k, sa in local.workloads : k => concat(
      ["system:serviceaccount:${var.namespace}:${sa}"],
      k == "pipeline" ? [
        "system:serviceaccount:${var.kfp_namespace}:${sa}",
        "system:serviceaccount:${var.kfp_namespace}:${var.kfp_runner_service_account}",
      ] : [],
    )
  }

  # The EBS CSI controller of the aws-ebs-csi-driver add-on (its service account is the add-on's own).
  ebs_csi_subject = "system:serviceaccount:kube-system:ebs-csi-controller-sa"

  # The cluster autoscaler, installed by modules/platform under this name.
  cluster_autoscaler_subject = "system:serviceaccount:kube-system:cluster-autoscaler"
}
