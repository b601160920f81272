# Redis for Feast's online store. The connection (Feast's format: host:port,ssl=...,password=...) is written
# to one Secret, named var.redis_secret_name with the key connection-string, in the skiff namespace (the
# feature server) and in the KFP namespace (pipeline steps that materialize features read it there, since
# KFP runs them in its own namespace).
#
# managed:    the cluster module's ElastiCache replication group / Azure Cache for Redis (TLS, password).
# in-cluster: one Redis pod (charts/redis-dev) with a generated password and no persistence: development
#             only; the online store is rebuilt by the next materialization.

locals {
  # Terraform 1.0 has no preconditions: tobool() of a sentence fails the plan with that sentence.
  redis_input_given = var.redis_mode != "managed" || var.redis != null ? true : tobool("redis_mode managed needs the redis input: pass the cluster module's redis output.")

  # From configuration only, so for_each's keys are known at plan time (the namespaces are created first:
  # depends_on below).
  redis_namespaces = local.redis_enabled ? concat([var.namespace], local.install_kfp ? [local.kfp_namespace] : []) : []

  redis_connection = var.redis_mode == "managed" && local.redis_input_given ? {
    host     = var.redis.host
    port     = var.redis.port
    ssl      = var.redis.ssl
    password = var.redis.password
    } : {
    host     = local.redis_dev_host
    port     = 6379
    ssl      = false
    password = var.redis_mode == "in-cluster" ? random_password.redis_dev[0].result : ""
  }
}

resource "random_password" "redis_dev" {
  count = var.redis_mode == "in-cluster" ? 1 : 0

  length  = 32
  special = false
}

resource "kubernetes_secret_v1" "redis" {
  for_each = toset(local.redis_namespaces)

  metadata {
    name      = var.redis_secret_name
    namespace = each.value
    labels = {
      "app.kubernetes.io/part-of" = "skiff"
    }
  }

  depends_on = [kubernetes_namespace_v1.skiff, kubernetes_namespace_v1.kfp]

  data = {
    "connection-string" = "${local.redis_connection.host}:${local.redis_connection.port},ssl=${local.redis_connection.ssl ? "true" : "false"},password=${local.redis_connection.password}"
    password            = local.redis_connection.password
  }
}

resource "helm_release" "redis_dev" {
  count = var.redis_mode == "in-cluster" ? 1 : 0

  name      = "skiff-redis"
  chart     = "${path.module}/charts/redis-dev"
  namespace = kubernetes_namespace_v1.skiff.metadata[0].name
  atomic    = true
  timeout   = var.helm_timeout_seconds

  values = [yamlencode({
    image            = local.components["redis-dev"].image
    passwordSecret   = var.redis_secret_name
    clientNamespaces = local.redis_namespaces
  })]

  depends_on = [kubernetes_secret_v1.redis]
}
