# What this module sets on each upstream chart and on the Knative operator, from variables and
# components.yaml only, so tests/cluster/ can evaluate it with the real terraform binary and no cloud, and
# hold every key against the upstream chart's values.yaml and Knative's ConfigMaps.

locals {
  # The one place versions are recorded (see the file's header).
  components = yamldecode(file("${path.module}/components.yaml"))

  kfp_namespace     = var.kfp_runner.namespace
  kourier_namespace = local.components["kourier"].namespace

  # Feast's Redis connection format, read by feature_store.cluster.yaml as SKIFF_REDIS.
  redis_dev_host = "skiff-redis.${var.namespace}.svc.cluster.local"
  redis_enabled  = var.redis_mode != "none"

  # Knative Serving's config-features: Knative's webhook refuses a Service whose pod spec uses a field
  # that is off here. What skiff's rendered InferenceServices use (serving/deploy/isvc.py):
  # - a pod-level securityContext (runAsUser/runAsGroup/fsGroup 10001, seccomp) on every predictor and
  #   transformer: podspec-securitycontext;
  # - nodeSelector and tolerations on every GPU predictor (the GPU pool's label and taint):
  #   podspec-nodeselector, podspec-tolerations;
  # - an emptyDir /tmp (the root file system is read-only): podspec-volumes-emptydir, on by default,
  #   kept explicit so an upstream default change cannot turn it off;
  # - affinity for spreading replicas across nodes where an environment adds it: podspec-affinity.
  knative_features = {
    "kubernetes.podspec-securitycontext"  = "enabled"
    "kubernetes.podspec-nodeselector"     = "enabled"
    "kubernetes.podspec-tolerations"      = "enabled"
    "kubernetes.podspec-affinity"         = "enabled"
    "kubernetes.podspec-volumes-emptydir" = "enabled"
  }

  # The KnativeServing resource's spec (charts/knative-serving), which the operator turns into
  # Knative Serving with Kourier and these ConfigMaps.
  knative_serving = {
    version = local.components["knative-serving"].version
    ingress = {
      kourier = {
        enabled      = true
        service-type = var.kourier_service_type
      }
    }
    config = {
      network = {
        "ingress-class" = "kourier.ingress.networking.knative.dev"
      }
      domain = {
        (var.ingress_domain) = ""
      }
      features = local.knative_features
      deployment = {
        # Knative resolves image tags to digests through the registry; its controller has no pull
        # credentials for a private ECR/ACR, so skiff's registry is skipped (the tags are immutable).
        "registries-skipping-tag-resolving" = join(",", ["kind.local", "ko.local", "dev.local", split("/", var.image_registry)[0]])
      }
    }
  }

  gpu_scheduling = {
    nodeSelector = var.gpu_node_selector
    tolerations  = var.gpu_tolerations
  }

  chart_values = {
    "cert-manager" = {
      crds = {
        enabled = true
        keep    = true
      }
    }

    "knative-operator" = {}

    "kserve-crd" = {}

    "kserve-resources" = {
      kserve = {
        controller = {
          deploymentMode = var.kserve_deployment_mode
          gateway = {
            domain = var.ingress_domain
            # Kourier, not Istio, is the networking layer: no VirtualServices, and in-cluster calls go
            # through Kourier's internal service.
            disableIstioVirtualHost = true
            localGateway = {
              gatewayService = "kourier-internal.${local.kourier_namespace}.svc.cluster.local"
            }
          }
        }
      }
    }

    # Release "prometheus" in namespace "monitoring": helm/skiff labels its PodMonitor and PrometheusRule
    # release=prometheus, and the environment files reach prometheus-operated.monitoring.svc.
    "kube-prometheus-stack" = {
      prometheus = {
        prometheusSpec = {
          # The chart's default selectors pick PodMonitors and PrometheusRules of every namespace by the
          # release label, which skiff's carry.
          retention = var.prometheus_retention
        }
      }
    }

    "argo-cd" = {
      crds = {
        install = true
        keep    = true
      }
      # Sign-in through the admin account or your SSO (configs.cm); the bundled Dex is not used.
      dex = {
        enabled = false
      }
    }

    # Only on the GPU pool: the upstream default node affinity requires labels that node feature discovery
    # or the GPU operator set (feature.node.kubernetes.io/pci-10de.present, nvidia.com/gpu.present), which
    # the aws-eks and azure-aks pools do not have. The affinity below requires the labels the pools set
    # instead (a list in Helm values replaces the chart's list), and the tolerations are the pool's taint.
    "nvidia-device-plugin" = {
      affinity = {
        nodeAffinity = {
          requiredDuringSchedulingIgnoredDuringExecution = {
            nodeSelectorTerms = [{
              matchExpressions = [for k in sort(keys(var.gpu_node_selector)) : {
                key      = k
                operator = "In"
                values   = [var.gpu_node_selector[k]]
              }]
            }]
          }
        }
      }
      tolerations = var.gpu_tolerations
    }

    "cluster-autoscaler" = {
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
      extraArgs = merge({
        "balance-similar-node-groups"   = "true"
        "skip-nodes-with-system-pods"   = "false"
        "expander"                      = "least-waste"
        "scale-down-unneeded-time"      = "10m"
        "scale-down-delay-after-add"    = "10m"
        "skip-nodes-with-local-storage" = "false"
      }, var.cluster_autoscaler_extra_args)
    }
  }

  # Values the skiff platform chart (helm/skiff) receives from the cluster module and this module.
  skiff_values = {
    cloud = var.cloud
    storage = {
      root = var.skiff_root
    }
    image = {
      registry = var.image_registry
    }
    settings = {
      kfpHost = var.install_kubeflow_pipelines ? "http://ml-pipeline.${local.kfp_namespace}.svc.cluster.local:8888" : ""
      # KFP standalone: runs are submitted without a namespace and execute in KFP's own, where the chart
      # writes the settings ConfigMap too (this module creates the pipeline account and Secrets there).
      kfpNamespace      = ""
      pipelineNamespace = var.install_kubeflow_pipelines ? local.kfp_namespace : ""
    }
    serviceAccounts = {
      for k, sa in var.service_accounts : k => {
        create      = true
        name        = sa.name
        annotations = sa.annotations
        podLabels   = sa.pod_labels
      }
    }
    rbac = {
      pipeline = {
        secrets = local.redis_enabled ? [var.redis_secret_name] : []
      }
    }
    featureServer = {
      enabled = local.redis_enabled
      redis = {
        secretName = local.redis_enabled ? var.redis_secret_name : ""
        secretKey  = "connection-string"
      }
    }
    networkPolicy = {
      # Kourier's gateway and Knative's activator reach the predictors and transformers.
      ingressNamespaces    = [local.kourier_namespace, local.components["knative-serving"].namespace]
      monitoringNamespaces = [local.components["kube-prometheus-stack"].namespace]
    }
    gpu = local.gpu_scheduling
  }

  # The Argo CD Applications that install Kubeflow Pipelines (charts/kubeflow-pipelines).
  kfp_values = {
    repoURL         = local.components["kubeflow-pipelines"].repository
    targetRevision  = local.components["kubeflow-pipelines"].version
    namespace       = local.kfp_namespace
    argocdNamespace = local.components["argo-cd"].namespace
    runner = {
      name        = var.kfp_runner.name
      annotations = var.kfp_runner.annotations
    }
  }
}
