"""The Docker side of `skiff images push --registry ecr`: a real Docker engine pushes a real image to a
real registry (Docker's distribution registry, Debian's ``docker-registry``) on 127.0.0.1, while the ECR
side (repositories, GetAuthorizationToken, DescribeImages) is moto's server. What this proves: the tag,
the push through the Docker SDK with the ECR login, the digest read back, the error path. What it does
not: ECR's own registry endpoint accepting the layers (nothing here serves it).

Needs a Docker engine (``DOCKER_HOST`` / the default socket, else a ``dockerd`` it starts) and the
``docker-registry`` binary; skips without them.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from skiff.cloud.aws.ecr import push_images
from skiff.cloud.aws.session import session
from skiff.errors import NotFoundError, SourceError
from tests.cloud.conftest import boto3_session
from tests.conftest import wait_until_ready

pytestmark = [pytest.mark.slow, pytest.mark.images]
docker = pytest.importorskip("docker", reason="the Docker SDK is a dev dependency")
TAG = "0.1.0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # docker.errors.DockerException, requests' connection errors
        return False


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    try:
        client = docker.from_env(timeout=10)
        if _answers(client):
            yield client
            return
    except docker.errors.DockerException:
        pass
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        pytest.skip("no Docker engine answers and none can be started here")
    # short paths: a unix socket path is limited to 108 bytes
    base = Path(f"/tmp/skiff-dockerd-{os.getpid()}")
    base.mkdir(exist_ok=True)
    sock = base / "docker.sock"
    log = (base / "dockerd.log").open("wb")
    proc = subprocess.Popen([dockerd, "--iptables=false", "--bridge=none", "--data-root", str(base / "data"),
                             "--exec-root", str(base / "exec"), "--pidfile", str(base / "docker.pid"),
                             "-H", f"unix://{sock}"], stdout=log, stderr=subprocess.STDOUT)
    client = None
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (base / "dockerd.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "dockerd did not answer within 60 s"
            if sock.exists():
                try:
                    client = docker.DockerClient(base_url=f"unix://{sock}", timeout=30)
                    if _answers(client):
                        break
                except docker.errors.DockerException:
                    pass
            time.sleep(0.5)
        yield client
    finally:
        if client is not None:
            client.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    binary = shutil.which("docker-registry") or shutil.which("registry")
    if binary is None:
        pytest.skip("no docker-registry binary (Debian: apt-get install docker-registry)")
    root = tmp_path_factory.mktemp("registry")
    port = _free_port()
    cfg = root / "config.yml"
    cfg.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
                   f"http:\n  addr: 127.0.0.1:{port}\n")
    log = root / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, "serve", str(cfg)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/v2/", proc, timeout=30, log_path=log)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def local_image(engine):
    """A one-file image made locally (``docker import``: no base image to pull)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = f"skiff push test {time.time_ns()}\n".encode()
        info = tarfile.TarInfo("skiff.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    ref = "localhost/skiff-push-test/skiff"
    engine.api.import_image_from_data(buf.getvalue(), repository=ref, tag=TAG)
    yield f"{ref}:{TAG}"
    engine.images.remove(f"{ref}:{TAG}", force=True)


def test_push_tags_and_pushes_with_the_ecr_login(aws, engine, registry, local_image):
    states, pushed = push_images(session(), {"skiff": local_image}, prefix="skiff-dev", tag=TAG, client=engine,
                                 registry=registry)
    assert [s.created for s in states] == [True]
    (p,) = pushed
    assert p.action == "pushed" and p.target == f"{registry}/skiff-dev/skiff:{TAG}"
    assert p.digest and p.digest.startswith("sha256:")
    # the registry holds the image under that tag, with the digest the engine reported
    r = httpx.head(f"http://{registry}/v2/skiff-dev/skiff/manifests/{TAG}", headers={"Accept": ", ".join([
        "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json"])})
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == p.digest
    # the ECR side: the repository the push needed exists in moto, scanned on push and immutable
    repo = boto3_session().client("ecr").describe_repositories(repositoryNames=["skiff-dev/skiff"])["repositories"][0]
    assert repo["imageTagMutability"] == "IMMUTABLE" and repo["imageScanningConfiguration"]["scanOnPush"]


def test_a_failed_push_and_a_missing_image_are_clear_errors(aws, engine, local_image):
    dead = f"127.0.0.1:{_free_port()}"
    with pytest.raises(SourceError, match="pushing .* failed"):
        push_images(session(), {"skiff": local_image}, prefix="skiff-dev", tag=TAG, client=engine, registry=dead)
    with pytest.raises(NotFoundError, match="make images"):
        push_images(session(), {"skiff": "localhost/skiff-push-test/absent:1"}, prefix="skiff-dev", tag=TAG,
                    client=engine, registry=dead)
