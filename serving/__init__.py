"""KServe serving for skiff, in three domains: ``serving.runtime`` (the predictor, the Feast transformer
and the model server), ``serving.deploy`` (GitOps environment files and the KServe manifests rendered
from them) and ``serving.rollout`` (canary rollouts, the local canary router). ``python -m serving``
is the containers' entry point."""
