"""Progressive delivery: the canary rollout controller (metrics sources, verdicts, traffic actuators,
the rollout store) and the local canary (two model servers behind a weighted router)."""
