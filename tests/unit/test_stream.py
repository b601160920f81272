"""skiff stream without a broker: payload parsing, run ids, source and credential resolution."""

from __future__ import annotations

import json
import logging
import re

import pytest
from pydantic import ValidationError

from components.stream.logic import (
    StreamConfig,
    StreamConsumer,
    _filters_overlap,
    _next_seq,
    check_topic_filters,
    mqtt_source,
    run_id_for,
)
from components.stream.parse import Rejected, parse_payload
from skiff.errors import ConfigError, SourceError, UsageError
from skiff.lake import Lake
from skiff.spec import MqttSource, parse_spec
from skiff.storage import Store

SPEC = {
    "name": "sensors",
    "entity_key": "device_id",
    "columns": {"device_id": {"type": "string", "required": True}, "temperature": {"type": "float"}},
}


def test_one_object_is_one_record_with_values_as_text():
    [rec] = parse_payload(b'{"device_id": "d1", "temperature": 21.5, "ok": true, "n": null, "tags": {"a": 1}}')
    assert rec == {"device_id": "d1", "temperature": "21.5", "ok": "true", "n": None, "tags": '{"a": 1}'}


def test_an_array_holds_several_records_and_bad_items_are_rejected_one_by_one():
    recs = parse_payload(b'[{"device_id": "a"}, 3, {"temperature": 1}]', required=["device_id"])
    assert recs[0] == {"device_id": "a"}
    assert isinstance(recs[1], Rejected) and recs[1].reason == "not_an_object" and "item 1" in recs[1].problem
    assert isinstance(recs[2], Rejected) and recs[2].reason == "missing_column" and "device_id" in recs[2].problem
    assert parse_payload(b"[]") == []


@pytest.mark.parametrize(
    ("payload", "reason", "words"),
    [
        (b"{oops", "malformed_message", "not JSON"),
        (b"\xff\xfe", "malformed_message", "not UTF-8"),
        (b'"text"', "not_an_object", "got str"),
        (b"42", "not_an_object", "got int"),
    ],
)
def test_a_message_that_is_not_objects_is_one_rejected_record(payload, reason, words):
    [rec] = parse_payload(payload)
    assert isinstance(rec, Rejected) and rec.reason == reason and words in rec.problem


def test_unknown_columns_are_rejected_only_when_the_spec_says_so():
    assert parse_payload(b'{"device_id": "a", "x": 1}', known=None) == [{"device_id": "a", "x": "1"}]
    [rec] = parse_payload(b'{"device_id": "a", "x": 1}', known={"device_id"})
    assert isinstance(rec, Rejected) and rec.reason == "unknown_column" and "x" in rec.problem


def test_run_ids_continue_the_consumers_sequence_from_the_lake(tmp_path):
    lake = Lake(Store(str(tmp_path / "lake")))
    assert _next_seq(lake, "sensors", "plant/1") == 1
    for rid in (run_id_for("plant/1", 1), run_id_for("plant/1", 7), run_id_for("other", 9)):
        with lake.publish_run("sensors", rid, "2026-11-24") as staging:
            (staging / "x.json").write_text("{}")
    assert run_id_for("plant/1", 7) == "plant_1-00000007"
    assert _next_seq(lake, "sensors", "plant/1") == 8
    assert _next_seq(lake, "sensors", "other") == 10


def test_mqtt_source_comes_from_the_spec_or_the_topic_option():
    bare = parse_spec(SPEC)
    with pytest.raises(UsageError, match="no mqtt source"):
        mqtt_source(bare)
    assert mqtt_source(bare, "a/b").topic == "a/b"
    spec = parse_spec({**SPEC, "sources": [{"type": "mqtt", "topic": "s/+/t", "port": 1884, "client_id": "c1"}]})
    src = mqtt_source(spec, "$share/g/s/+/t")
    assert (src.topic, src.port, src.client_id) == ("$share/g/s/+/t", 1884, "c1")


@pytest.mark.parametrize(
    ("topics", "expected"),
    [
        ([], "no topic filter"),
        (["a/#/b"], "# must be a whole level and the last one"),
        (["a/b#"], "# must be a whole level"),
        (["a/b+"], "+ must be a whole level"),
        (["a/b", ""], "an empty filter"),
        (["a/\x00"], "NUL"),
        (["$share//a/b"], "group name"),
        (["$share/g+/a"], "group name"),
        (["$share/g"], "needs a filter after its group"),
        (["a/b", "a/b"], "given twice"),
        (["s/site-a/+", "s/+/d1"], "'s/site-a/+' and 's/+/d1' overlap"),
        (["$share/g/s/#", "s/x"], "overlap"),
    ],
)
def test_each_topic_filter_is_checked(topics, expected):
    with pytest.raises(UsageError, match=re.escape(expected)):
        check_topic_filters(topics)


