# skiff on AWS: a private VPC, an EKS cluster with a CPU and a GPU node group, the S3 bucket that is
# the skiff root (lake/, artifacts/, models/), ECR repositories for the images, and IAM roles for the
# skiff service accounts (IRSA). The resources live in network.tf, eks.tf, storage.tf and
# identities.tf; this file holds what they share.

data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

data "aws_region" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  dns_suffix = data.aws_partition.current.dns_suffix
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name

  tags = merge(var.tags, {
    "app.kubernetes.io/part-of" = "skiff"
    "skiff.io/installation"     = var.name
  })

  azs = var.availability_zones

  # Private /20s (with a /16) from the bottom of the range for nodes and pods; public /24s from the
  # top for NAT gateways and internet-facing load balancers.
  private_subnet_cidrs = { for i, az in local.azs : az => cidrsubnet(var.vpc_cidr, 4, i) }
  public_subnet_cidrs  = { for i, az in local.azs : az => cidrsubnet(var.vpc_cidr, 8, 240 + i) }
  nat_azs              = var.single_nat_gateway ? [local.azs[0]] : local.azs

  endpoint_public_access = length(var.endpoint_public_access_cidrs) > 0

  bucket_name = var.bucket_name != null ? var.bucket_name : "${var.name}-${local.account_id}-${local.region}"
}
