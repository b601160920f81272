"""The container images the components run in on a cluster: one tag, one place, from the version."""

from __future__ import annotations

import os

from skiff import __version__

__all__ = ["BASE_IMAGE", "TFDV_IMAGE", "GPU_IMAGE", "REGISTRY"]

#: Registry prefix; platform teams point it at their ECR/ACR with SKIFF_IMAGE_REGISTRY at compile time.
REGISTRY = os.environ.get("SKIFF_IMAGE_REGISTRY", "ghcr.io/skiff-ml")
_TAG = __version__.replace("+", "-")

#: The project venv's image: ingest, features, train, evaluate, register.
BASE_IMAGE = f"{REGISTRY}/skiff:{_TAG}"
#: The validation step's own image (TFDV pins clash with the base image).
TFDV_IMAGE = f"{REGISTRY}/skiff-tfdv:{_TAG}"
#: GPU training image (TensorFlow with CUDA).
GPU_IMAGE = f"{REGISTRY}/skiff-gpu:{_TAG}"
