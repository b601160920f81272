"""The skiff-gpu image builds and imports TensorFlow (with CUDA's libraries from PyPI) and the package.

Opt-in (SKIFF_TEST_GPU_IMAGE=1): tensorflow[and-cuda] puts several GB of CUDA wheels into the image, so a
cold build downloads and unpacks them (measured in docs/tasks/images.md) and the image is too big for
every `make test` run on a CI machine whose whole suite must stay under 30 minutes. CI here sets nothing;
the release workflow builds the image for real. No GPU is needed: TensorFlow imports without one.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.images.conftest import READ_ONLY, run_in

pytestmark = [
    pytest.mark.integration, pytest.mark.slow, pytest.mark.images,
    pytest.mark.skipif(os.environ.get("SKIFF_TEST_GPU_IMAGE") != "1",
                       reason="opt-in with SKIFF_TEST_GPU_IMAGE=1: the skiff-gpu image holds several GB of CUDA "
                              "wheels, too slow to build in every CI run (docs/tasks/images.md)"),
]

CHECK = """
import json, os
import tensorflow as tf
import skiff, components.train.logic, serving.runtime.server
print(json.dumps({"tf": tf.__version__, "cuda": tf.test.is_built_with_cuda(), "uid": os.getuid()}))
"""


def test_gpu_image_imports_tensorflow_built_with_cuda(engine, image):
    proc = run_in(engine, image("skiff-gpu"), "python", "-c", CHECK, args=READ_ONLY + ("--network=none",),
                  timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["tf"].startswith("2.") and out["cuda"] is True and out["uid"] == 10001
