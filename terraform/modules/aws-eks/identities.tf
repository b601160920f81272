# IAM roles for service accounts (IRSA). Each skiff workload's Kubernetes service account
# (<namespace>/<service account>) may assume exactly one role, and each role reaches only its own
# prefixes of the skiff bucket: pipeline runs read and write the lake, artifacts, features and the
# registry; serving reads models and writes the inference log; the rollout controller reads models and writes rollout state.

locals {
  oidc_issuer = replace(aws_eks_cluster.this.identity[0].oidc[0].issuer, "https://", "")
}

data "aws_iam_policy_document" "workload_assume" {
  for_each = local.workloads

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.this.arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = local.workload_subjects[each.key]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "workload" {
  for_each = local.workloads

  name                 = "${var.name}-${each.key}"
  description          = "skiff ${each.key}: assumed by ${join(", ", [for sub in local.workload_subjects[each.key] : replace(sub, "system:serviceaccount:", "")])} through IRSA"
  assume_role_policy   = data.aws_iam_policy_document.workload_assume[each.key].json
  max_session_duration = 3600

  tags = local.tags
}

data "aws_iam_policy_document" "workload_storage" {
  for_each = var.workload_storage_access

  statement {
    sid       = "ListOwnPrefixes"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.this.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = flatten([for p in each.value.read_prefixes : [p, "${p}/*"]])
    }
  }

  statement {
    sid       = "ReadOwnPrefixes"
    actions   = ["s3:GetObject"]
    resources = [for p in each.value.read_prefixes : "${aws_s3_bucket.this.arn}/${p}/*"]
  }

  dynamic "statement" {
    for_each = length(each.value.write_prefixes) > 0 ? [each.value.write_prefixes] : []

    content {
      sid = "WriteOwnPrefixes"
      actions = [
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
      ]
      resources = [for p in statement.value : "${aws_s3_bucket.this.arn}/${p}/*"]
    }
  }

  statement {
    sid       = "UseTheDataKey"
    actions   = length(each.value.write_prefixes) > 0 ? ["kms:Decrypt", "kms:GenerateDataKey"] : ["kms:Decrypt"]
    resources = [aws_kms_key.data.arn]
  }
}

resource "aws_iam_role_policy" "workload_storage" {
  for_each = var.workload_storage_access

  name   = "skiff-storage"
  role   = aws_iam_role.workload[each.key].id
  policy = data.aws_iam_policy_document.workload_storage[each.key].json
}

# --- cluster autoscaler -----------------------------------------------------------------------------

data "aws_iam_policy_document" "cluster_autoscaler_assume" {
  count = var.create_cluster_autoscaler_role ? 1 : 0

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.this.arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = [local.cluster_autoscaler_subject]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "cluster_autoscaler" {
  count = var.create_cluster_autoscaler_role ? 1 : 0

  statement {
    sid = "DescribeGroupsAndInstanceTypes"
    actions = [
      "autoscaling:DescribeAutoScalingGroups",
      "autoscaling:DescribeAutoScalingInstances",
      "autoscaling:DescribeLaunchConfigurations",
      "autoscaling:DescribeScalingActivities",
      "autoscaling:DescribeTags",
      "ec2:DescribeImages",
      "ec2:DescribeInstanceTypes",
      "ec2:DescribeLaunchTemplateVersions",
      "ec2:GetInstanceTypesFromInstanceRequirements",
    ]
    resources = ["*"]
  }

  statement {
    sid       = "ScaleThisClustersGroups"
    actions   = ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/k8s.io/cluster-autoscaler/${var.name}"
      values   = ["owned"]
    }
  }

  statement {
    sid       = "DescribeThisClustersNodegroups"
    actions   = ["eks:DescribeNodegroup"]
    resources = ["arn:${local.partition}:eks:${local.region}:${local.account_id}:nodegroup/${var.name}/*"]
  }
}

resource "aws_iam_role" "cluster_autoscaler" {
  count = var.create_cluster_autoscaler_role ? 1 : 0

  name               = "${var.name}-cluster-autoscaler"
  description        = "Kubernetes cluster autoscaler of ${var.name}: assumed by kube-system/cluster-autoscaler through IRSA"
  assume_role_policy = data.aws_iam_policy_document.cluster_autoscaler_assume[0].json

  tags = local.tags
}

resource "aws_iam_role_policy" "cluster_autoscaler" {
  count = var.create_cluster_autoscaler_role ? 1 : 0

  name   = "scale-node-groups"
  role   = aws_iam_role.cluster_autoscaler[0].id
  policy = data.aws_iam_policy_document.cluster_autoscaler[0].json
}

# --- EBS CSI driver ---------------------------------------------------------------------------------
# The aws-ebs-csi-driver add-on's controller creates and attaches the volumes KFP's MySQL and object
# store claim (through the gp3 StorageClass of modules/platform).

data "aws_iam_policy_document" "ebs_csi_assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.this.arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = [local.ebs_csi_subject]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ebs_csi" {
  name                 = "${var.name}-ebs-csi"
  description          = "EBS CSI driver: assumed by kube-system/ebs-csi-controller-sa through IRSA"
  assume_role_policy   = data.aws_iam_policy_document.ebs_csi_assume.json
  max_session_duration = 3600

  tags = local.tags
}

resource "aws_iam_role_policy_attachment" "ebs_csi" {
  role       = aws_iam_role.ebs_csi.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
}
