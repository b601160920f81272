"""One source contract: the batch readers and the stream's segments implement skiff.sources.SourceReader,
and both kinds of run derive the manifest's fingerprint and source entries through it."""

from __future__ import annotations

import inspect

import httpx
import pyarrow.parquet as pq
import pytest

from components.ingest.files import FileReader
from components.ingest.rest import RestReader
from components.ingest.sql import SqlReader
from components.stream.logic import StreamConsumer
from components.stream.segment import StreamMessage, StreamSegment
from skiff.errors import InvariantError
from skiff.lake import Lake
from skiff.sources import SourceBatch, SourceReader, run_fingerprint
from skiff.spec import FileSource, MqttSource, RestSource, SqlSource, parse_spec, spec_fingerprint
from skiff.storage import Store

SPEC = parse_spec({
    "name": "sensors",
    "entity_key": "device_id",
    "columns": {"device_id": {"type": "string", "required": True}, "temperature": {"type": "float"}},
})
SOURCE = MqttSource(topic="plant/+/t", host="127.0.0.1", port=1883)


def _protocol_members() -> dict[str, object]:
    """The protocol's members as declared: methods and properties by value, ClassVars by annotation."""
    members = {n: v for n, v in vars(SourceReader).items() if not n.startswith("_")}
    members.update({n: None for n in SourceReader.__annotations__})
    return members


def _readers(tmp_path) -> list[SourceReader]:
    csv = tmp_path / "a.csv"
    csv.write_text("device_id,temperature\nd1,20.5\n")
    db = tmp_path / "s.db"
    return [
        FileReader(FileSource(path=str(csv))),
        SqlReader(SqlSource(url=f"sqlite:///{db}", table="t", watermark="id")),
        RestReader(RestSource(url="https://example.invalid/readings"),
                   transport=httpx.MockTransport(lambda request: httpx.Response(200, json=[]))),
        StreamSegment(SPEC, SOURCE, "c1", acknowledge=lambda msgs: None),
    ]


def test_every_source_has_every_member_of_the_protocol_with_its_signature(tmp_path):
    members = _protocol_members()
    assert {"kind", "fingerprint_before_read", "label", "state_key", "precheck", "resume", "batches",
            "fingerprint", "describe", "commit_state"} <= set(members)
    kinds = set()
    for reader in _readers(tmp_path):
        for name, declared in members.items():
            assert hasattr(reader, name), f"{type(reader).__name__} lacks {name}"
            if inspect.isfunction(declared):
                got = list(inspect.signature(getattr(reader, name)).parameters)
                want = list(inspect.signature(declared).parameters)[1:]  # without self
                assert got == want, f"{type(reader).__name__}.{name}{got} != protocol {want}"
        assert isinstance(reader.kind, str) and isinstance(reader.fingerprint_before_read, bool)
        assert isinstance(reader.label, str)
        kinds.add(reader.kind)
    assert kinds == {"file", "sql", "rest", "mqtt"}


def _message(n: int, payload: bytes, qos: int = 1) -> StreamMessage:
    return StreamMessage(topic=f"plant/{n}/t", mid=100 + n, qos=qos, payload=payload, number=n, connection=1)


def test_a_stream_segment_reads_fingerprints_describes_and_commits_like_a_reader():
    acked: list[list[int]] = []
    seg = StreamSegment(SPEC, SOURCE, "c1", acknowledge=lambda msgs: acked.append([m.mid for m in msgs]))
    seg.add(_message(1, b'{"device_id": "d1", "temperature": 20.5}'))
    seg.add(_message(2, b"{oops"))
    seg.add(_message(3, b'[{"device_id": "d2"}, {"temperature": 1}]'))
    assert seg.state_key is None and seg.fingerprint_before_read and seg.kind == "mqtt"
    seg.precheck(lambda columns, where: pytest.fail("a stream shows no header to check"))
    seg.resume(None, [])

    [batch] = list(seg.batches())
    assert isinstance(batch, SourceBatch) and batch.source == "mqtt://127.0.0.1:1883" and batch.key_scope
    assert batch.table.to_pylist() == [{"device_id": "d1", "temperature": "20.5"},
                                       {"device_id": "d2", "temperature": None}]
    assert [r.reason for _, r in seg.rejected] == ["malformed_message", "missing_column"]
    assert seg.records == 4

    entry = seg.describe()
    assert entry["type"] == "mqtt" and entry["messages"] == [1, 3] and entry["topics"] == 3
    assert seg.fingerprint() == {"type": "mqtt", "topic": "plant/+/t", "sha256": entry["sha256"]}
    other = StreamSegment(SPEC, SOURCE, "c1", acknowledge=lambda msgs: None)
    other.add(_message(1, b'{"device_id": "d1", "temperature": 20.6}'))
    assert run_fingerprint("h", [other]) != run_fingerprint("h", [seg])  # the payloads count

    assert acked == []  # nothing is acknowledged before the commit
    assert seg.commit_state() is None  # the broker's session is the state: nothing for the lake
    assert acked == [[101, 102, 103]]  # every message, in arrival order
    with pytest.raises(InvariantError):
        seg.commit_state()


