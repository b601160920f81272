"""The register step: an immutable model version with its metadata, schema, statistics and ONNX export."""
