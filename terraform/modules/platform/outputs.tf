output "namespace" {
  description = "Namespace the skiff charts were installed into."
  value       = helm_release.skiff.namespace
}

output "releases" {
  description = "Installed Helm releases, by name: chart version (or path for the local charts) and status."
  value = merge(
    {
      for r in concat(
        [helm_release.cert_manager, helm_release.kserve_crd, helm_release.kserve, helm_release.skiff],
        helm_release.nvidia_device_plugin,
        helm_release.cluster_autoscaler,
      ) : r.name => { version = r.version, status = r.status }
    },
    { for k, r in helm_release.skiff_model : k => { version = r.version, status = r.status } },
  )
}

output "skiff_values" {
  description = "Values this module passes to the skiff platform chart (before skiff_values overrides): the contract between the cluster modules and helm/skiff."
  value       = local.skiff_values
}
