# Feast's online store: an ElastiCache (Redis OSS) replication group in the private subnets, one primary
# and one replica in different zones with automatic failover, TLS in transit, encrypted at rest with the
# data key, and a generated AUTH token. Only the cluster's nodes and pods (the EKS cluster security group)
# reach it. modules/platform writes the connection into the Kubernetes Secret the feature server and the
# pipeline steps read (redis output).

resource "aws_elasticache_subnet_group" "redis" {
  count = var.create_redis ? 1 : 0

  name       = "${var.name}-redis"
  subnet_ids = [for s in aws_subnet.private : s.id]

  tags = local.tags
}

resource "aws_security_group" "redis" {
  count = var.create_redis ? 1 : 0

  name        = "${var.name}-redis"
  description = "skiff Redis (Feast online store): TLS from the EKS cluster security group only"
  vpc_id      = aws_vpc.this.id

  tags = merge(local.tags, { Name = "${var.name}-redis" })
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_cluster" {
  count = var.create_redis ? 1 : 0

  security_group_id            = aws_security_group.redis[0].id
  description                  = "Redis over TLS from the EKS nodes and pods"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
}

resource "random_password" "redis" {
  count = var.create_redis ? 1 : 0

  # ElastiCache AUTH tokens: 16-128 printable characters without @, " or /.
  length           = 48
  special          = true
  override_special = "!&#$^<>-"
}

resource "aws_elasticache_replication_group" "redis" {
  count = var.create_redis ? 1 : 0

  replication_group_id = "${var.name}-feast"
  description          = "skiff ${var.name}: Feast online store"
  engine               = "redis"
  engine_version       = var.redis_engine_version
  node_type            = var.redis_node_type
  port                 = 6379
  num_cache_clusters   = 2
  parameter_group_name = "default.redis7"

  automatic_failover_enabled = true
  multi_az_enabled           = true

  subnet_group_name  = aws_elasticache_subnet_group.redis[0].name
  security_group_ids = [aws_security_group.redis[0].id]

  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.data.arn
  transit_encryption_enabled = true
  auth_token                 = random_password.redis[0].result

  snapshot_retention_limit   = 1
  auto_minor_version_upgrade = true
  apply_immediately          = false

  tags = local.tags
}
