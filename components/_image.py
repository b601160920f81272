"""The container images skiff runs in on a cluster: one tag, one place, from the version.

Every image reference (the pipeline IR, the predictor and transformer images of the InferenceServices the
CLI renders, ``make images`` and the image tests) comes from here; the Helm chart's ServingRuntimes and the
Terraform registries name the same images (tests/cluster/test_gitops_images.py holds them equal). An image's name is also its target in the root ``Dockerfile``, so
``docker build --target <name>`` builds the image named ``<registry>/<name>:<tag>``.
``python -m components._image`` prints ``<target> <reference>`` per line (read by the Makefile).
"""

from __future__ import annotations

import os

from skiff import __version__

__all__ = ["BASE_IMAGE", "TFDV_IMAGE", "GPU_IMAGE", "REGISTRY", "TAG", "IMAGES", "image_ref"]

#: Registry prefix; platform teams point it at their ECR/ACR with SKIFF_IMAGE_REGISTRY at compile time.
REGISTRY = os.environ.get("SKIFF_IMAGE_REGISTRY", "ghcr.io/skiff-ml")
#: The tag of every image: the package version (a local version's '+' is not allowed in a tag).
TAG = __version__.replace("+", "-")


def image_ref(name: str, registry: str | None = None, tag: str | None = None) -> str:
    """``<registry>/<name>:<tag>`` of one of :data:`IMAGES`' names (the default registry and tag unless given)."""
    if name not in _NAMES:
        raise ValueError(f"unknown image {name!r}; skiff's images are {', '.join(_NAMES)}")
    return f"{(registry if registry is not None else REGISTRY).rstrip('/')}/{name}:{tag or TAG}"


#: Image names (= Dockerfile targets), in build order: the TFDV image builds on the skiff image.
_NAMES = ("skiff", "skiff-tfdv", "skiff-gpu")

#: The project's image: every tabular step but validation, the model server (predictor and transformer),
#: the rollout job, ``skiff stream``, ``skiff api`` and the Feast feature server.
BASE_IMAGE = image_ref("skiff")
#: The validation step's image: the skiff image plus TFDV's own environment (its pins clash with skiff's).
TFDV_IMAGE = image_ref("skiff-tfdv")
#: GPU training and serving image (the skiff image's contents plus TensorFlow with CUDA).
GPU_IMAGE = image_ref("skiff-gpu")
#: Every image by name.
IMAGES = {"skiff": BASE_IMAGE, "skiff-tfdv": TFDV_IMAGE, "skiff-gpu": GPU_IMAGE}


if __name__ == "__main__":
    for _name, _ref in IMAGES.items():
        print(_name, _ref)