def test_disjoint_filters_are_kept_in_order():
    assert check_topic_filters(["s/site-b/+/t", "s/site-a/+/t", "$share/g/other/#"]) == [
        "s/site-b/+/t", "s/site-a/+/t", "$share/g/other/#"]


@pytest.mark.parametrize(
    ("a", "b"),
    [("s/a/+/t", "s/b/+/t"), ("s/+/d1/t", "s/a/+/t"), ("s/a/#", "s/+/d1/t"), ("s/a/#", "s/a"), ("s/a", "s/a/#"),
     ("s/a/+", "s/a"), ("s/+/t", "s/+/+/t"), ("s/+/t", "s/+/+/#"), ("#", "s/x"), ("s/a", "s/a/b"), ("+/a", "b/+"),
     ("+", "a/b"), ("a/+/#", "a")],
)
def test_the_overlap_check_agrees_with_paho_s_matcher(a, b):
    import itertools

    from paho.mqtt.client import topic_matches_sub

    alphabet = sorted({lv for f in (a, b) for lv in f.split("/") if lv not in ("+", "#")} | {"other"})
    common = any(topic_matches_sub(a, t) and topic_matches_sub(b, t)
                 for n in range(1, max(a.count("/"), b.count("/")) + 3)
                 for t in ("/".join(levels) for levels in itertools.product(alphabet, repeat=n)))
    assert _filters_overlap(a, b) is common is _filters_overlap(b, a)


def test_config_is_typed_and_strict():
    with pytest.raises(ValidationError):
        StreamConfig(batch_rows=0)
    with pytest.raises(ValidationError):
        StreamConfig(inflight=70_000)  # above MQTT's Receive Maximum
    with pytest.raises(ValidationError):
        StreamConfig(batch_size=10)
    assert StreamConfig(batch_rows=10_000).window == 20_000  # twice a batch: half takes delivery during a write
    assert StreamConfig(batch_rows=50_000).window == 65_535  # MQTT's largest Receive Maximum
    assert StreamConfig(batch_rows=10, inflight=500).window == 500


def test_credentials_come_from_the_named_variables_and_are_never_logged(tmp_path, monkeypatch, caplog):
    spec = parse_spec(SPEC)
    lake = Lake(Store(str(tmp_path / "lake")))
    src = MqttSource(topic="a/b", username_env="T_MQTT_USER", password_env="T_MQTT_PASS")
    monkeypatch.setenv("T_MQTT_USER", "alice")
    monkeypatch.delenv("T_MQTT_PASS", raising=False)
    consumer = StreamConsumer(spec, lake, src)
    with pytest.raises(ConfigError, match="T_MQTT_PASS") as e:
        consumer._credentials()
    assert "alice" not in str(e.value)
    monkeypatch.setenv("T_MQTT_PASS", "s3cret-value")
    assert consumer._credentials() == ("alice", "s3cret-value")
    # an unreachable broker: the error names the broker, not the secret
    caplog.set_level(logging.DEBUG)
    src_down = src.model_copy(update={"port": 1})
    with pytest.raises(SourceError, match="unreachable") as e:
        StreamConsumer(spec, lake, src_down).run()
    assert "127.0.0.1:1" in str(e.value)
    assert "s3cret-value" not in str(e.value) + caplog.text + json.dumps(getattr(e.value, "detail", {}))


def test_the_json_summary_has_exactly_the_keys_its_typed_contract_names():
    from collections import Counter

    from components.stream.logic import StreamCounts, StreamResult, StreamSummary

    result = StreamResult("sensors", "c1", ["t/#"], counts=Counter(messages=3, read=4, accepted=2, quarantined=1,
                                                                    duplicates=1), duration_s=2.0)
    summary = result.summary()
    assert set(summary) == set(StreamSummary.__annotations__)
    assert list(summary["counts"]) == list(StreamCounts.__annotations__)  # the table's column order
    assert summary["counts"] == {"messages": 3, "read": 4, "accepted": 2, "quarantined": 1, "duplicates": 1}
    assert summary["messages_per_s"] == 1.5
    assert StreamResult("sensors", "c1", ["t/#"]).summary()["counts"]["messages"] == 0


@pytest.mark.parametrize(("topics", "warns"), [(["s/a/+", "$share/g/s/b/+"], True), (["s/a/+", "s/b/+"], False)])
def test_windows_with_any_shared_filter_warn(tmp_path, caplog, topics, warns):
    from tests.unit.test_stream_windows import BASE, WINDOWS

    spec = parse_spec({**BASE, "windows": WINDOWS})
    lake = Lake(Store(str(tmp_path / "lake")))
    consumer = StreamConsumer(spec, lake, MqttSource(topic="x", port=1), topics=topics)  # no broker on port 1
    assert consumer.result.topics == topics
    caplog.set_level(logging.WARNING, logger="skiff.stream")
    with pytest.raises(SourceError, match="unreachable"):
        consumer.run()
    assert ("windows over a shared subscription" in caplog.text) is warns, caplog.text
