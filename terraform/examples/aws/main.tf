# skiff on AWS: an EKS cluster with a GPU node group and everything skiff stores and pulls, and,
# when install_platform is true (second phase), the platform skiff runs on: cert-manager, Knative
# Serving with Kourier, KServe, Kubeflow Pipelines, Prometheus, Argo CD, Redis, the NVIDIA device plugin
# and the skiff charts.

provider "aws" {
  region = var.region

  default_tags {
    tags = var.tags
  }
}

# The helm provider reaches the new cluster with a short-lived token from the AWS CLI; the helm and kubernetes
# providers are used only when install_platform is true (the second phase of the apply).
provider "helm" {
  kubernetes {
    host                   = module.eks.cluster_endpoint
    cluster_ca_certificate = base64decode(module.eks.cluster_certificate_authority_data)

    exec {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--cluster-name", module.eks.cluster_name, "--region", var.region]
    }
  }
}

provider "kubernetes" {
  host                   = module.eks.cluster_endpoint
  cluster_ca_certificate = base64decode(module.eks.cluster_certificate_authority_data)

  exec {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "aws"
    args        = ["eks", "get-token", "--cluster-name", module.eks.cluster_name, "--region", var.region]
  }
}

module "eks" {
  source = "../../modules/aws-eks"

  name                         = var.name
  availability_zones           = var.availability_zones
  kubernetes_version           = var.kubernetes_version
  endpoint_public_access_cidrs = var.endpoint_public_access_cidrs
  cluster_admin_arns           = var.cluster_admin_arns
  cpu_instance_types           = var.cpu_instance_types
  gpu_instance_types           = var.gpu_instance_types
  gpu_max_size                 = var.gpu_max_size
  tags                         = var.tags
  create_redis                 = var.redis_mode == "managed"
}

module "platform" {
  source = "../../modules/platform"
  count  = var.install_platform ? 1 : 0

  cloud                       = "aws"
  cluster_name                = module.eks.cluster_name
  aws_region                  = var.region
  cluster_autoscaler_role_arn = module.eks.cluster_autoscaler_role_arn
  service_accounts            = module.eks.service_accounts
  skiff_root                  = module.eks.skiff_root
  image_registry              = module.eks.image_registry
  gpu_node_selector           = module.eks.gpu_node_selector
  gpu_tolerations             = module.eks.gpu_tolerations
  kfp_runner                  = module.eks.kfp_runner
  ingress_domain              = var.ingress_domain
  redis_mode                  = var.redis_mode
  redis                       = module.eks.redis
}
