"""The recommender flavor behind the real model server, with its recent items in the real Redis online
store: top-k for a known user (V1 and V2), cold start, a live event that changes the next top-k, unknown
items ignored, and every bad request a 400 naming the field."""

import socket
import time
import uuid

import httpx
import pytest

from components.recommend.logic import GateDecision, register_recommender, train_recommender
from serving.runtime.server import start_local_server, stop_local_server
from skiff.datagen_recs import RECS_SPEC
from skiff.datagen_recs import interactions as generate
from skiff.recommend.events import RecsConfig
from skiff.registry import ModelRegistry
from skiff.spec import parse_spec
from skiff.storage import Store
from tests.conftest import require_service

pytestmark = pytest.mark.integration


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    require_service("Redis", 6379)
    root = tmp_path_factory.mktemp("recs") / "root"
    name = f"recs_{uuid.uuid4().hex[:8]}"
    frame = generate(400, 200, days=30, seed=11)
    config = RecsConfig(test_days=5, models=["als"], als={"factors": 16, "iterations": 15})
    out = root.parent / "model"
    train_recommender(frame, parse_spec(RECS_SPEC), config, out)
    decision = GateDecision(metric="ndcg@10", challenger=0.1, champion=None, champion_version=None, margin=0.0,
                            promote=True, reason="first")
    register_recommender(ModelRegistry(Store(str(root / "models"))), name, out, decision,
                         dataset={"dataset": "shop_events"})
    port = _port()
    proc = start_local_server(name, None, port, root=root, timeout_s=120,
                              extra_env={"SKIFF_REDIS": "127.0.0.1:6379",
                                         "SKIFF_FEATURE_STORE_YAML": "feature_store.redis.yaml"})
    try:
        yield {"url": f"http://127.0.0.1:{port}", "name": name, "frame": frame}
    finally:
        stop_local_server(proc)


def _predict(served, body):
    return httpx.post(f"{served['url']}/v1/models/{served['name']}:predict", json=body, timeout=10)


def test_known_user_top_k_excludes_seen_items(served):
    user = "u000001"
    seen = set(served["frame"].loc[served["frame"].user_id == user, "item_id"])
    r = _predict(served, {"instances": [{"user_id": user, "k": 5}]})
    assert r.status_code == 200, r.text
    pred = r.json()["predictions"][0]
    assert pred["user_id"] == user and len(pred["items"]) == 5 and not pred["cold_start"]
    assert not set(pred["items"]) & seen
    assert pred["scores"] == sorted(pred["scores"], reverse=True)
    with_seen = _predict(served, {"user_id": user, "k": 50, "exclude_seen": False}).json()["predictions"][0]
    assert set(with_seen["items"]) & seen  # the bare form is one instance; seen items may come back


def test_cold_start_gets_popular_items(served):
    counts = served["frame"].item_id.value_counts()
    r = _predict(served, {"instances": [{"user_id": f"new-{uuid.uuid4().hex}", "k": 3}]})
    pred = r.json()["predictions"][0]
    assert pred["cold_start"] is True and len(pred["items"]) == 3
    assert pred["items"][0] in set(counts.index[:10])


def test_v2_infer(served):
    body = {"inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [2], "data": ["u000002", "nobody-v2"]},
                       {"name": "k", "datatype": "INT64", "shape": [1], "data": [4]}]}
    r = httpx.post(f"{served['url']}/v2/models/{served['name']}/infer", json=body, timeout=10)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert out["items"]["shape"] == [2, 4] and out["scores"]["datatype"] == "FP64"
    assert out["count"]["data"] == [4, 4] and out["cold_start"]["data"] == [False, True]
    v1 = _predict(served, {"instances": [{"user_id": "u000002", "k": 4}]}).json()["predictions"][0]
    assert out["items"]["data"][:4] == v1["items"]


def test_a_click_changes_the_next_top_k_within_a_second(served):
    frame = served["frame"]
    user = f"live-{uuid.uuid4().hex[:8]}"  # a new user: cold start until the events arrive
    before = _predict(served, {"instances": [{"user_id": user, "k": 10}]}).json()["predictions"][0]
    assert before["cold_start"]
    # items of one taste: those a heavy user of the log interacted with most
    heavy = frame.user_id.value_counts().index[0]
    liked = list(frame.loc[frame.user_id == heavy, "item_id"].value_counts().index[:3])
    events = [{"user_id": user, "item_id": i, "event_type": "click"} for i in liked]
    events.append({"user_id": user, "item_id": "not-in-catalogue", "event_type": "purchase"})
    t0 = time.perf_counter()
    r = httpx.post(f"{served['url']}/v1/models/{served['name']}/events", json={"events": events}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 4 and r.json()["unknown_items"] == 1
    after = _predict(served, {"instances": [{"user_id": user, "k": 10}]}).json()["predictions"][0]
    elapsed = time.perf_counter() - t0
    assert not after["cold_start"] and after["items"] != before["items"]
    assert not set(after["items"]) & set(liked)  # what was just clicked is seen now
    assert "not-in-catalogue" not in after["items"]
    assert elapsed < 1.0, elapsed


@pytest.mark.parametrize(("body", "field"), [
    ({"instances": []}, "instances"),
    ({"instances": [{"k": 3}]}, "instances[0].user_id"),
    ({"instances": [{"user_id": "u", "k": 0}]}, "instances[0].k"),
    ({"instances": [{"user_id": "u", "k": "ten"}]}, "instances[0].k"),
    ({"instances": [{"user_id": "u", "exclude_seen": "yes"}]}, "instances[0].exclude_seen"),
    ({"instances": [{"user_id": "u", "colour": "red"}]}, "instances[0].colour"),
    ({"instances": [{"user_id": ["u"]}]}, "instances[0].user_id"),
    ({"rows": []}, "instances"),
])
def test_bad_predict_requests_are_400_with_the_field(served, body, field):
    r = _predict(served, body)
    assert r.status_code == 400, r.text
    assert r.json()["detail"]["field"] == field


@pytest.mark.parametrize(("body", "field"), [
    ({"events": []}, "events"),
    ({"events": [{"user_id": "u"}]}, "events[0].item_id"),
    ({"events": [{"user_id": "u", "item_id": "i", "event_type": "hover"}]}, "event_type"),
    ({"events": [{"user_id": "u", "item_id": "i", "timestamp": "yesterday"}]}, "events[0].timestamp"),
])
def test_bad_events_are_400_with_the_field(served, body, field):
    r = httpx.post(f"{served['url']}/v1/models/{served['name']}/events", json=body, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["detail"]["field"] == field
    bad_json = httpx.post(f"{served['url']}/v1/models/{served['name']}/events", content=b"{nope", timeout=10)
    assert bad_json.status_code == 400 and bad_json.json()["detail"]["field"] == "body"


def test_events_to_an_unknown_model_are_404(served):
    r = httpx.post(f"{served['url']}/v1/models/nope/events", json={"events": []}, timeout=10)
    assert r.status_code == 404
