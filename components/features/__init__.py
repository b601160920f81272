"""The features step: Feast definitions from the spec, the offline source, apply, materialize, retrieval."""
