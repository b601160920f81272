# The GPU pool's scheduling contract, from variables only: the taint every GPU workload tolerates
# (the pool's node_taints spell the same taint).

locals {
  # The GPU taint every GPU workload tolerates (KFP GPU steps, KServe GPU predictors).
  gpu_taint = {
    key    = "nvidia.com/gpu"
    value  = "present"
    effect = "NoSchedule"
  }
}
