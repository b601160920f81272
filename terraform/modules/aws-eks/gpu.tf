# The GPU node group's scheduling contract, from variables only (so tests can evaluate it without a
# cloud): the taint every GPU workload tolerates, and what the cluster autoscaler needs to scale the
# group up from zero nodes.

locals {
  # The GPU taint every GPU workload tolerates (KFP GPU steps, KServe GPU predictors).
  gpu_taint = {
    key    = "nvidia.com/gpu"
    value  = "present"
    effect = "NoSchedule"
  }

  # GPUs per instance of each allowed GPU type: the cluster autoscaler needs the count to scale the
  # GPU group up from zero nodes (it cannot look at a node that does not exist yet).
  gpu_count_by_type = {
    "g4dn.xlarge"   = 1
    "g4dn.2xlarge"  = 1
    "g4dn.4xlarge"  = 1
    "g4dn.8xlarge"  = 1
    "g4dn.12xlarge" = 4
    "g5.xlarge"     = 1
    "g5.2xlarge"    = 1
    "g5.4xlarge"    = 1
    "g5.8xlarge"    = 1
    "g5.12xlarge"   = 4
    "g5.48xlarge"   = 8
    "g6.xlarge"     = 1
    "g6.2xlarge"    = 1
    "g6.4xlarge"    = 1
    "g6.8xlarge"    = 1
    "g6.12xlarge"   = 4
    "g6e.xlarge"    = 1
    "g6e.2xlarge"   = 1
    "g6e.12xlarge"  = 4
    "p4d.24xlarge"  = 8
    "p5.48xlarge"   = 8
  }

  # Bottlerocket keeps container images on its second volume; the AL2023 images on the root volume.
  gpu_data_device = length(regexall("^BOTTLEROCKET", var.gpu_ami_type)) > 0 ? "/dev/xvdb" : "/dev/xvda"

  # Node-template tags on the GPU group's Auto Scaling group: with no GPU node running, the cluster
  # autoscaler learns the labels, the taint and the GPU count of a would-be node from them.
  gpu_autoscaler_template_tags = merge(
    { for k, v in var.gpu_node_labels : "k8s.io/cluster-autoscaler/node-template/label/${k}" => v },
    {
      "k8s.io/cluster-autoscaler/node-template/label/skiff.io/node-pool"             = "gpu"
      "k8s.io/cluster-autoscaler/node-template/taint/${local.gpu_taint.key}"         = "${local.gpu_taint.value}:${local.gpu_taint.effect}"
      "k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu"             = tostring(lookup(local.gpu_count_by_type, var.gpu_instance_types[0], 1))
      "k8s.io/cluster-autoscaler/node-template/resources/ephemeral-storage"          = "${var.gpu_node_disk_size_gib}Gi"
      "k8s.io/cluster-autoscaler/node-template/label/eks.amazonaws.com/capacityType" = var.gpu_capacity_type
    },
  )
}
