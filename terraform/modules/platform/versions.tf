terraform {
  # Language features are kept to what Terraform 1.0 understands, so any 1.x release applies this
  # module. The helm and kubernetes providers are configured by the calling root module, from the cluster
  # module's outputs (see examples/): this module is the second phase of an apply.
  required_version = ">= 1.0.0, < 2.0.0"

  required_providers {
    helm = {
      source = "hashicorp/helm"
      # 3.x turns the provider's kubernetes block into an attribute; the examples use 2.x syntax.
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
}
