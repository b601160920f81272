"""The ingest step: sources → cleansed, typed Parquet partitions in the lake (see logic.py)."""
