"""Streaming ingestion: MQTT sensor messages into lake runs (``skiff stream``)."""
