# What skiff needs on a fresh cluster, installed with the helm provider: cert-manager, KServe (CRDs
# and controller), the NVIDIA device plugin on the GPU nodes, the cluster autoscaler on AWS, the skiff
# platform chart (helm/skiff) and optionally one release of the per-model chart (helm/skiff-model)
# per model. The charts get the cluster module's outputs as values: the storage root, the image
# registry, the service accounts bound to the cloud identities, and the GPU node selector and
# tolerations.

locals {
  skiff_chart       = var.skiff_chart_path != null ? var.skiff_chart_path : "${path.module}/../../../helm/skiff"
  skiff_model_chart = var.skiff_model_chart_path != null ? var.skiff_model_chart_path : "${path.module}/../../../helm/skiff-model"

  install_cluster_autoscaler = var.cloud == "aws" && var.cluster_autoscaler_role_arn != null

  gpu_scheduling = {
    nodeSelector = var.gpu_node_selector
    tolerations  = var.gpu_tolerations
  }

  # Values the skiff charts receive from the cluster module.
  skiff_values = {
    cloud = var.cloud
    storage = {
      root = var.skiff_root
    }
    image = {
      registry = var.image_registry
    }
    serviceAccounts = {
      for k, sa in var.service_accounts : k => {
        create      = true
        name        = sa.name
        annotations = sa.annotations
        podLabels   = sa.pod_labels
      }
    }
    gpu = local.gpu_scheduling
  }
}

resource "helm_release" "cert_manager" {
  name             = "cert-manager"
  repository       = "https://charts.jetstack.io"
  chart            = "cert-manager"
  version          = var.cert_manager_version
  namespace        = "cert-manager"
  create_namespace = true
  atomic           = true
  timeout          = var.helm_timeout_seconds

  values = [yamlencode({
    crds = { enabled = true }
  })]
}

resource "helm_release" "kserve_crd" {
  name             = "kserve-crd"
  repository       = "oci://ghcr.io/kserve/charts"
  chart            = "kserve-crd"
  version          = var.kserve_version
  namespace        = "kserve"
  create_namespace = true
  atomic           = true
  timeout          = var.helm_timeout_seconds

  depends_on = [helm_release.cert_manager]
}

resource "helm_release" "kserve" {
  name             = "kserve"
  repository       = "oci://ghcr.io/kserve/charts"
  chart            = "kserve"
  version          = var.kserve_version
  namespace        = "kserve"
  create_namespace = true
  atomic           = true
  timeout          = var.helm_timeout_seconds

  values = [yamlencode({
    kserve = {
      controller = {
        deploymentMode = var.kserve_deployment_mode
      }
    }
  })]

  depends_on = [helm_release.kserve_crd]
}

resource "helm_release" "nvidia_device_plugin" {
  count = var.install_nvidia_device_plugin ? 1 : 0

  name             = "nvidia-device-plugin"
  repository       = "https://nvidia.github.io/k8s-device-plugin"
  chart            = "nvidia-device-plugin"
  version          = var.nvidia_device_plugin_version
  namespace        = "nvidia-device-plugin"
  create_namespace = true
  atomic           = true
  timeout          = var.helm_timeout_seconds

  # Only on GPU nodes, through their taint.
  values = [yamlencode(local.gpu_scheduling)]
}

resource "helm_release" "cluster_autoscaler" {
  count = local.install_cluster_autoscaler ? 1 : 0

  name       = "cluster-autoscaler"
  repository = "https://kubernetes.github.io/autoscaler"
  chart      = "cluster-autoscaler"
  version    = var.cluster_autoscaler_chart_version
  namespace  = "kube-system"
  atomic     = true
  timeout    = var.helm_timeout_seconds

  values = [yamlencode({
    cloudProvider = "aws"
    awsRegion     = var.aws_region
    autoDiscovery = {
      clusterName = var.cluster_name
    }
    rbac = {
      serviceAccount = {
        create      = true
        name        = "cluster-autoscaler"
        annotations = { "eks.amazonaws.com/role-arn" = var.cluster_autoscaler_role_arn }
      }
    }
    extraArgs = {
      "balance-similar-node-groups"   = true
      "skip-nodes-with-system-pods"   = false
      "expander"                      = "least-waste"
      "scale-down-unneeded-time"      = "10m"
      "scale-down-delay-after-add"    = "10m"
      "skip-nodes-with-local-storage" = false
    }
  })]
}

resource "helm_release" "skiff" {
  name             = "skiff"
  chart            = local.skiff_chart
  namespace        = var.namespace
  create_namespace = true
  atomic           = true
  timeout          = var.helm_timeout_seconds

  values = compact([yamlencode(local.skiff_values), var.skiff_values])

  depends_on = [helm_release.kserve, helm_release.nvidia_device_plugin]
}

resource "helm_release" "skiff_model" {
  for_each = var.models

  name      = each.key
  chart     = local.skiff_model_chart
  namespace = var.namespace
  atomic    = true
  timeout   = var.helm_timeout_seconds

  values = compact([
    yamlencode({
      model = { name = each.key }
      storage = {
        root = var.skiff_root
      }
      image = {
        registry = var.image_registry
      }
      serviceAccount = {
        create      = false
        name        = var.service_accounts["serving"].name
        annotations = var.service_accounts["serving"].annotations
        podLabels   = var.service_accounts["serving"].pod_labels
      }
      gpu = local.gpu_scheduling
    }),
    each.value,
  ])

  depends_on = [helm_release.skiff]
}
