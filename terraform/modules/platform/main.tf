# The platform skiff runs on, installed with the helm and kubernetes providers once the cluster exists
# (the second phase of the apply: see terraform/README.md): cert-manager; the Knative operator and, through
# its KnativeServing resource, Knative Serving with Kourier and skiff's config-features/config-domain;
# KServe (CRDs, then the controller); kube-prometheus-stack; Argo CD and, through Argo CD, Kubeflow
# Pipelines standalone; the NVIDIA device plugin on the GPU pool; Redis for Feast (the managed one's
# connection in a Secret, or a development pod); the cluster autoscaler and a gp3 default StorageClass on
# AWS; the skiff platform chart (helm/skiff) and optionally one helm/skiff-model release per model.
#
# Versions come from components.yaml; chart values from values.tf.

locals {
  skiff_chart       = var.skiff_chart_path != null ? var.skiff_chart_path : "${path.module}/../../../helm/skiff"
  skiff_model_chart = var.skiff_model_chart_path != null ? var.skiff_model_chart_path : "${path.module}/../../../helm/skiff-model"

  install_cluster_autoscaler = var.cloud == "aws" && var.cluster_autoscaler_role_arn != null
  install_kfp                = var.install_kubeflow_pipelines && var.install_argo_cd
}

# --- namespaces the platform owns -------------------------------------------------------------------
# Created here, not by a Helm release or an Argo CD sync, so that exactly one owner holds them and the
# Redis Secret can be written before the workloads that read it.

resource "kubernetes_namespace_v1" "skiff" {
  metadata {
    name = var.namespace
    labels = {
      "app.kubernetes.io/part-of" = "skiff"
    }
  }
}

resource "kubernetes_namespace_v1" "kfp" {
  count = local.install_kfp ? 1 : 0

  metadata {
    name = local.kfp_namespace
    labels = {
      "app.kubernetes.io/part-of" = "kubeflow-pipelines"
    }
  }
}

# --- cert-manager -----------------------------------------------------------------------------------

resource "helm_release" "cert_manager" {
  name             = "cert-manager"
  repository       = local.components["cert-manager"].repository
  chart            = local.components["cert-manager"].chart
  version          = local.components["cert-manager"].version
  namespace        = local.components["cert-manager"].namespace
  create_namespace = true
  atomic           = true
  timeout          = var.helm_timeout_seconds

  values = [yamlencode(local.chart_values["cert-manager"])]
}

# --- Knative Serving with Kourier -------------------------------------------------------------------

resource "helm_release" "knative_operator" {
  count = var.kserve_deployment_mode == "Knative" ? 1 : 0

  name             = "knative-operator"
  repository       = local.components["knative-operator"].repository
  chart            = local.components["knative-operator"].chart
  version          = local.components["knative-operator"].version
  namespace        = local.components["knative-operator"].namespace
  create_namespace = true
  atomic           = true
  timeout          = var.helm_timeout_seconds

  values = [yamlencode(local.chart_values["knative-operator"])]
}

# The KnativeServing resource: a local chart, so its custom resource is applied after the operator's CRD
# exists (a kubernetes_manifest would need the CRD at plan time).
resource "helm_release" "knative_serving" {
  count = var.kserve_deployment_mode == "Knative" ? 1 : 0

  name             = "knative-serving"
  chart            = "${path.module}/charts/knative-serving"
  namespace        = local.components["knative-serving"].namespace
  create_namespace = true
  atomic           = true
  wait_for_jobs    = true
  timeout          = var.helm_timeout_seconds

  values = [yamlencode({ spec = local.knative_serving })]

  depends_on = [helm_release.knative_operator]
}

# --- KServe -----------------------------------------------------------------------------------------

resource "helm_release" "kserve_crd" {
  name             = "kserve-crd"
  repository       = local.components["kserve-crd"].repository
  chart            = local.components["kserve-crd"].chart
  version          = local.components["kserve-crd"].version
  namespace        = local.components["kserve-crd"].namespace
  create_namespace = true
  atomic           = true
  timeout          = var.helm_timeout_seconds

  depends_on = [helm_release.cert_manager]
}

resource "helm_release" "kserve" {
  name             = "kserve"
  repository       = local.components["kserve-resources"].repository
  chart            = local.components["kserve-resources"].chart
  version          = local.components["kserve-resources"].version
  namespace        = local.components["kserve-resources"].namespace
  create_namespace = true
  atomic           = true
  timeout          = var.helm_timeout_seconds

  values = [yamlencode(local.chart_values["kserve-resources"])]

  depends_on = [helm_release.kserve_crd, helm_release.knative_serving]
}

# --- monitoring -------------------------------------------------------------------------------------

resource "helm_release" "kube_prometheus_stack" {
  count = var.install_monitoring ? 1 : 0

  name             = "prometheus"
  repository       = local.components["kube-prometheus-stack"].repository
  chart            = local.components["kube-prometheus-stack"].chart
  version          = local.components["kube-prometheus-stack"].version
  namespace        = local.components["kube-prometheus-stack"].namespace
  create_namespace = true
  atomic           = true
  timeout          = var.helm_timeout_seconds

  values = [yamlencode(local.chart_values["kube-prometheus-stack"])]
}

# --- Argo CD and Kubeflow Pipelines -----------------------------------------------------------------

