terraform {
  # Language features are kept to what Terraform 1.0 understands (no optional() attributes, no
  # preconditions, no cross-variable validation), so any 1.x release applies this module.
  required_version = ">= 1.0.0, < 2.0.0"

  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # 4.9 creates storage containers through Azure Resource Manager (storage_account_id), which
      # works with shared keys off and the account firewall closed; 5.x renames arguments.
      version = ">= 4.9.0, < 5.0.0"
    }
  }
}
