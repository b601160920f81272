terraform {
  # Language features are kept to what Terraform 1.0 understands, so any 1.x release applies this
  # module. The helm provider is configured by the calling root module (see examples/).
  required_version = ">= 1.0.0, < 2.0.0"

  required_providers {
    helm = {
      source = "hashicorp/helm"
      # 3.x turns the provider's kubernetes block into an attribute; the examples use 2.x syntax.
      version = ">= 2.12.0, < 3.0.0"
    }
  }
}
