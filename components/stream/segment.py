"""One segment of an MQTT stream: the messages that become one lake run, as a :class:`~skiff.sources.SourceReader`.

Batch ingestion reads a source that stands still; a stream never does, so the consumer
(:mod:`components.stream.logic`) cuts it into segments (``batch_rows`` records, ``batch_seconds``, half
the in-flight window) and hands each one to the lake exactly as ingestion hands a reader's input: the
same protocol, in the same order —

* :meth:`StreamSegment.batches`: the segment's parsed records as one :class:`~skiff.sources.SourceBatch`
  (text columns, a generated-key scope of its own); records that are not JSON objects never reach the
  Cleanser and are kept in :attr:`StreamSegment.rejected`;
* :meth:`StreamSegment.fingerprint` and :meth:`StreamSegment.describe`: the run manifest's fingerprint
  input (a hash of the payloads) and its source entry (broker, topic, which messages);
* :meth:`StreamSegment.commit_state`, once the run is published: the segment commits what it took by
  acknowledging its messages to the broker (PUBACK, in arrival order). The broker's persistent session
  is the stream's state, so nothing is recorded in the lake (:attr:`state_key` is None).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from components.stream.parse import Rejected, parse_payload
from skiff.errors import InvariantError
from skiff.manifest import MqttSourceEntry
from skiff.sources import SourceBatch, StatelessSource
from skiff.spec import DatasetSpec, MqttSource

__all__ = ["StreamMessage", "StreamSegment"]


@dataclass(frozen=True)
class StreamMessage:
    """One MQTT message as the consumer received it."""

    topic: str
    mid: int
    qos: int
    payload: bytes
    number: int  # 1-based message number of this consumer process
    connection: int  # which connection of this process delivered it (its mid is valid on that one only)
    received_at: float = 0.0  # time.monotonic() when paho handed it over


class StreamSegment(StatelessSource):
    """The messages of one future lake run (a :class:`~skiff.sources.SourceReader` of kind ``mqtt``).

    ``acknowledge`` is called by :meth:`commit_state` with the segment's messages in arrival order; the
    consumer sends the PUBACKs (only for messages of its current connection).
    """

    kind: ClassVar[str] = "mqtt"
    #: the payload hash is known as soon as the messages are in (nothing is read from elsewhere)
    fingerprint_before_read: ClassVar[bool] = True

    def __init__(self, spec: DatasetSpec, source: MqttSource, client_id: str,
                 acknowledge: Callable[[Sequence[StreamMessage]], None], topic: str | None = None) -> None:
        self.spec, self.source, self.client_id = spec, source, client_id
        #: the subscription's topic filters as the manifest records them (default: the source's one filter)
        self.topic = topic or source.topic
        self._acknowledge = acknowledge
        self._required = [n for n, c in spec.columns.items() if c.required]
        self._known = set(spec.columns) if spec.unknown_columns == "reject" else None
        self.broker = f"mqtt://{source.host}:{source.port}"
        self.msgs: list[StreamMessage] = []
        self.rows: list[dict[str, Any]] = []
        #: the message each row of :attr:`rows` came in
        self.row_msgs: list[StreamMessage] = []
        #: records the Cleanser never sees (not JSON, not an object, a missing or unknown column)
        self.rejected: list[tuple[StreamMessage, Rejected]] = []
        self.first_at: float | None = None  # time.monotonic() of the first message (the flush deadline)
        self.started_at: dt.datetime | None = None  # and its wall time (the run's start in its manifest)
        self.committed = False
        self._taken = 0  # rows already handed out by take() (the windowed consumer's polls)

    # -- filling ---------------------------------------------------------------------------------------
    def add(self, msg: StreamMessage) -> None:
        """Take one message: its records into :attr:`rows` or :attr:`rejected`."""
        if self.first_at is None:
            self.first_at = time.monotonic()
            self.started_at = dt.datetime.now(dt.UTC)
        self.msgs.append(msg)
        for rec in parse_payload(msg.payload, required=self._required, known=self._known):
            if isinstance(rec, Rejected):
                self.rejected.append((msg, rec))
            else:
                self.rows.append(rec)
                self.row_msgs.append(msg)

    @property
    def records(self) -> int:
        """Records read: rows for the Cleanser plus rejected records."""
        return len(self.rows) + len(self.rejected)

    # -- the SourceReader protocol ----------------------------------------------------------------------
    @property
    def label(self) -> str:
        return self.broker

    def batches(self) -> Iterator[SourceBatch]:
        """The segment's rows as one batch of text columns (the spec's, then kept unknown ones sorted).

        A generated row key needs a scope per segment: offsets restart at 0 in every batch (and a stream is
        never read twice alike, so ids need only be unique; ``{generated: content}`` de-duplicates
        redeliveries)."""
        yield self._batch(self.rows)

    def take(self) -> tuple[SourceBatch, list[StreamMessage]] | None:
        """The rows added since the last call as one batch, with the message of each row (None when there
        are none): a windowed consumer cleanses and windows every poll, not only the whole segment."""
        if self._taken == len(self.rows):
            return None
        start, self._taken = self._taken, len(self.rows)
        return self._batch(self.rows[start:]), self.row_msgs[start:]

    def _batch(self, rows: list[dict[str, Any]]) -> SourceBatch:
        names = list(self.spec.columns)
        if self.spec.unknown_columns == "keep":
            names += sorted({k for r in rows for k in r} - set(names))
        table = pa.table({n: pa.array([r.get(n) for r in rows], pa.string()) for n in names})
        return SourceBatch(table, source=self.broker, key_scope=f"{self.client_id}/{uuid.uuid4().hex}")

    def _payload_hash(self) -> str:
        payloads = hashlib.sha256()
        for m in self.msgs:
            payloads.update(len(m.payload).to_bytes(8, "big") + m.payload)
        return payloads.hexdigest()

    def fingerprint(self) -> dict[str, Any]:
        """The topic and a hash of the payloads, in order (what makes two segments the same input)."""
        return {"type": self.kind, "topic": self.topic, "sha256": self._payload_hash()}

    def describe(self) -> MqttSourceEntry:
        """Broker, topic and which messages (first and last number), with the hash of their payloads."""
        if not self.msgs:
            raise InvariantError("an empty stream segment is never published")
        return {"type": "mqtt", "broker": self.broker, "topic": self.topic, "qos": self.source.qos,
                "client_id": self.client_id, "messages": [self.msgs[0].number, self.msgs[-1].number],
                "topics": len({m.topic for m in self.msgs}), "sha256": self._payload_hash()}

    def commit_state(self) -> dict[str, Any] | None:
        """Acknowledge the segment's messages (call only once its run is published); nothing to record."""
        if self.committed:
            raise InvariantError("a stream segment is committed once")
        self._acknowledge(self.msgs)
        self.committed = True
        return None
