"""KServe serving for skiff: predictor, Feast transformer, InferenceService builder, canary rollout."""
