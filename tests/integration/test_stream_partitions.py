"""Past one consumer with windows, against the real Mosquitto: devices partitioned by topic between two
consumers; a device whose topic moves to the other consumer (both restarted, as a reassignment does)
continues its windows there from the first one's checkpoint, so the windows of both consumers together equal
pandas over the lake's rows and no reading counts twice."""

from __future__ import annotations

import logging
import uuid

import pytest

from components.stream.logic import StreamConfig, StreamConsumer
from skiff.lake import Lake
from skiff.spec import MqttSource, parse_spec
from skiff.storage import Store
from tests.conftest import require_service
from tests.integration.test_stream_mqtt import finish, publish, start
from tests.integration.test_stream_windows_mqtt import lake_rows, lake_windows, reading, stream_of
from tests.unit.test_stream_windows import BASE, WINDOWS, compare

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _mosquitto():
    require_service("Mosquitto", 1883)


def _consumer(spec, lake, topic: str, client_id: str, n: int) -> StreamConsumer:
    return StreamConsumer(spec, lake, MqttSource(topic=topic),
                          StreamConfig(batch_rows=200, batch_seconds=0.4, max_messages=n, duration_s=40,
                                       session_expiry_s=120, poll_max=100),
                          client_id=client_id)


def _phase(spec, lake, base: str, ids: dict[str, str], data, group_of) -> None:
    """Both consumers (one per topic group) run until each has taken its share of ``data``."""
    counts = {g: sum(1 for r in data if group_of(r[0]) == g) for g in ids}
    running = {g: start(_consumer(spec, lake, f"{base}/{g}/+", cid, counts[g])) for g, cid in ids.items()}
    publish(lambda i: f"{base}/{group_of(data[i][0])}/{data[i][0]}", [reading(*r) for r in data])
    for t, out in running.values():
        finish(t, out)


def test_a_device_moved_to_another_consumer_continues_its_windows_from_the_checkpoint(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="skiff.stream")
    lake = Lake(Store(str(tmp_path / "lake")))
    spec = parse_spec({**BASE, "windows": WINDOWS})
    base = f"skiff-test/{uuid.uuid4().hex}"
    uid = uuid.uuid4().hex[:6]
    ids = {"g1": f"part-x-{uid}", "g2": f"part-y-{uid}"}
    data = stream_of(1500)
    # devices a and b publish under g1 (consumer x), c under g2 (consumer y); then b moves to g2
    _phase(spec, lake, base, ids, data[:750], lambda d: "g1" if d in "ab" else "g2")
    caplog.clear()
    _phase(spec, lake, base, ids, data[750:], lambda d: "g1" if d == "a" else "g2")
    assert f"devices from {ids['g1']}'s checkpoint" in caplog.text  # y took b's windows from x

    rows = lake_rows(lake)
    keys = [(r[0], r[1]) for r in rows]
    assert len(keys) == len(set(keys))  # nothing stored twice
    runs = {ref.run_id.rsplit("-", 1)[0] for ref in lake.all_runs("sensors")}
    assert runs == set(ids.values())
    # the windows of both consumers together: each window once, equal to pandas over all stored rows
    compare(lake_windows(lake), rows, spec)
    n_late = sum(lake.manifest(r).quarantine_reasons.get("late", 0) for r in lake.all_runs("sensors"))
    assert n_late >= 1500 // 97 - 2  # b's late readings at y are late against x's windows too
