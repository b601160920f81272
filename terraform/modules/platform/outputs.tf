output "namespace" {
  description = "Namespace the skiff charts were installed into."
  value       = kubernetes_namespace_v1.skiff.metadata[0].name
}

output "kfp_namespace" {
  description = "Namespace Kubeflow Pipelines runs in (pipeline pods included), or null when it is not installed."
  value       = local.install_kfp ? local.kfp_namespace : null
}

output "kfp_host" {
  description = "In-cluster endpoint of the KFP API (kfp_host in skiff.yaml), or null when KFP is not installed. From outside: kubectl -n kubeflow port-forward svc/ml-pipeline 8888."
  value       = local.install_kfp ? "http://ml-pipeline.${local.kfp_namespace}.svc.cluster.local:8888" : null
}

output "ingress_domain" {
  description = "DNS domain of the InferenceServices (Knative config-domain): point a wildcard record *.<domain> at the Kourier gateway's load balancer (kubectl -n kourier-system get svc kourier)."
  value       = var.ingress_domain
}

output "redis_secret_name" {
  description = "Secret (key connection-string) holding the Redis connection in the skiff and KFP namespaces, or null when redis_mode is none."
  value       = local.redis_enabled ? var.redis_secret_name : null
}

output "components" {
  description = "What the platform installs, by component: chart, repository, version and namespace (components.yaml)."
  value       = local.components
}

output "releases" {
  description = "Installed Helm releases, by name: chart version (or path for the local charts) and status."
  value = merge(
    {
      for r in concat(
        [helm_release.cert_manager, helm_release.kserve_crd, helm_release.kserve, helm_release.skiff],
        helm_release.knative_operator,
        helm_release.knative_serving,
        helm_release.kube_prometheus_stack,
        helm_release.argo_cd,
        helm_release.kubeflow_pipelines,
        helm_release.nvidia_device_plugin,
        helm_release.cluster_autoscaler,
        helm_release.redis_dev,
      ) : r.name => { version = r.version, status = r.status }
    },
    { for k, r in helm_release.skiff_model : k => { version = r.version, status = r.status } },
  )
}

output "skiff_values" {
  description = "Values this module passes to the skiff platform chart (before skiff_values overrides): the contract between the cluster modules and helm/skiff."
  value       = local.skiff_values
}
