"""The KServe transformer route of a recommender, end to end against the real Redis online store: the
transformer (``python -m serving transformer``) reads each user's recent items and hands them to the
predictor (over HTTP, as on KServe, and in-process); an event in changes the next top-k; the predictor
scores with the recent items a request carries and reads the store itself only when it has none; a bad
request through the transformer is a 400 with a JSON reason."""

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

REDIS_ENV = {"SKIFF_REDIS": "127.0.0.1:6379", "SKIFF_FEATURE_STORE_YAML": "feature_store.redis.yaml"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A predictor, a transformer calling it over HTTP, and a transformer with the predictor in-process."""
    require_service("Redis", 6379)
    root = tmp_path_factory.mktemp("recs-tr") / "root"
    name = f"recs_{uuid.uuid4().hex[:8]}"
    frame = generate(400, 200, days=30, seed=13)
    out = root.parent / "model"
    train_recommender(frame, parse_spec(RECS_SPEC), RecsConfig(test_days=5, models=["als"],
                                                               als={"factors": 16, "iterations": 15}), out)
    decision = GateDecision(metric="ndcg@10", challenger=0.1, champion=None, champion_version=None, margin=0.0,
                            promote=True, reason="first")
    register_recommender(ModelRegistry(Store(str(root / "models"))), name, out, decision,
                         dataset={"dataset": "shop_events"})
    ports = {"predictor": _port(), "transformer": _port(), "in_process": _port()}
    procs = []
    try:
        procs.append(start_local_server(name, None, ports["predictor"], root=root, timeout_s=180, extra_env=REDIS_ENV))
        procs.append(start_local_server(name, None, ports["transformer"], root=root, with_features=True,
                                        predictor_host=f"127.0.0.1:{ports['predictor']}", timeout_s=180,
                                        extra_env=REDIS_ENV))
        procs.append(start_local_server(name, None, ports["in_process"], root=root, with_features=True,
                                        timeout_s=180, extra_env=REDIS_ENV))
        heavy = frame.user_id.value_counts().index[0]
        liked = list(frame.loc[frame.user_id == heavy, "item_id"].value_counts().index[:3])
        yield {"name": name, "liked": liked, **{k: f"http://127.0.0.1:{p}" for k, p in ports.items()}}
    finally:
        for proc in procs:
            stop_local_server(proc)


def _top(url, name, body):
    r = httpx.post(f"{url}/v1/models/{name}:predict", json=body, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]


def _events(url, name, user, items):
    return httpx.post(f"{url}/v1/models/{name}/events", timeout=10,
                      json={"events": [{"user_id": user, "item_id": i, "event_type": "click"} for i in items]})


@pytest.mark.parametrize("route", ["transformer", "in_process"])
def test_an_event_through_the_transformer_changes_the_next_top_k(stack, route):
    url, name = stack[route], stack["name"]
    user = f"tr-{uuid.uuid4().hex[:8]}"
    before = _top(url, name, {"instances": [{"user_id": user, "k": 10}]})
    assert before["cold_start"]
    t0 = time.perf_counter()
    r = _events(url, name, user, stack["liked"])
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 3 and r.json()["users"] == 1
    after = _top(url, name, {"instances": [{"user_id": user, "k": 10, "exclude_seen": True}]})
    assert time.perf_counter() - t0 < 1.0
    assert not after["cold_start"] and after["items"] != before["items"]
    assert not set(after["items"]) & set(stack["liked"])  # what was just clicked is seen now
    # the predictor served alone reads the same recent items itself: the same answer
    alone = _top(stack["predictor"], name, {"instances": [{"user_id": user, "k": 10}]})
    assert alone["items"] == after["items"]
    assert alone["scores"] == pytest.approx(after["scores"], rel=1e-3)  # decay moved on a few milliseconds


def test_v2_through_the_transformer(stack):
    name = stack["name"]
    user = f"tr2-{uuid.uuid4().hex[:8]}"
    assert _events(stack["transformer"], name, user, stack["liked"][:2]).status_code == 200
    body = {"id": "req-7", "inputs": [
        {"name": "user_id", "datatype": "BYTES", "shape": [2], "data": [user, f"nobody-{uuid.uuid4().hex}"]},
        {"name": "k", "datatype": "INT64", "shape": [1], "data": [4]}]}
    r = httpx.post(f"{stack['transformer']}/v2/models/{name}/infer", json=body, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "req-7"
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert out["items"]["shape"] == [2, 4] and out["cold_start"]["data"] == [False, True]
    v1 = _top(stack["transformer"], name, {"instances": [{"user_id": user, "k": 4}]})
    assert out["items"]["data"][:4] == v1["items"]
    meta = httpx.get(f"{stack['transformer']}/v2/models/{name}", timeout=10).json()
    assert [i["name"] for i in meta["inputs"]] == ["user_id", "k", "exclude_seen"]


def test_the_predictor_scores_with_the_recent_items_the_request_carries(stack):
    url, name = stack["predictor"], stack["name"]
    user = f"pr-{uuid.uuid4().hex[:8]}"
    assert _events(url, name, user, stack["liked"]).status_code == 200
    assert not _top(url, name, {"instances": [{"user_id": user}]})["cold_start"]  # read from the store
    # the request says "no recent items": the store is not read
    given_none = _top(url, name, {"instances": [{"user_id": user, "recent_items": [], "recent_weights": []}]})
    assert given_none["cold_start"]
    # a new user with recent items in the request: scored with them, none of them returned
    fresh = f"pr-new-{uuid.uuid4().hex[:8]}"
    given = _top(url, name, {"instances": [{"user_id": fresh, "recent_items": stack["liked"],
                                            "recent_weights": [15.0, 15.0, 15.0]}]})
    assert not given["cold_start"] and not set(given["items"]) & set(stack["liked"])
    v2 = httpx.post(f"{url}/v2/models/{name}/infer", timeout=10, json={"inputs": [
        {"name": "user_id", "datatype": "BYTES", "shape": [2], "data": [fresh, user]},
        {"name": "recent_items", "datatype": "BYTES", "shape": [2, 3], "data": [*stack["liked"], "", "", ""]},
        {"name": "recent_weights", "datatype": "FP64", "shape": [2, 3], "data": [15.0, 15.0, 15.0, 0, 0, 0]}]})
    assert v2.status_code == 200, v2.text
    out = {o["name"]: o for o in v2.json()["outputs"]}
    assert out["cold_start"]["data"] == [False, True]  # the second row is padding only: no recent items
    assert out["items"]["data"][:10] == given["items"]


@pytest.mark.parametrize(("body", "field"), [
    ({"instances": []}, "instances"),
    ({"instances": [{"k": 3}]}, "instances[0].user_id"),
    ({"instances": [{"user_id": "u", "k": 0}]}, "instances[0].k"),
    ({"instances": [{"user_id": "u", "exclude_seen": "yes"}]}, "instances[0].exclude_seen"),
    ({"instances": [{"user_id": "u", "colour": "red"}]}, "instances[0].colour"),
    # recent items are the online store's: a client does not send them through the transformer
    ({"instances": [{"user_id": "u", "recent_items": ["i1"], "recent_weights": [1.0]}]},
     "instances[0].recent_items"),
])
def test_bad_requests_through_the_transformer_are_400_with_a_json_reason(stack, body, field):
    r = httpx.post(f"{stack['transformer']}/v1/models/{stack['name']}:predict", json=body, timeout=10)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["detail"]["field"] == field and r.json()["message"]


def test_bad_v2_requests_and_events_through_the_transformer(stack):
    base, name = stack["transformer"], stack["name"]
    r = httpx.post(f"{base}/v2/models/{name}/infer", timeout=10,
                   json={"inputs": [{"name": "k", "datatype": "INT64", "shape": [1], "data": [3]}]})
    assert r.status_code == 400 and r.json()["detail"]["field"] == "user_id"
    r = httpx.post(f"{base}/v1/models/{name}:predict", content=b"{nope", timeout=10)
    assert r.status_code == 400 and r.json()["detail"]["field"] == "body"
    # events go to the predictor: its 400 comes back with its status and reason
    r = httpx.post(f"{base}/v1/models/{name}/events", timeout=10,
                   json={"events": [{"user_id": "u", "item_id": "i", "event_type": "hover"}]})
    assert r.status_code == 400, r.text
    assert "hover" in r.json()["message"]
    assert r.json()["detail"]["predictor_error"]["detail"]["field"] == "event_type"


@pytest.mark.parametrize(("body", "field"), [
    ({"instances": [{"user_id": "u", "recent_items": ["a", "b"], "recent_weights": [1.0]}]},
     "instances[0].recent_weights"),
    ({"instances": [{"user_id": "u", "recent_items": ["a"]}]}, "instances[0].recent_weights"),
    ({"instances": [{"user_id": "u", "recent_items": ["a"], "recent_weights": [-1.0]}]},
     "instances[0].recent_weights[0]"),
    ({"instances": [{"user_id": "u", "recent_items": [7], "recent_weights": [1.0]}]}, "instances[0].recent_items[0]"),
    ({"inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["u"]},
                 {"name": "recent_items", "datatype": "BYTES", "shape": [2, 1], "data": ["a", "b"]},
                 {"name": "recent_weights", "datatype": "FP64", "shape": [2, 1], "data": [1.0, 1.0]}]},
     "recent_items"),
    ({"inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["u"]},
                 {"name": "recent_items", "datatype": "BYTES", "shape": [1, 1], "data": ["a"]}]},
     "recent_weights"),
])
def test_bad_recent_items_to_the_predictor_are_400(stack, body, field):
    v2 = "inputs" in body
    path = f"/v2/models/{stack['name']}/infer" if v2 else f"/v1/models/{stack['name']}:predict"
    r = httpx.post(f"{stack['predictor']}{path}", json=body, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["detail"]["field"] == field
