terraform {
  # Language features are kept to what Terraform 1.0 understands (no optional() attributes, no
  # preconditions, no cross-variable validation), so any 1.x release applies this module.
  required_version = ">= 1.0.0, < 2.0.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.80 knows the AL2023 NVIDIA AMI type and EKS access entries; 6.x changes resource schemas.
      version = ">= 5.80.0, < 6.0.0"
    }
    tls = {
      source  = "hashicorp/tls"
      version = ">= 4.0.0, < 5.0.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.5.0, < 4.0.0"
    }
  }
}
