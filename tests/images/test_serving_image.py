"""The model server from the skiff image, run the way a ServingRuntime runs it: ``python -m serving predictor``
as uid 10001 on a read-only root file system, the registry mounted read-only. Its V1 and V2 answers equal
the in-process model's, and its Prometheus ``/metrics`` count the requests by version. The transformer entry
point starts from the same image against the Feast online store in Redis on the host (``--network=host``)
and answers entity keys with the model's prediction on the features it looked up; the Feast feature server
(``feast serve``, as the chart runs it) answers the same features from the same image."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression

from skiff.config import load_settings
from skiff.registry import ModelRegistry
from tests.conftest import REPO, require_service
from tests.images.conftest import HOST_NET, READ_ONLY, logs
from tests.integration.test_serving import (
    FEATURES,
    THRESHOLD,
    expected,
    feast_world,
    frame,
    free_port,
    pipeline,
    register,
    v2_inputs,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.images]


def readable_by_all(root: Path) -> None:
    """The containers run as uid 10001: let them read (not write) what the host wrote."""
    for d, _, files in os.walk(root):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(Path(d) / f, 0o644)


@pytest.fixture(scope="module")
def world():
    require_service("Redis", 6379)
    root = Path(tempfile.mkdtemp(prefix="skiff-serving-image-"))
    mp = pytest.MonkeyPatch()
    mp.setenv("SKIFF_REDIS", "127.0.0.1:6379")
    tag = f"{uuid.uuid4().hex[:8]}-"
    settings = load_settings(root=str(root), feature_store_yaml="feature_store.redis.yaml")
    store, service, accounts = feast_world(root, "feature_store.redis.yaml", tag=tag)
    train = frame(300, seed=11)
    y = (train.usage / 3 + (train.plan == "pro") * 2 - train.annual) > 3
    pipe = pipeline(LogisticRegression()).fit(train, y)
    register(ModelRegistry.from_settings(settings), "accounts", pipe, train, root, problem_type="binary",
             classes=[False, True], threshold=THRESHOLD, feature_service=service)
    readable_by_all(root)
    yield {"root": root, "pipe": pipe, "accounts": accounts, "tag": tag, "rows": frame(12, seed=12),
           "service": service}
    mp.undo()
    shutil.rmtree(root, ignore_errors=True)


def wait_ready(engine, name: str, url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        running = engine.run("inspect", "-f", "{{.State.Running}}", name, check=False).stdout.strip()
        assert running == "true", f"container {name} exited:\n{logs(engine, name)[-4000:]}"
        time.sleep(0.5)
    pytest.fail(f"{url} not ready after {timeout:.0f} s:\n{logs(engine, name)[-4000:]}")


def _serving_args(root: Path) -> tuple[str, ...]:
    return READ_ONLY + HOST_NET + ("-v", f"{root}:{root}:ro", "-e", f"SKIFF_ROOT={root}",
                                   "-e", "OMP_NUM_THREADS=1")


def test_predictor_serves_v1_v2_and_metrics_from_a_read_only_container(engine, image, container, world):
    port = free_port()
    name = container(image("skiff"), "python", "-m", "serving", "predictor", "accounts", "--version", "1",
                     "--host", "127.0.0.1", "--port", str(port), args=_serving_args(world["root"]))
    url = f"http://127.0.0.1:{port}"
    wait_ready(engine, name, f"{url}/v2/models/accounts/ready")
    rows = world["rows"]
    labels, p = expected(world["pipe"], rows)

    v1 = httpx.post(f"{url}/v1/models/accounts:predict",
                    json={"instances": [list(r) for r in rows[FEATURES].itertuples(index=False)]}, timeout=30)
    assert v1.status_code == 200, v1.text
    assert v1.json()["model_version"] == "1"
    assert [x["label"] for x in v1.json()["predictions"]] == labels
    np.testing.assert_allclose([x["probability"] for x in v1.json()["predictions"]], p, atol=1e-6)

    v2 = httpx.post(f"{url}/v2/models/accounts/infer", json={"id": "img-1", "inputs": v2_inputs(rows)}, timeout=30)
    assert v2.status_code == 200, v2.text
    out = {o["name"]: o for o in v2.json()["outputs"]}
    assert v2.json()["id"] == "img-1" and out["label"]["data"] == labels
    np.testing.assert_allclose(out["probability"]["data"], p, atol=1e-6)

    bad = httpx.post(f"{url}/v1/models/accounts:predict", json={"instances": [{"plan": "pro"}]}, timeout=30)
    assert bad.status_code == 400, bad.text

    metrics = httpx.get(f"{url}/metrics", timeout=10)
    assert metrics.status_code == 200
    counts = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for fam in text_string_to_metric_families(metrics.text) for s in fam.samples}
    assert counts[("skiff_requests_total", (("model", "accounts"), ("status", "200"), ("version", "1")))] == 2
    assert counts[("skiff_requests_total", (("model", "accounts"), ("status", "400"), ("version", "1")))] == 1
    # it wrote nothing but to /tmp: the root file system and the registry mount are read-only
    assert engine.run("exec", name, "sh", "-c", "touch /app/x", check=False).returncode != 0


def test_transformer_entry_point_reads_features_from_redis_on_the_host(engine, image, container, world):
    port = free_port()
    args = _serving_args(world["root"]) + ("-e", "SKIFF_REDIS=127.0.0.1:6379",
                                           "-e", "SKIFF_FEATURE_STORE_YAML=feature_store.redis.yaml")
    name = container(image("skiff"), "python", "-m", "serving", "transformer", "--model", "accounts",
                     "--version", "1", "--host", "127.0.0.1", "--port", str(port), args=args)
    url = f"http://127.0.0.1:{port}"
    wait_ready(engine, name, f"{url}/v2/models/accounts/ready", timeout=180)
    keys = [f"{world['tag']}acct-2", f"{world['tag']}acct-9"]
    labels, p = expected(world["pipe"], world["accounts"].loc[keys, FEATURES])
    r = httpx.post(f"{url}/v1/models/accounts:predict", json={"instances": [{"account_id": k} for k in keys]},
                   timeout=30)
    assert r.status_code == 200, r.text + logs(engine, name)[-2000:]
    assert [x["label"] for x in r.json()["predictions"]] == labels
    np.testing.assert_allclose([x["probability"] for x in r.json()["predictions"]], p, atol=1e-6)
    gone = httpx.post(f"{url}/v1/models/accounts:predict",
                      json={"instances": [{"account_id": f"{world['tag']}nobody"}]}, timeout=30)
    assert gone.status_code == 404


def test_feast_feature_server_serves_the_online_features_from_the_image(engine, image, container, world):
    repo = Path(tempfile.mkdtemp(prefix="skiff-feast-repo-"))
    try:  # the chart's layout: the Feast config from a ConfigMap at /etc/feast, read-only
        shutil.copy(REPO / "feature_repo" / "feature_store.redis.yaml", repo / "feature_store.yaml")
        readable_by_all(repo)
        port = free_port()
        args = _serving_args(world["root"]) + ("-v", f"{repo}:/etc/feast:ro", "-e", "HOME=/tmp",
                                               "-e", f"SKIFF_FEAST_DIR={world['root'] / 'feast'}",
                                               "-e", "SKIFF_REDIS=127.0.0.1:6379")
        name = container(image("skiff"), "feast", "--chdir", "/etc/feast", "serve", "--host", "127.0.0.1",
                         "--port", str(port), "--workers", "1", "--no-access-log", args=args)
        url = f"http://127.0.0.1:{port}"
        wait_ready(engine, name, f"{url}/health", timeout=180)
        keys = [f"{world['tag']}acct-4", f"{world['tag']}acct-17"]
        r = httpx.post(f"{url}/get-online-features", timeout=30,
                       json={"feature_service": world["service"], "entities": {"account_id": keys}})
        assert r.status_code == 200, r.text + logs(engine, name)[-2000:]
        body = r.json()
        columns = dict(zip(body["metadata"]["feature_names"], body["results"], strict=True))
        assert columns["account_id"]["values"] == keys
        want = world["accounts"].loc[keys]
        assert columns["seats"]["values"] == want["seats"].tolist()
        np.testing.assert_allclose(columns["usage"]["values"], want["usage"].to_numpy(), atol=1e-9)
    finally:
        shutil.rmtree(repo, ignore_errors=True)
