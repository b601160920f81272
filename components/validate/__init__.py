"""The validation step: TFDV statistics, schema, anomalies and drift as a blocking gate."""
