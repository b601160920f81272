"""The inference runtime: skiff's KServe predictor and Feast transformer, the request inputs they check,
and the model server that serves them (V1, V2 REST and gRPC)."""
