"""AWS for the cloud tests: moto in server mode, a real HTTP AWS API emulator on 127.0.0.1.

One moto server per test session runs as a subprocess (``python -m moto.server``) on a free port; boto3
reaches it through ``AWS_ENDPOINT_URL``, boto3's own standard variable, exactly as skiff's code is used
against AWS (no in-process patching). Each test starts from an empty emulator (``/moto-api/reset``) with
fake static credentials in the environment and no profile or web identity that could reach a real account.
IAM authorization is off unless a test turns it on with :func:`enforce_iam` (moto then checks each
request's signature and the caller's IAM policies, as AWS does).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_until_ready

REGION = "us-east-1"
#: moto's default account id
ACCOUNT = "123456789012"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("moto.server", reason="moto[server] is a dev dependency")
    port = _free_port()
    log = Path(tmp_path_factory.mktemp("moto")) / "moto.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/moto-api/", proc, timeout=60, log_path=log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """An empty emulator, and an environment whose boto3 chain reaches only it."""
    httpx.post(f"{moto_url}/moto-api/reset").raise_for_status()
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    # no shared config or credentials file of the machine's user
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield moto_url
    httpx.post(f"{moto_url}/moto-api/reset-auth", content=b"inf").raise_for_status()


def enforce_iam(moto_url: str) -> None:
    """From now on moto authenticates and authorizes every request with IAM (until the test ends)."""
    httpx.post(f"{moto_url}/moto-api/reset-auth", content=b"0").raise_for_status()


def boto3_session(**kwargs: str):  # noqa: ANN201 - boto3 ships no types
    import boto3

    return boto3.Session(region_name=REGION, **kwargs)
