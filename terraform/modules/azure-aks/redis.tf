# Feast's online store: Azure Cache for Redis, TLS 1.2 only (port 6380), no public network access: the
# cluster reaches it through a private endpoint in the VNet and the privatelink DNS zone linked to it.
# modules/platform writes the connection into the Kubernetes Secret the feature server and the pipeline
# steps read (redis output). Feast's Redis client authenticates with the access key (no Entra ID tokens).

resource "azurerm_subnet" "private_endpoints" {
  count = var.create_redis ? 1 : 0

  name                 = "snet-${var.name}-private-endpoints"
  resource_group_name  = azurerm_resource_group.this.name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = [cidrsubnet(var.vnet_cidr, 4, 1)]
}

# The private endpoint subnet gets its own NSG (no rules beyond Azure's defaults: VNet-internal traffic
# only), so nothing outside the VNet can be opened to it by a later rule on the nodes' NSG.
resource "azurerm_network_security_group" "private_endpoints" {
  count = var.create_redis ? 1 : 0

  name                = "nsg-${var.name}-private-endpoints"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name

  tags = local.tags
}

resource "azurerm_subnet_network_security_group_association" "private_endpoints" {
  count = var.create_redis ? 1 : 0

  subnet_id                 = azurerm_subnet.private_endpoints[0].id
  network_security_group_id = azurerm_network_security_group.private_endpoints[0].id
}

resource "azurerm_redis_cache" "this" {
  count = var.create_redis ? 1 : 0

  name                = "${local.compact_name}redis${local.suffix}"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  sku_name            = var.redis_sku_name
  family              = var.redis_sku_name == "Premium" ? "P" : "C"
  capacity            = var.redis_capacity
  redis_version       = "6"

  non_ssl_port_enabled          = false
  minimum_tls_version           = "1.2"
  public_network_access_enabled = false

  redis_configuration {
    authentication_enabled = true
  }

  tags = local.tags
}

resource "azurerm_private_dns_zone" "redis" {
  count = var.create_redis ? 1 : 0

  name                = "privatelink.redis.cache.windows.net"
  resource_group_name = azurerm_resource_group.this.name

  tags = local.tags
}

resource "azurerm_private_dns_zone_virtual_network_link" "redis" {
  count = var.create_redis ? 1 : 0

  name                  = "${var.name}-redis"
  resource_group_name   = azurerm_resource_group.this.name
  private_dns_zone_name = azurerm_private_dns_zone.redis[0].name
  virtual_network_id    = azurerm_virtual_network.this.id

  tags = local.tags
}

resource "azurerm_private_endpoint" "redis" {
  count = var.create_redis ? 1 : 0

  name                = "pe-${var.name}-redis"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  subnet_id           = azurerm_subnet.private_endpoints[0].id

  private_service_connection {
    name                           = "${var.name}-redis"
    private_connection_resource_id = azurerm_redis_cache.this[0].id
    subresource_names              = ["redisCache"]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "redis"
    private_dns_zone_ids = [azurerm_private_dns_zone.redis[0].id]
  }

  tags = local.tags
}