class _Client:
    """Records PUBACKs, and whether the run they belong to was committed when they were sent."""

    def __init__(self, lake: Lake) -> None:
        self.lake, self.acks, self.committed_runs = lake, [], []

    def ack(self, mid: int, qos: int) -> None:
        self.acks.append((mid, qos))
        self.committed_runs.append(len(self.lake.all_runs(SPEC.name)))


def test_the_consumer_publishes_the_segment_through_the_contract_then_commits_it(tmp_path):
    lake = Lake(Store(str(tmp_path / "lake")))
    consumer = StreamConsumer(SPEC, lake, SOURCE, client_id="c1")
    client = _Client(lake)
    consumer._client, consumer._connection, consumer._seq = client, 1, 1
    seg = consumer._segment()
    seg.add(_message(1, b'{"device_id": "d1", "temperature": 20.5}'))
    seg.add(_message(2, b'{"device_id": "d2", "temperature": "hot"}', qos=0))  # QoS 0: nothing to ack
    seg.add(_message(3, b"[1]"))
    consumer._flush(seg)

    [ref] = lake.all_runs(SPEC.name)
    manifest = lake.manifest(ref)
    assert manifest.sources == [seg.describe()]
    assert manifest.fingerprint == run_fingerprint(spec_fingerprint(SPEC), [seg])
    assert manifest.counts.messages == 3 and manifest.counts.read == 3
    assert manifest.counts.accepted + manifest.counts.quarantined + manifest.counts.duplicates == 3
    assert client.acks == [(101, 1), (103, 1)] and client.committed_runs == [1, 1]  # after the publish
    assert seg.committed
    assert pq.read_table(lake.store.uri(*ref.parts, "part-00000.parquet")).num_rows == manifest.counts.accepted


def test_every_sources_manifest_entry_has_the_keys_its_typed_entry_names(tmp_path):
    import sqlalchemy as sa

    from skiff.manifest import FileSourceEntry, MqttSourceEntry, RestSourceEntry, SqlSourceEntry

    csv = tmp_path / "a.csv"
    csv.write_text("device_id,temperature\nd1,20.5\n")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 's.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INTEGER, device_id TEXT)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1, 'd1'), (2, 'd2')"))
    segment = StreamSegment(SPEC, SOURCE, "c1", acknowledge=lambda msgs: None)
    segment.add(_message(1, b'{"device_id": "d1"}'))
    readers = [
        (FileReader(FileSource(path=str(csv))), FileSourceEntry),
        (SqlReader(SqlSource(url=f"sqlite:///{tmp_path / 's.db'}", table="t", watermark="id"), engine=engine),
         SqlSourceEntry),
        (SqlReader(SqlSource(url=f"sqlite:///{tmp_path / 's.db'}", query="SELECT * FROM t"), engine=engine),
         SqlSourceEntry),
        (RestReader(RestSource(url="https://example.invalid/readings"),
                    transport=httpx.MockTransport(lambda request: httpx.Response(200, json=[{"device_id": "d1"}]))),
         RestSourceEntry),
        (segment, MqttSourceEntry),
    ]
    for reader, typed in readers:
        for _ in reader.batches():
            pass
        entry = reader.describe()
        keys = set(entry)
        assert typed.__required_keys__ <= keys <= set(typed.__annotations__), (typed.__name__, keys)
        assert entry["type"] == reader.kind
