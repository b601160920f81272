"""Deployment files: the GitOps environment folders (which version runs where, validated against the
registry) and the KServe manifests (InferenceServices, ServingRuntimes) rendered from them."""
