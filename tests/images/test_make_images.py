"""``make images`` and ``make images-push REGISTRY=...`` as a platform team runs them: the Makefile builds
the image components/_image.py names with the engine it is given, tags it for the registry and pushes it
to a real registry (Debian's docker-registry, the CNCF distribution registry, on 127.0.0.1); the registry
then lists the tag. Without REGISTRY the push target stops before building anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from skiff import __version__
from tests.conftest import REPO
from tests.images import harness
from tests.integration.test_serving import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.images]

REGISTRY_CONFIG = """\
version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{port}
"""


def test_images_push_without_a_registry_is_a_usage_error_before_any_build():
    proc = subprocess.run(["make", "-s", "images-push", "ENGINE=false"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0 and "usage: make images-push REGISTRY=" in proc.stderr


@pytest.fixture
def registry():
    binary = shutil.which("docker-registry") or shutil.which("registry")
    if not binary:
        pytest.skip("no container registry binary (apt-get install docker-registry)")
    root = Path(tempfile.mkdtemp(prefix="skiff-registry-"))
    port = free_port()
    (root / "config.yml").write_text(REGISTRY_CONFIG.format(root=root / "data", port=port))
    proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, "the registry did not start"
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def test_make_images_push_builds_tags_and_pushes_to_the_registry(engine, base, registry, tmp_path):
    env = {**os.environ, **engine.env}
    ca = harness.extra_ca_bundle(tmp_path / "ca.pem")
    make = ["make", "-s", "images-push", "IMAGES_ONLY=skiff", f"ENGINE={engine.cli}", f"BASE_IMAGE={base}",
            "IMAGE_BUILD_FLAGS=--network=host", f"REGISTRY={registry}/acme", *([f"EXTRA_CA={ca}"] if ca else [])]
    proc = subprocess.run(make, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"pushing {registry}/acme/skiff:{__version__}" in proc.stdout
    tags = httpx.get(f"http://{registry}/v2/acme/skiff/tags/list", timeout=10).json()
    assert tags == {"name": "acme/skiff", "tags": [__version__]}
    engine.run("rmi", f"{registry}/acme/skiff:{__version__}", check=False)