resource "helm_release" "argo_cd" {
  count = var.install_argo_cd ? 1 : 0

  name             = "argocd"
  repository       = local.components["argo-cd"].repository
  chart            = local.components["argo-cd"].chart
  version          = local.components["argo-cd"].version
  namespace        = local.components["argo-cd"].namespace
  create_namespace = true
  atomic           = true
  timeout          = var.helm_timeout_seconds

  values = [yamlencode(local.chart_values["argo-cd"])]
}

# Kubeflow Pipelines standalone (single user), synced by Argo CD from the upstream kustomize manifests at
# the pinned tag: cluster-scoped resources first, then env/platform-agnostic into the kfp namespace, with
# pipeline-runner annotated for the pipeline identity. Why standalone and not multi-user: docs/platform.
resource "helm_release" "kubeflow_pipelines" {
  count = local.install_kfp ? 1 : 0

  name      = "kubeflow-pipelines"
  chart     = "${path.module}/charts/kubeflow-pipelines"
  namespace = local.components["argo-cd"].namespace
  atomic    = true
  timeout   = var.helm_timeout_seconds

  values = [yamlencode(local.kfp_values)]

  depends_on = [helm_release.argo_cd, kubernetes_namespace_v1.kfp, kubernetes_storage_class_v1.gp3]
}

# --- GPUs -------------------------------------------------------------------------------------------

resource "helm_release" "nvidia_device_plugin" {
  count = var.install_nvidia_device_plugin ? 1 : 0

  name             = "nvidia-device-plugin"
  repository       = local.components["nvidia-device-plugin"].repository
  chart            = local.components["nvidia-device-plugin"].chart
  version          = local.components["nvidia-device-plugin"].version
  namespace        = local.components["nvidia-device-plugin"].namespace
  create_namespace = true
  atomic           = true
  timeout          = var.helm_timeout_seconds

  values = [yamlencode(local.chart_values["nvidia-device-plugin"])]
}

# --- AWS: node autoscaling and volumes --------------------------------------------------------------

resource "helm_release" "cluster_autoscaler" {
  count = local.install_cluster_autoscaler ? 1 : 0

  name       = "cluster-autoscaler"
  repository = local.components["cluster-autoscaler"].repository
  chart      = local.components["cluster-autoscaler"].chart
  version    = local.components["cluster-autoscaler"].version
  namespace  = local.components["cluster-autoscaler"].namespace
  atomic     = true
  timeout    = var.helm_timeout_seconds

  values = [yamlencode(local.chart_values["cluster-autoscaler"])]
}

# EKS creates no default StorageClass from 1.30 on; KFP's MySQL and object store claim volumes without
# naming one. Encrypted gp3 on the EBS CSI driver (the aws-ebs-csi-driver add-on of the aws-eks module).
resource "kubernetes_storage_class_v1" "gp3" {
  count = var.cloud == "aws" ? 1 : 0

  metadata {
    name = "gp3"
    annotations = {
      "storageclass.kubernetes.io/is-default-class" = "true"
    }
  }

  storage_provisioner    = "ebs.csi.aws.com"
  reclaim_policy         = "Delete"
  volume_binding_mode    = "WaitForFirstConsumer"
  allow_volume_expansion = true

  parameters = {
    type      = "gp3"
    encrypted = "true"
  }
}

# --- skiff ------------------------------------------------------------------------------------------

resource "helm_release" "skiff" {
  name      = "skiff"
  chart     = local.skiff_chart
  namespace = kubernetes_namespace_v1.skiff.metadata[0].name
  atomic    = true
  timeout   = var.helm_timeout_seconds

  values = compact([yamlencode(local.skiff_values), var.skiff_values])

  depends_on = [
    helm_release.kserve,
    helm_release.kube_prometheus_stack,
    helm_release.nvidia_device_plugin,
    kubernetes_secret_v1.redis,
    helm_release.redis_dev,
  ]
}

resource "helm_release" "skiff_model" {
  for_each = var.models

  name      = each.key
  chart     = local.skiff_model_chart
  namespace = kubernetes_namespace_v1.skiff.metadata[0].name
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

# --- the pipeline identity in the KFP namespace -----------------------------------------------------
# KFP standalone runs every pipeline pod in its own namespace. skiff submits runs as the pipeline service
# account (kfp_service_account), so that account exists there too, bound to the same cloud identity, with
# the rights KFP's own runner has (its pipeline-runner Role, synced by Argo CD).

resource "kubernetes_service_account_v1" "kfp_pipeline" {
  count = local.install_kfp ? 1 : 0

  metadata {
    name        = var.service_accounts["pipeline"].name
    namespace   = kubernetes_namespace_v1.kfp[0].metadata[0].name
    annotations = var.service_accounts["pipeline"].annotations
    labels = {
      "app.kubernetes.io/part-of" = "skiff"
    }
  }

  automount_service_account_token = true
}

resource "kubernetes_role_binding_v1" "kfp_pipeline" {
  count = local.install_kfp ? 1 : 0

  metadata {
    name      = "${var.service_accounts["pipeline"].name}-pipeline-runner"
    namespace = kubernetes_namespace_v1.kfp[0].metadata[0].name
  }

  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = var.kfp_runner.name
  }

  subject {
    kind      = "ServiceAccount"
    name      = kubernetes_service_account_v1.kfp_pipeline[0].metadata[0].name
    namespace = kubernetes_namespace_v1.kfp[0].metadata[0].name
  }
}
