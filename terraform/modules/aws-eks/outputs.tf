output "cluster_name" {
  description = "Name of the EKS cluster."
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "HTTPS endpoint of the Kubernetes API server."
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_certificate_authority_data" {
  description = "Base64-encoded certificate of the cluster's certificate authority (for kubeconfig and the helm provider)."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "cluster_version" {
  description = "Kubernetes version the control plane runs."
  value       = aws_eks_cluster.this.version
}

output "kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for the cluster."
  value       = "aws eks update-kubeconfig --name ${aws_eks_cluster.this.name} --region ${local.region}"
}

output "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider (for further IRSA roles)."
  value       = aws_iam_openid_connect_provider.this.arn
}

output "oidc_issuer_url" {
  description = "OIDC issuer URL of the cluster's service-account tokens."
  value       = aws_eks_cluster.this.identity[0].oidc[0].issuer
}

output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "private_subnet_ids" {
  description = "IDs of the private subnets the nodes run in, one per availability zone."
  value       = [for s in aws_subnet.private : s.id]
}

output "bucket_name" {
  description = "Name of the S3 bucket holding the lake, artifacts and model registry."
  value       = aws_s3_bucket.this.bucket
}

output "bucket_arn" {
  description = "ARN of the S3 bucket."
  value       = aws_s3_bucket.this.arn
}

output "skiff_root" {
  description = "Value for skiff's `root` setting (SKIFF_ROOT) on this cluster: lake/, artifacts/ and models/ live under it."
  value       = "s3://${aws_s3_bucket.this.bucket}"
}

output "data_kms_key_arn" {
  description = "ARN of the KMS key encrypting the bucket and the ECR repositories."
  value       = aws_kms_key.data.arn
}

output "ecr_repository_urls" {
  description = "URL of each ECR repository, by image name."
  value       = { for name in var.ecr_repositories : name => aws_ecr_repository.this[name].repository_url }
}

output "image_registry" {
  description = "Value for SKIFF_IMAGE_REGISTRY when compiling pipelines and building images: images are pushed as <image_registry>/<image>:<version>."
  value       = "${local.account_id}.dkr.ecr.${local.region}.${local.dns_suffix}/${var.name}"
}

output "pipeline_role_arn" {
  description = "ARN of the IAM role of pipeline runs (service account skiff/skiff-pipeline by default)."
  value       = aws_iam_role.workload["pipeline"].arn
}

output "serving_role_arn" {
  description = "ARN of the IAM role of model serving (reads models only)."
  value       = aws_iam_role.workload["serving"].arn
}

output "rollout_role_arn" {
  description = "ARN of the IAM role of the canary rollout controller."
  value       = aws_iam_role.workload["rollout"].arn
}

output "cluster_autoscaler_role_arn" {
  description = "ARN of the IAM role of the cluster autoscaler (kube-system/cluster-autoscaler), or null when not created."
  value       = var.create_cluster_autoscaler_role ? aws_iam_role.cluster_autoscaler[0].arn : null
}

output "service_accounts" {
  description = "The Kubernetes service accounts bound to the workload roles, by workload: namespace, name, the annotation the Helm charts put on them, and extra pod labels (none needed on EKS)."
  value = {
    for k, sa in local.workloads : k => {
      namespace   = var.namespace
      name        = sa
      annotations = { "eks.amazonaws.com/role-arn" = aws_iam_role.workload[k].arn }
      pod_labels  = {}
    }
  }
}

output "gpu_node_selector" {
  description = "Node selector that places a pod on the GPU node group (for KFP GPU tasks and KServe GPU predictors)."
  value       = var.gpu_node_labels
}

output "gpu_tolerations" {
  description = "Tolerations a pod needs to run on the tainted GPU node group."
  value = [{
    key      = local.gpu_taint.key
    operator = "Equal"
    value    = local.gpu_taint.value
    effect   = local.gpu_taint.effect
  }]
}

output "kfp_runner" {
  description = "The service account Kubeflow Pipelines (standalone) runs pipeline pods as, and the annotation binding it to the pipeline role: pass to modules/platform's kfp_runner."
  value = {
    namespace   = var.kfp_namespace
    name        = var.kfp_runner_service_account
    annotations = { "eks.amazonaws.com/role-arn" = aws_iam_role.workload["pipeline"].arn }
    pod_labels  = {}
  }
}

output "ebs_csi_role_arn" {
  description = "ARN of the IAM role of the EBS CSI driver add-on."
  value       = aws_iam_role.ebs_csi.arn
}

output "redis" {
  description = "Connection of the ElastiCache Redis (host, port, TLS, AUTH token) for modules/platform's redis input, or null when create_redis is false."
  sensitive   = true
  value = var.create_redis ? {
    host     = aws_elasticache_replication_group.redis[0].primary_endpoint_address
    port     = aws_elasticache_replication_group.redis[0].port
    ssl      = true
    password = random_password.redis[0].result
  } : null
}

output "kserve_storage_uri" {
  description = "The skiff root in a form KServe's storage initializer accepts (s3://<bucket>); the same as skiff_root on AWS, exported under one name for both clouds."
  value       = "s3://${aws_s3_bucket.this.bucket}"
}

output "kserve_registry_uri" {
  description = "The model registry (<skiff_root>/models) in KServe's storage URI form: the registry of the environment files' InferenceServices (storageUri)."
  value       = "s3://${aws_s3_bucket.this.bucket}/models"
}

output "cloud_commands_policy_json" {
  description = "Least-privilege IAM policy (JSON) for whoever runs skiff's cloud commands: `skiff cloud aws kubeconfig`, `skiff images push --registry ecr`, the ECR scan gate of `skiff promote` and `skiff doctor --cloud aws` (docs/tasks/cloud-aws.md). Attach it to that person's or CI job's own role."
  value       = data.aws_iam_policy_document.cloud_commands.json
}
