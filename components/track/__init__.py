"""The tracking step: an image or recommender run logged to MLflow after its register step."""
