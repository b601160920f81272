terraform {
  required_version = ">= 1.0.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.80.0, < 6.0.0"
    }
    tls = {
      source  = "hashicorp/tls"
      version = ">= 4.0.0, < 5.0.0"
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

  # Remote state in S3 with a DynamoDB lock table. The bucket, region and table are given at init
  # time, so this file names no account: terraform init -backend-config=backend.hcl
  # (see backend.hcl.example).
  backend "s3" {
    key     = "skiff/eks/terraform.tfstate"
    encrypt = true
  }
}
