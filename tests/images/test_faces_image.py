"""``skiff stream`` and ``skiff api`` start from the skiff image, as uid 10001 on a read-only root with the
skiff root a mounted volume: the stream consumer lands MQTT messages from the host's Mosquitto in the lake,
and the API answers /healthz and an authenticated route with a hashed token from the environment."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sklearn.dummy import DummyClassifier

from skiff.api.auth import ADMIN_ENV, hash_token
from skiff.lake import Lake
from skiff.registry import ModelRegistry
from skiff.storage import Store
from tests.conftest import require_service
from tests.images.conftest import HOST_NET, READ_ONLY, logs
from tests.integration.test_serving import free_port
from tests.integration.test_stream_mqtt import SPEC, good, publish

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.images]


@pytest.fixture
def shared_root():
    """A folder the container's uid may write (the host test reads what it wrote)."""
    root = Path(tempfile.mkdtemp(prefix="skiff-faces-image-"))
    os.chmod(root, 0o777)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_skiff_stream_lands_mqtt_messages_in_the_lake(engine, image, shared_root):
    require_service("Mosquitto", 1883)
    spec = shared_root / "sensors.yaml"
    spec.write_text(json.dumps(SPEC))
    topic = f"skiff-image-test/{uuid.uuid4().hex}/telemetry"
    name = f"skiff-test-stream-{uuid.uuid4().hex[:6]}"
    args = READ_ONLY + HOST_NET + ("--name", name, "-v", f"{shared_root}:{shared_root}")
    engine.run("run", "-d", *args, image("skiff"), "skiff", "--root", str(shared_root / "root"), "stream",
               "--spec", str(spec), "--topic", topic, "--max-messages", "60", "--batch-rows", "20",
               "--client-id", f"img-{uuid.uuid4().hex[:6]}", "--duration", "60", "--session-expiry", "120", "--json")
    try:
        deadline = time.monotonic() + 90
        while True:  # publish until the consumer, once subscribed, has taken its 60 messages and exited
            publish(lambda i: topic, [good(i) for i in range(60)])
            state = engine.run("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", name).stdout.split()
            if state[0] == "false":
                break
            assert time.monotonic() < deadline, f"skiff stream did not stop:\n{logs(engine, name)[-3000:]}"
            time.sleep(2)
        out = engine.run("logs", name).stdout
        assert state[1] == "0", logs(engine, name)[-3000:]
        summary = json.loads(out[out.index("{"):])
        assert summary["counts"]["messages"] == 60
        assert summary["counts"]["accepted"] + summary["counts"]["duplicates"] == 60
        assert Lake(Store(str(shared_root / "root" / "lake"))).all_runs("sensors")
    finally:
        engine.run("rm", "-f", name, check=False)


def test_skiff_api_answers_healthz_and_an_authenticated_route(engine, image, container, shared_root):
    root = shared_root / "root"
    ModelRegistry(Store(str(root / "models"))).register("churn", DummyClassifier().fit([[0], [1]], [0, 1]),
                                                        {"gate": {"promote": True, "reason": "first"}})
    envs = shared_root / "environments"
    envs.mkdir()
    for d, _, files in os.walk(shared_root):
        os.chmod(d, 0o777)
        for f in files:
            os.chmod(Path(d) / f, 0o666)
    token = f"image-test-{uuid.uuid4().hex}"
    port = free_port()
    args = READ_ONLY + HOST_NET + ("-v", f"{shared_root}:{shared_root}", "-e", f"SKIFF_ROOT={root}",
                                   "-e", f"{ADMIN_ENV}={hash_token(token)}")
    name = container(image("skiff"), "skiff", "api", "--port", str(port), "--environments", str(envs), args=args)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            health = httpx.get(f"{base}/healthz", timeout=2)
            break
        except httpx.HTTPError:
            running = engine.run("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
            assert running == "true" and time.monotonic() < deadline, logs(engine, name)[-3000:]
            time.sleep(0.5)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert httpx.get(f"{base}/api/v1/models", timeout=10).status_code == 401
    models = httpx.get(f"{base}/api/v1/models", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert models.status_code == 200, models.text
    assert models.json()[0]["name"] == "churn" and models.json()[0]["latest"] == 1
    assert token not in logs(engine, name)  # the token never reaches the log
