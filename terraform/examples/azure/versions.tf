terraform {
  required_version = ">= 1.0.0, < 2.0.0"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 4.9.0, < 5.0.0"
    }
    helm = {
      source  = "hashicorp/helm"
      version = ">= 2.12.0, < 3.0.0"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.23.0, < 3.0.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.5.0, < 4.0.0"
    }
  }

  # Remote state in an Azure Storage blob (leases lock it). The account is given at init time, so
  # this file names no subscription: terraform init -backend-config=backend.hcl
  # (see backend.hcl.example).
  backend "azurerm" {
    key = "skiff/aks.terraform.tfstate"
  }
}
