"""MQTT events (the real Mosquitto) reach a recommender's recent items in the real Redis online store."""

import json
import time
import uuid

import paho.mqtt.publish as publish
import pytest

from skiff.config import Settings
from skiff.recommend.events import RecsConfig
from skiff.recommend.online import RecentItems
from skiff.recommend.stream import EventConsumer, parse_message
from tests.conftest import require_service

pytestmark = pytest.mark.integration


def test_parse_message_counts_what_it_drops():
    cfg = RecsConfig()
    events, dropped = parse_message(json.dumps([{"user_id": "u", "item_id": "i", "event_type": "view"},
                                                {"user_id": "u"}, {"user_id": "u", "item_id": "i",
                                                                   "event_type": "hover"}]).encode(), cfg)
    assert [e.item_id for e in events] == ["i"]
    assert dropped == {"not an event": 1, "unknown event type": 1}
    assert parse_message(b"{nope", cfg)[1] == {"not JSON": 1}


def test_mqtt_events_reach_the_redis_online_store(tmp_path, monkeypatch):
    require_service("Redis", 6379)
    require_service("Mosquitto", 1883)
    monkeypatch.setenv("SKIFF_REDIS", "127.0.0.1:6379")
    model = f"recs_{uuid.uuid4().hex[:8]}"
    settings = Settings(root=str(tmp_path / "root"), feature_store_yaml="feature_store.redis.yaml")
    recent = RecentItems.open(settings, model, RecsConfig())
    topic = f"skiff-test/{model}/events"
    consumer = EventConsumer(recent, topic, client_id=f"c-{model}")
    consumer.start()
    try:
        user = f"mqtt-{uuid.uuid4().hex[:6]}"
        publish.single(topic, json.dumps({"user_id": user, "item_id": "a", "event_type": "click"}), qos=1)
        publish.single(topic, json.dumps([{"user_id": user, "item_id": "b", "event_type": "purchase"},
                                          {"user_id": user, "item_id": "c", "event_type": "hover"}]), qos=1)
        publish.single(topic, b"not json", qos=1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and consumer.counts["written"] < 2:
            time.sleep(0.05)
        got = {r.item: r.weight for r in recent.get(user)}
        assert got == {"a": 3.0, "b": 10.0}
        assert consumer.counts["dropped: unknown event type"] == 1 and consumer.counts["dropped: not JSON"] == 1
    finally:
        consumer.stop()
