# What skiff's own cloud commands need, least privilege, for the person or CI job that runs them
# (docs/tasks/cloud-aws.md). Output as JSON (cloud_commands_policy_json) for the caller to attach to
# its own role or group: this module does not decide who operates the platform.
#   skiff cloud aws kubeconfig     eks:DescribeCluster on this cluster
#   skiff cloud aws token          nothing: a presigned sts:GetCallerIdentity needs no permission
#                                  (the cluster's access entries decide what the identity may do)
#   skiff images push --registry ecr   the registry login, creating skiff's repositories, pushing
#   skiff promote (ECR scan gate)  reading the scan findings of skiff's images
#   skiff doctor --cloud aws       reading the bucket's settings and skiff's repositories, and (from
#                                  this module's outputs) the workload roles' trust and policies; the
#                                  write probes run as a workload's own role (in a pod), never with this policy

data "aws_iam_policy_document" "cloud_commands" {
  statement {
    sid       = "KubeconfigForThisCluster"
    actions   = ["eks:DescribeCluster"]
    resources = [aws_eks_cluster.this.arn]
  }

  statement {
    sid       = "RegistryLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # the action has no resource-level permission
  }

  statement {
    sid = "SkiffRepositories"
    actions = [
      "ecr:DescribeRepositories",
      "ecr:CreateRepository",
      "ecr:TagResource",
      "ecr:PutLifecyclePolicy",
      "ecr:DescribeImages",
      "ecr:DescribeImageScanFindings",
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:InitiateLayerUpload",
      "ecr:UploadLayerPart",
      "ecr:CompleteLayerUpload",
      "ecr:PutImage",
    ]
    resources = ["arn:${local.partition}:ecr:${local.region}:${local.account_id}:repository/${var.name}/*"]
  }

  statement {
    sid       = "EncryptPushedLayers"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt", "kms:DescribeKey", "kms:CreateGrant"]
    resources = [aws_kms_key.data.arn]
  }

  statement {
    sid = "DoctorReadsTheBucketSettings"
    actions = [
      "s3:GetBucketLocation",
      "s3:GetBucketVersioning",
      "s3:GetEncryptionConfiguration",
      "s3:GetBucketPublicAccessBlock",
    ]
    resources = [aws_s3_bucket.this.arn]
  }

  statement {
    sid = "DoctorReadsTheWorkloadRoles"
    actions = [
      "iam:GetRole",
      "iam:ListAttachedRolePolicies",
      "iam:ListRolePolicies",
      "iam:GetRolePolicy",
    ]
    resources = ["arn:${local.partition}:iam::${local.account_id}:role/${var.name}-*"]
  }
}
