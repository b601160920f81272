#!/usr/bin/env bash
# Render every environment of infra/environments into infra/rendered/<env> with `skiff render env`, and
# check that each folder builds with kustomize. Used by .github/workflows/gitops-render.yml.
set -euo pipefail
for dir in infra/environments/*/; do
  env=$(basename "$dir")
  # the versions are looked up in the registry the environment's cluster reads (environment.yaml's registry)
  registry=$(python -c "import sys; from serving.deploy.gitops import Environments; print(Environments().environment(sys.argv[1]).registry or '')" "$env")
  SKIFF_REGISTRY="${registry:-${SKIFF_REGISTRY:-}}" skiff render env "$env" -o "infra/rendered/$env"
  kubectl kustomize "infra/rendered/$env" > /dev/null
done
git status --short infra/rendered
