"""A recommender's InferenceService starts from what it renders, and nothing else: the predictor and the
transformer are run as KServe runs them — the ServingRuntime's command with the InferenceService's
arguments (plus what KServe appends), the rendered environment alone (Secret references resolved the way
the kubelet does, from a Secret holding the real Redis's connection string), in a working directory laid
out like the image's ``/app`` and with the emptyDir at ``/tmp``. A click through the transformer then
changes the next answer. Were a variable missing from the rendered objects (the registry, the online
store's config or its connection string), a container would not become ready and this test would fail."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from components.recommend.logic import GateDecision, register_recommender, train_recommender
from serving.deploy.gitops import EnvironmentConfig, ModelDeployment
from serving.deploy.isvc import RuntimeImages, build_inference_service, build_serving_runtime, to_dict
from skiff.cluster import REDIS_SECRET
from skiff.datagen_recs import RECS_SPEC
from skiff.datagen_recs import interactions as generate
from skiff.recommend.events import RecsConfig
from skiff.registry import ModelRegistry
from skiff.spec import parse_spec
from skiff.storage import Store
from tests.conftest import REPO, require_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IMAGES = RuntimeImages(predictor="ghcr.io/skiff-ml/skiff:0.1.0", gpu_predictor="ghcr.io/skiff-ml/skiff-gpu:0.1.0",
                       transformer="ghcr.io/skiff-ml/skiff:0.1.0")
#: the Secrets of the serving namespace, as the platform module writes them (here: the Redis on this machine)
SECRETS = {REDIS_SECRET.name: {REDIS_SECRET.key: "127.0.0.1:6379"}}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pod_env(container: dict, tmp: Path) -> dict[str, str]:
    """The container's environment as the kubelet gives it: values, and Secret keys resolved; the root on
    the pod's emptyDir (``/tmp/skiff``) moved under ``tmp``."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp)}
    for var in container["env"]:
        if "value" in var:
            value = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            value = SECRETS[ref["name"]][ref["key"]]  # a KeyError: a Secret the namespace does not have
        env[var["name"]] = str(tmp) + value[len("/tmp"):] if value.split("/")[:3] == ["", "tmp", "skiff"] else value
    return env


def _start(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", *argv], env=env, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT)


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()[-4000:]}"
        try:
            status = httpx.get(url, timeout=2).status_code
        except httpx.HTTPError:
            status = None
        if status == 200:
            return
        assert "failed to load" not in log.read_text(), log.read_text()[-4000:]
        time.sleep(0.5)
    pytest.fail(f"{url} not ready after {timeout:.0f} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    require_service("Redis", 6379)
    base = tmp_path_factory.mktemp("isvc-recs")
    registry = base / "bucket" / "models"  # stands for the object store the serving identity reads
    name = f"recs_{uuid.uuid4().hex[:8]}"
    frame = generate(400, 200, days=30, seed=21)
    train_recommender(frame, parse_spec(RECS_SPEC), RecsConfig(test_days=5, models=["als"],
                                                               als={"factors": 16, "iterations": 15}), base / "m")
    register_recommender(ModelRegistry(Store(str(registry))), name, base / "m",
                         GateDecision(metric="ndcg@10", challenger=0.1, champion=None, champion_version=None,
                                      margin=0.0, promote=True, reason="first"), dataset={"dataset": "shop_events"})
    meta = ModelRegistry(Store(str(registry))).get(name, 1).metadata
    env = EnvironmentConfig(name="prod", namespace="skiff", registry=str(registry), ingress_domain="example.com")
    isvc = to_dict(build_inference_service(env, ModelDeployment(name=name, version=1), meta,
                                           registry_uri=str(registry), images=IMAGES))
    runtime = to_dict(build_serving_runtime(env, "recommender", IMAGES))["spec"]["containers"][0]

    app = base / "app"  # the image's WORKDIR: the Feast repo and nothing else of the project
    shutil.copytree(REPO / "feature_repo", app / "feature_repo")
    procs: list[subprocess.Popen] = []
    ports = {"predictor": _port(), "transformer": _port()}
    try:
        model = isvc["spec"]["predictor"]["model"]
        # KServe: the runtime's command and arguments, then the InferenceService's model arguments
        argv = [*runtime["command"][2:], *runtime["args"], *model["args"]]
        argv[argv.index("--port") + 1] = str(ports["predictor"])
        argv[argv.index("--host") + 1] = "127.0.0.1"
        procs.append(_start(argv, _pod_env(model, base / "pod-p"), app, base / "predictor.log"))
        _wait_ready(f"http://127.0.0.1:{ports['predictor']}/v2/models/{name}/ready", procs[-1], base / "predictor.log")

        (tr,) = isvc["spec"]["transformer"]["containers"]
        # KServe appends the served name, the predictor's address and the port to a transformer's arguments
        argv = [*tr["command"][2:], *tr["args"], "--model_name", name,
                "--predictor_host", f"127.0.0.1:{ports['predictor']}", "--http_port", str(ports["transformer"]),
                "--host", "127.0.0.1"]
        procs.append(_start(argv, _pod_env(tr, base / "pod-t"), app, base / "transformer.log"))
        _wait_ready(f"http://127.0.0.1:{ports['transformer']}/v2/models/{name}/ready", procs[-1],
                    base / "transformer.log")
        heavy = frame.user_id.value_counts().index[0]
        liked = list(frame.loc[frame.user_id == heavy, "item_id"].value_counts().index[:3])
        yield {"name": name, "isvc": isvc, "liked": liked, "transformer": f"http://127.0.0.1:{ports['transformer']}"}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_both_containers_read_the_online_store_through_the_rendered_secret(served):
    spec = served["isvc"]["spec"]
    for container in (spec["predictor"]["model"], spec["transformer"]["containers"][0]):
        refs = [v["valueFrom"]["secretKeyRef"] for v in container["env"] if "valueFrom" in v]
        assert refs == [{"name": REDIS_SECRET.name, "key": REDIS_SECRET.key}]
    assert spec["transformer"]["containers"][0]["args"] == ["--model", served["name"], "--version", "1"]


def test_a_click_through_the_rendered_transformer_changes_the_next_answer(served):
    url, name = served["transformer"], served["name"]
    user = f"isvc-{uuid.uuid4().hex[:8]}"
    before = httpx.post(f"{url}/v1/models/{name}:predict", json={"instances": [{"user_id": user, "k": 10}]},
                        timeout=10).json()["predictions"][0]
    assert before["cold_start"]
    r = httpx.post(f"{url}/v1/models/{name}/events", timeout=10,
                   json={"events": [{"user_id": user, "item_id": i, "event_type": "click"} for i in served["liked"]]})
    assert r.status_code == 200, r.text
    after = httpx.post(f"{url}/v1/models/{name}:predict", json={"instances": [{"user_id": user, "k": 10}]},
                       timeout=10).json()["predictions"][0]
    assert not after["cold_start"] and after["items"] != before["items"]
