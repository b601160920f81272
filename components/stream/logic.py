"""``skiff stream``: an MQTT consumer that writes sensor readings to the lake in atomic runs.

How a message travels:

1. paho's network thread receives it and only puts ``(topic, mid, qos, payload)`` on a queue (no
   parsing, no I/O on the network thread, so Parquet writes never stall delivery);
2. the writer thread parses it (:mod:`components.stream.parse`) into the current
   :class:`~components.stream.segment.StreamSegment`, the stream's
   :class:`~skiff.sources.SourceReader`;
3. every ``batch_rows`` records, ``batch_seconds`` after the segment's first message, or when the
   unacknowledged messages fill half the in-flight window, the segment's batch goes through the batch
   :class:`~skiff.cleansing.Cleanser` (coercion, rules, quarantine, de-duplication) and is
   published as one lake run with :meth:`skiff.lake.Lake.publish_run` (whole or not at all):
   ``raw/<dataset>/ingest_date=D/run=<client id>-<seq>/`` with ``part-00000.parquet``,
   ``_quarantine.parquet`` and the same :class:`~skiff.manifest.RunManifest` batch ingestion writes
   (fingerprint by :func:`skiff.sources.run_fingerprint`, source entry by the segment's ``describe``:
   the messages and a hash of their payloads);
4. only then is the segment committed (``commit_state``): its messages are acknowledged (PUBACK), in
   the order they arrived.

Delivery guarantee ("nothing lost"), precisely: a message the broker accepted at QoS 1 ends in exactly
one committed run, as accepted rows, quarantined rows or counted duplicates, or is delivered again
— provided that

* the consumer subscribes at QoS 1 with a persistent session: a fixed client id, ``clean_start=False``
  and an MQTT 5 session expiry > 0 (the broker keeps the subscription and queues messages while the
  consumer is away, up to the expiry);
* the broker keeps every message it queues: Mosquitto drops messages silently beyond
  ``max_queued_messages`` (default 1000) per client — this counts messages queued behind a full
  in-flight window too — and keeps nothing across its own restart unless ``persistence true``.

A message is acknowledged only after the run holding it is committed, so a crash or disconnect before
that makes the broker deliver it again. After a reconnect to a resumed session the consumer drops its
unpublished copies (the broker sends them again); after a reconnect to a new session (it expired, or
the broker lost it) it publishes them, and acknowledges only messages of the current connection. The one window left is a crash between the commit and the
PUBACK reaching the broker: those messages come again and land in a later run (at least once); rows
with the same entity key and event timestamp inside one run are counted as duplicates, not stored twice.
Each run id is the client id plus a sequence number continued from the lake, so two runs of one
consumer never overwrite each other.

Counts reconcile in each run's manifest and in the summary: records read = accepted + quarantined +
duplicates (a message that is not a JSON object or array of objects is one quarantined record).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import queue
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypedDict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt
    from paho.mqtt.client import ConnectFlags, DisconnectFlags
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

from components.stream.ops import AlertDispatcher, StreamMetrics
from components.stream.parse import Rejected
from components.stream.score import MISSING_INPUT, SCORES_FILE, StreamScorer, empty_scores, score_table
from components.stream.segment import StreamMessage, StreamSegment
from skiff import __version__
from skiff.cleansing import Cleanser, impute_statistic
from skiff.errors import ConfigError, ConflictError, InvariantError, SourceError, StorageError, UsageError
from skiff.lake import QUARANTINE, Lake, RunRef
from skiff.manifest import PartFile, RunCounts, RunManifest
from skiff.sources import SourceReader, run_fingerprint
from skiff.spec import DatasetSpec, MqttSource, spec_fingerprint
from skiff.windows import STATE_DEVICES, STATE_PANES, WINDOW_END, Alert, WindowEngine

if TYPE_CHECKING:
    from components.stream.score import Scored
    from skiff.registry import ModelRegistry
    from skiff.windows import WindowBatch

__all__ = [
    "StreamConfig",
    "StreamResult",
    "StreamSummary",
    "StreamCounts",
    "StreamConsumer",
    "consume",
    "mqtt_source",
    "run_id_for",
]

log = logging.getLogger("skiff.stream")

_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")
_PART = "part-00000.parquet"  # a stream run is one batch: one part file
_STOP = object()
_RECONNECTED = object()


class StreamConfig(BaseModel):
    """How the consumer batches, acknowledges and stops."""

    model_config = ConfigDict(extra="forbid")

    batch_rows: int = Field(default=10_000, ge=1, description="Records per lake run (at most).")
    batch_seconds: float = Field(default=5.0, gt=0, description="Seconds after the first buffered message "
                                 "before the buffer is published anyway.")
    inflight: int | None = Field(default=None, ge=2, le=65_535, description="Unacknowledged messages the "
                                 "broker may have out to this consumer (MQTT 5 Receive Maximum); default twice "
                                 "batch_rows, at most 65,535. A half-full window publishes a run, so the other "
                                 "half takes delivery while it is written (the broker queues, and stock "
                                 "Mosquitto drops beyond 1,000, only what a full window holds back).")

    @property
    def window(self) -> int:
        """The in-flight window in force."""
        return self.inflight or min(65_535, max(2, 2 * self.batch_rows))
    session_expiry_s: int = Field(default=86_400, ge=1, description="MQTT 5 session expiry: how long the "
                                  "broker keeps the session and queues messages while the consumer is away.")
    keepalive_s: int = Field(default=30, ge=5, description="MQTT keepalive.")
    connect_timeout_s: float = Field(default=10.0, gt=0, description="Time allowed for CONNACK and SUBACK.")
    max_messages: int | None = Field(default=None, ge=1, description="Stop after this many messages.")
    poll_max: int = Field(default=5_000, ge=1, description="With windows: messages taken from the queue per "
                          "poll; each poll is cleansed, windowed and pushed online as one batch.")
    duration_s: float | None = Field(default=None, gt=0, description="Stop after this many seconds.")


class OnlineWriter(Protocol):
    """Where a windowed consumer sends each poll's closed windows and latest readings (the online store)."""

    def write(self, latest: pa.Table, closed: dict[str, pa.Table]) -> float: ...


@dataclass
class _PollState:
    """What the polls of one segment produced, published together as its run."""

    cleanser: Cleanser
    accepted: list[pa.Table] = field(default_factory=list)
    quarantine: list[pa.Table] = field(default_factory=list)
    closed: dict[str, list[pa.Table]] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    scores: list[pa.Table] = field(default_factory=list)
    duplicates: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


class StreamCounts(TypedDict):
    """Messages and records of a consumer's runs; records reconcile: read = accepted + quarantined + duplicates."""

    messages: int
    read: int
    accepted: int
    quarantined: int
    duplicates: int


class StreamSummary(TypedDict):
    """What ``skiff stream --json`` prints (scripts read it: a contract)."""

    dataset: str
    client_id: str
    topics: list[str]
    counts: StreamCounts
    quarantine_reasons: dict[str, int]
    runs: list[str]
    partitions: list[str]
    duration_s: float
    messages_per_s: float


@dataclass
class StreamResult:
    dataset: str
    client_id: str
    topics: list[str]
    counts: Counter[str] = field(default_factory=Counter)  # messages, read, accepted, quarantined, duplicates
    reasons: Counter[str] = field(default_factory=Counter)
    runs: list[RunRef] = field(default_factory=list)
    duration_s: float = 0.0

    def summary(self) -> StreamSummary:
        """What ``skiff stream --json`` prints."""
        n = self.counts
        c = StreamCounts(messages=int(n["messages"]), read=int(n["read"]), accepted=int(n["accepted"]),
                         quarantined=int(n["quarantined"]), duplicates=int(n["duplicates"]))
        return {
            "dataset": self.dataset,
            "client_id": self.client_id,
            "topics": self.topics,
            "counts": c,
            "quarantine_reasons": dict(sorted(self.reasons.items())),
            "runs": [r.run_id for r in self.runs],
            "partitions": sorted({r.date for r in self.runs}),
            "duration_s": round(self.duration_s, 3),
            "messages_per_s": round(c["messages"] / self.duration_s, 1) if self.duration_s else 0.0,
        }


def _filter_problem(topic: str) -> str | None:
    """Why ``topic`` is no MQTT topic filter (None when it is one); a ``$share/<group>/`` prefix is checked too."""
    if not topic:
        return "an empty filter"
    if "\x00" in topic or len(topic.encode()) > 65_535:
        return "a NUL character or more than 65,535 bytes"
    rest = topic
    if topic.startswith("$share/"):
        group, _, rest = topic.removeprefix("$share/").partition("/")
        if not group or any(ch in group for ch in "+#"):
            return "a shared subscription needs a group name without + or # ($share/<group>/<filter>)"
        if not rest:
            return "a shared subscription needs a filter after its group ($share/<group>/<filter>)"
    levels = rest.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "# must be a whole level and the last one"
        if "+" in level and level != "+":
            return "+ must be a whole level"
    return None


def _filters_overlap(a: str, b: str) -> bool:
    """Whether two topic filters (without ``$share/<group>/``) match a common topic, level by level: ``#``
    matches the rest (and its parent level: a/# matches a), ``+`` any one level, else the levels are equal."""
    x, y = a.split("/"), b.split("/")
    for i in range(max(len(x), len(y))):
        if i >= len(x):
            return y[i] == "#"
        if i >= len(y):
            return x[i] == "#"
        if "#" in (x[i], y[i]):
            return True
        if x[i] != y[i] and "+" not in (x[i], y[i]):
            return False
    return True


def _unshared(topic: str) -> str:
    return topic.removeprefix("$share/").partition("/")[2] if topic.startswith("$share/") else topic


def check_topic_filters(topics: Sequence[str]) -> list[str]:
    """The consumer's topic filters, each checked; :class:`UsageError` naming the filter otherwise.

    Filters that overlap (match a common topic) are refused: the broker may deliver a message once per
    matching subscription, and each copy would be counted.
    """
    filters = list(topics)
    if not filters:
        raise UsageError("no topic filter to subscribe to: give --topic or a topic in the spec's mqtt source")
    for t in filters:
        why = _filter_problem(t)
        if why is not None:
            raise UsageError(f"topic filter {t[:200]!r} is not valid: {why}")
    for i, a in enumerate(filters):
        for b in filters[i + 1:]:
            if a == b:
                raise UsageError(f"topic filter {a[:200]!r} is given twice")
            if _filters_overlap(_unshared(a), _unshared(b)):
                raise UsageError(f"topic filters {a[:200]!r} and {b[:200]!r} overlap (they match the same "
                                 "topics): the broker may deliver such a message once per filter; make them disjoint")
    return filters


def mqtt_source(spec: DatasetSpec, topic: str | None = None) -> MqttSource:
    """The spec's MQTT source (the first), its topic replaced by ``topic`` when given."""
    sources = [s for s in spec.sources if isinstance(s, MqttSource)]
    if not sources:
        if topic is None:
            raise UsageError(f"dataset {spec.name!r} has no mqtt source in its spec: add one or give --topic")
        return MqttSource(topic=topic)
    return sources[0].model_copy(update={"topic": topic}) if topic else sources[0]


def run_id_for(client_id: str, seq: int) -> str:
    return f"{_SAFE.sub('_', client_id)[:100]}-{seq:08d}"


def _next_seq(lake: Lake, dataset: str, client_id: str) -> int:
    """1 + the highest sequence number of this consumer's runs in the lake (committed or not)."""
    pat = re.compile(rf"^run={re.escape(run_id_for(client_id, 0)[:-8])}(\d{{8}})$")
    best = 0
    for date_dir in lake.store.listdir("raw", dataset):
        for name in lake.store.listdir("raw", dataset, date_dir):
            m = pat.match(name)
            if m:
                best = max(best, int(m.group(1)))
    return best + 1


class StreamConsumer:
    """One MQTT consumer writing one dataset. Call :meth:`run`; :meth:`stop` from any thread or a signal."""

    def __init__(self, spec: DatasetSpec, lake: Lake, source: MqttSource, config: StreamConfig | None = None,
                 *, client_id: str | None = None,
                 on_progress: Callable[[StreamResult], None] | None = None,
                 online: OnlineWriter | None = None, metrics: StreamMetrics | None = None,
                 registry: ModelRegistry | None = None, topics: Sequence[str] | None = None) -> None:
        self.spec, self.lake, self.source = spec, lake, source
        #: the filters subscribed (``topics`` when given, else the source's topic), each checked
        self.topics = check_topic_filters(topics if topics else [source.topic])
        #: the model scoring readings or closed windows (windows.scoring), loaded once, before connecting
        self.scorer: StreamScorer | None = None
        scoring = spec.windows.scoring if spec.windows is not None else None
        if scoring is not None:
            if registry is None:
                raise ConfigError(f"{spec.name}: windows.scoring names model {scoring.model!r}: the consumer "
                                  "needs the model registry", model=scoring.model)
            self.scorer = StreamScorer(spec, scoring, registry)
        #: the window state (None when the spec declares no windows) and its state at the last commit
        self.windows = WindowEngine(spec) if spec.windows is not None else None
        self._committed_state = self.windows.snapshot() if self.windows is not None else None
        self.online = online
        self.metrics = metrics or StreamMetrics(spec.name)
        self.alerts: AlertDispatcher | None = None
        self.config = config or StreamConfig()
        self.client_id = client_id or source.client_id or f"skiff-stream-{spec.name}"
        if self.source.qos == 0:
            log.warning("%s: QoS 0 subscription: messages may be lost (use qos 1)", self._filters)
        self.result = StreamResult(spec.name, self.client_id, list(self.topics))
        self.on_progress = on_progress
        #: messages, the stop marker and reconnect notices, in arrival order
        self._queue: queue.Queue[StreamMessage | object] = queue.Queue()
        self._stop = threading.Event()
        self._intake_lock = threading.Lock()
        self._intake_closed = False
        self._received = 0
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._connect_error: str | None = None
        self._writer_error: BaseException | None = None
        self._client: mqtt.Client | None = None
        #: scores and alerts handed to paho and not yet acknowledged by the broker (awaited before disconnecting)
        self._outgoing: list[mqtt.MQTTMessageInfo] = []
        self._seq = 0
        self._connection = 0
        self._broker = f"mqtt://{source.host}:{source.port}"

    @property
    def _filters(self) -> str:
        """The topic filters, for messages and the run manifests (one filter: the filter itself)."""
        return ", ".join(self.topics)

    # -- control -----------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def not_ready(self) -> str | None:
        """Why the consumer is not ready (None when it is): readiness follows the broker connection."""
        if self._writer_error is not None:
            return f"writer failed: {type(self._writer_error).__name__}"
        if not self._subscribed.is_set() or self._connect_error:
            return self._connect_error or "not subscribed yet"
        if not self._connected.is_set():
            return "disconnected from the broker (reconnecting)"
        return None

    def _publish_message(self, topic: str, body: bytes, what: str = "alert") -> None:
        """Publish at QoS 1 through the consumer's connection (paho sends it, again after a reconnect); wait
        up to 5 s while paho's outgoing queue is full, then drop it and count it."""
        import paho.mqtt.client as mqtt

        client = self._client
        if client is None:
            return
        deadline = time.monotonic() + 5.0
        while True:
            info = client.publish(topic, body, qos=1)
            if info.rc != mqtt.MQTT_ERR_QUEUE_SIZE:
                self._outgoing.append(info)
                if len(self._outgoing) >= 4096:
                    self._outgoing = [i for i in self._outgoing if not i.is_published()]
                return
            if time.monotonic() >= deadline or self._stop.is_set():
                self.metrics.publish_dropped.labels(self.spec.name, what).inc()
                return
            time.sleep(0.002)

    def _drain_outgoing(self, timeout: float = 10.0) -> None:
        """Wait (up to ``timeout`` s) for the broker to acknowledge the scores and alerts published."""
        deadline = time.monotonic() + timeout
        left = 0
        for info in self._outgoing:
            if not info.is_published():
                with contextlib.suppress(RuntimeError, ValueError):  # not connected: paho reports it, we count it
                    info.wait_for_publish(max(0.0, deadline - time.monotonic()))
                left += not info.is_published()
        if left:
            log.warning("%s: %d scores/alerts not acknowledged by the broker before disconnecting", self.spec.name, left)
        self._outgoing = []

    @property
    def received(self) -> int:
        """Messages taken in so far (published or still buffered)."""
        return self._received

    def run(self) -> StreamResult:
        """Connect, consume until stopped (stop(), max_messages or duration), flush, disconnect."""
        started = time.monotonic()
        self._seq = _next_seq(self.lake, self.spec.name, self.client_id)
        if self.windows is not None:
            self._restore_windows()
            if any(t.startswith("$share/") for t in self.topics):
                log.warning("%s: windows over a shared subscription: the broker hands a device's readings to "
                            "any consumer of the group, so its windows split; partition devices by topic "
                            "instead (disjoint topic filters per consumer)", self.spec.name)
        scoring = self.spec.windows.scoring if self.spec.windows is not None else None
        if self.spec.windows is not None and (self.spec.windows.alerts or (scoring and scoring.alert)):
            self.alerts = AlertDispatcher(self.spec.name, self.metrics, topic=self.spec.windows.alert_topic,
                                          publish=lambda topic, body: self._publish_message(topic, body),
                                          webhook_env=self.spec.windows.alert_webhook_env)
        try:
            client = self._connect()
        except BaseException:
            if self.alerts is not None:
                self.alerts.close(timeout=0.1)
            raise
        writer = threading.Thread(target=self._writer, name="skiff-stream-writer", daemon=True)
        writer.start()
        try:
            deadline = started + self.config.duration_s if self.config.duration_s else None
            while not self._stop.wait(0.2):
                self.metrics.tick(self._received)
                self.metrics.queue.set(self._queue.qsize())
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if not writer.is_alive():
                    break
        finally:
            with self._intake_lock:  # later messages stay unacknowledged: the broker delivers them again
                self._intake_closed = True
                self._queue.put(_STOP)
            writer.join()
            if self.alerts is not None:
                self.alerts.close()
            self._drain_outgoing()
            client.disconnect()
            client.loop_stop()
            self.metrics.connected.set(0)
            self.result.duration_s = time.monotonic() - started
        if self._writer_error is not None:
            raise self._writer_error
        return self.result

    # -- MQTT ----------------------------------------------------------------------------------------
    def _credentials(self) -> tuple[str | None, str | None]:
        values: list[str | None] = []
        for what, var in (("username_env", self.source.username_env), ("password_env", self.source.password_env)):
            if var is None:
                values.append(None)
            elif var not in os.environ:
                raise ConfigError(f"mqtt source {self._filters!r}: {what} names the environment variable "
                                  f"{var}, which is not set")
            else:
                values.append(os.environ[var])
        return values[0], values[1]

    def _connect(self) -> mqtt.Client:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        cfg = self.config
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True)
        # caps on paho's own outgoing QoS>0 messages (unbounded, paho reused message ids and lost some)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(1000)
        user, password = self._credentials()
        if user is not None or password is not None:
            client.username_pw_set(user, password)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it unannotated
        props.SessionExpiryInterval = cfg.session_expiry_s
        props.ReceiveMaximum = cfg.window
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        where = f"MQTT broker {self.source.host}:{self.source.port}"
        try:
            client.connect(self.source.host, self.source.port, keepalive=cfg.keepalive_s, clean_start=False,
                           properties=props)
        except (OSError, ValueError) as e:
            raise SourceError(f"{where} unreachable: {e}", broker=self._broker) from e
        client.loop_start()
        if not self._subscribed.wait(cfg.connect_timeout_s) or self._connect_error:
            client.disconnect()
            client.loop_stop()
            why = self._connect_error or f"no CONNACK/SUBACK within {cfg.connect_timeout_s:g} s"
            raise SourceError(f"{where}: {why}", broker=self._broker)
        self._client = client
        log.info("%s: consuming %s as %s", where, self._filters, self.client_id)
        return client

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: ConnectFlags, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        if reason_code.is_failure:
            self._connect_error = f"connection refused: {reason_code}"
            self._subscribed.set()
            return
        with self._intake_lock:
            self._connection += 1
            if self._connection > 1:  # a reconnect: tell the writer, in order with the messages before it
                self._queue.put((_RECONNECTED, bool(getattr(flags, "session_present", False))))
        self._connected.set()
        self.metrics.connected.set(1)
        if getattr(flags, "session_present", False):
            log.info("%s: resumed the persistent session", self.client_id)
        client.subscribe([(t, int(self.source.qos)) for t in self.topics])

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reason_codes: list[ReasonCode],
                      properties: Properties | None) -> None:
        bad = [(t, rc) for t, rc in zip(self.topics, reason_codes, strict=False) if rc.is_failure]
        if bad:
            self._connect_error = f"subscription to {bad[0][0]!r} refused: {bad[0][1]}"
        self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        self._connected.clear()
        self.metrics.connected.set(0)
        if not self._intake_closed:
            log.warning("%s: disconnected (%s); paho reconnects, unacknowledged messages come again",
                        self.client_id, reason_code)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._intake_lock:
            if self._intake_closed:
                return
            max_n = self.config.max_messages
            if max_n is not None and self._received >= max_n:
                return  # not acknowledged: the broker keeps it for the next session
            self._received += 1
            self._queue.put(StreamMessage(msg.topic, msg.mid, msg.qos, bytes(msg.payload), self._received,
                                          self._connection, time.monotonic()))
            self.metrics.messages.inc()
            if max_n is not None and self._received >= max_n:
                self._stop.set()

    # -- writer thread -------------------------------------------------------------------------------
    def _writer(self) -> None:
        buf = self._segment()
        cfg = self.config
        try:
            while True:
                wait = cfg.batch_seconds if buf.first_at is None else max(
                    0.0, buf.first_at + cfg.batch_seconds - time.monotonic())
                try:
                    items: list[object] = [self._queue.get(timeout=wait)]
                except queue.Empty:
                    items = [None]
                if self.windows is not None and items[0] is not None:  # one poll: what the queue holds
                    while len(items) < cfg.poll_max:
                        try:
                            items.append(self._queue.get_nowait())
                        except queue.Empty:
                            break
                for item in items:
                    if item is _STOP:
                        if buf.msgs:
                            self._flush(buf)
                        return
                    if isinstance(item, tuple) and item[0] is _RECONNECTED:
                        if item[1] and buf.msgs:
                            # the resumed session delivers every unacknowledged message again: drop our copies
                            log.warning("%s: reconnected to its session; %d unpublished messages come again",
                                        self.client_id, len(buf.msgs))
                            with self._intake_lock:
                                self._received -= len(buf.msgs)
                            buf = self._segment()
                            if self.windows is not None and self._committed_state is not None:
                                self.windows.restore(*self._committed_state)  # forget what those polls did
                        continue
                    if isinstance(item, StreamMessage):
                        buf.add(item)
                    half_window = len(buf.msgs) >= max(1, cfg.window // 2)
                    if buf.msgs and (buf.records >= cfg.batch_rows or half_window):
                        self._flush(buf)
                        buf = self._segment()
                if self.windows is not None and buf.msgs:
                    self._poll(buf)
                self.metrics.inflight.set(len(buf.msgs))
                due = buf.first_at is not None and time.monotonic() >= buf.first_at + cfg.batch_seconds
                if buf.msgs and due:
                    self._flush(buf)
                    buf = self._segment()
        except BaseException as e:  # noqa: BLE001 - handed to run(), which re-raises it
            self._writer_error = e
            self._stop.set()

    def _segment(self) -> StreamSegment:
        """An empty segment; its commit acknowledges its messages through this consumer's connection."""
        return StreamSegment(self.spec, self.source, self.client_id, acknowledge=self._ack, topic=self._filters)

    def _ack(self, msgs: Sequence[StreamMessage]) -> None:
        """PUBACK in arrival order (called by a segment's commit, after its run is published)."""
        client = self._client
        if client is None:
            raise InvariantError(f"{self.client_id}: acknowledging messages without a connection")
        for m in msgs:
            if m.qos > 0 and m.connection == self._connection:  # a mid is only valid on its connection
                client.ack(m.mid, m.qos)

    def _flush(self, buf: StreamSegment) -> None:
        """Cleanse the segment, publish it as one run, then commit it (acknowledge its messages)."""
        if self.windows is not None:
            self._flush_windowed(buf)
            return
        cleanser = Cleanser(self.spec)
        [batch] = buf.batches()
        res = cleanser.process(batch)
        accepted = self._impute(cleanser, res.accepted)
        quarantine = self._annotate(res.quarantine, buf.row_msgs)
        if buf.rejected:
            quarantine = pa.concat_tables([quarantine, self._rejected_table(cleanser, buf.rejected)])
        reasons = Counter(res.reasons)
        reasons.update(r.reason for _, r in buf.rejected)
        counts = Counter(messages=len(buf.msgs), read=buf.records, accepted=accepted.num_rows,
                         quarantined=quarantine.num_rows, duplicates=res.duplicates)
        if counts["read"] != counts["accepted"] + counts["quarantined"] + counts["duplicates"]:
            raise InvariantError(f"{self.spec.name}: stream batch read {counts['read']} != accepted "
                                 f"{counts['accepted']} + quarantined {counts['quarantined']} + duplicates "
                                 f"{counts['duplicates']}")
        ref = self._publish(accepted, quarantine, counts, reasons, buf)
        buf.commit_state()  # PUBACK in arrival order, after the run is committed
        self._committed(ref, counts, reasons)

    def _committed(self, ref: RunRef, counts: Counter[str], reasons: Counter[str]) -> None:
        self.metrics.committed(counts["accepted"], counts["quarantined"], counts["duplicates"], dict(reasons))
        self.result.counts.update(counts)
        self.result.reasons.update(reasons)
        self.result.runs.append(ref)
        log.info("%s: run %s: %d messages, %d accepted, %d quarantined, %d duplicates", self.spec.name,
                 ref.run_id, counts["messages"], counts["accepted"], counts["quarantined"], counts["duplicates"])
        if self.on_progress is not None:
            self.on_progress(self.result)

    # -- windows ---------------------------------------------------------------------------------------
    def _restore_windows(self) -> None:
        """Resume every device's windows from the newest checkpoint holding it.

        Each consumer checkpoints the state of the devices it holds with each run. At start this consumer reads
        the latest checkpoint of every consumer of the dataset (its own and the others', by client id) and
        takes, per device, the state with the newest event time (its own on a tie): a device whose topic moved
        to this consumer while the consumers were restarted continues its windows here, and one that moved
        away and back is not resumed from a stale copy."""
        engine = self.windows
        if engine is None:
            return
        pat = re.compile(r"^(.*)-(\d{8})$")
        mine = run_id_for(self.client_id, 0)[:-9]
        newest: dict[str, tuple[int, RunRef]] = {}
        for ref in self.lake.all_runs(self.spec.name):
            m = pat.match(ref.run_id)
            if m is None:
                continue
            seq = int(m.group(2))
            if (m.group(1) not in newest or seq > newest[m.group(1)][0]) \
                    and self.lake.store.exists(*ref.parts, STATE_DEVICES):
                newest[m.group(1)] = (seq, ref)
        if not newest:
            return
        # own checkpoint first: on equal event times it wins
        order = sorted(newest, key=lambda c: (c != mine, c))
        states: list[tuple[str, RunRef, pa.Table, pa.Table]] = []
        for client in order:
            ref = newest[client][1]
            with self.lake.store.open(*ref.parts, STATE_PANES) as f:
                panes = pq.read_table(f)
            with self.lake.store.open(*ref.parts, STATE_DEVICES) as f:
                devices = pq.read_table(f)
            states.append((client, ref, panes, devices))
        best: dict[object, tuple[int, int]] = {}  # device -> (max_t, index of the checkpoint)
        for i, (_c, _r, _p, devices) in enumerate(states):
            for key, max_t in zip(devices.column("key").to_pylist(), devices.column("max_t").to_pylist(), strict=True):
                t = -1 if max_t is None else int(max_t)
                if key not in best or t > best[key][0]:
                    best[key] = (t, i)
        panes_parts, device_parts = [], []
        for i, (_c, _r, panes, devices) in enumerate(states):
            chosen = [k for k, (_t, j) in best.items() if j == i]
            if not chosen:
                continue
            keys = pa.array(chosen, devices.schema.field("key").type)
            device_parts.append(devices.filter(pc.is_in(devices.column("key"), value_set=keys)))
            panes_parts.append(panes.filter(pc.is_in(panes.column("key"), value_set=keys)))
        panes_t = pa.concat_tables(panes_parts)
        devices_t = pa.concat_tables(device_parts)
        engine.restore(panes_t, devices_t)
        self._committed_state = (panes_t, devices_t)
        taken = Counter(states[j][0] for _t, j in best.values())
        taken.pop(mine, None)
        where = f"run {newest[mine][1].run_id}" if mine in newest else "no checkpoint of its own"
        log.info("%s: resumed %d devices' windows from %s%s", self.spec.name, devices_t.num_rows, where,
                 "".join(f"; {n} devices from {c}'s checkpoint" for c, n in sorted(taken.items())))

    def _poll(self, buf: StreamSegment) -> None:
        """Cleanse the rows that came since the last poll, run them through the windows, push online."""
        engine = self.windows
        got = buf.take()
        if engine is None or got is None:
            return
        acc: _PollState | None = getattr(buf, "polls", None)
        if acc is None:
            acc = _PollState(Cleanser(self.spec))
            buf.polls = acc  # type: ignore[attr-defined]  # the segment carries its polls' results
        batch, msgs = got
        res = acc.cleanser.process(batch)
        accepted = self._impute(acc.cleanser, res.accepted)
        acc.quarantine.append(self._annotate(res.quarantine, msgs))
        acc.reasons.update(res.reasons)
        acc.duplicates += res.duplicates
        # the message of each accepted row (exact when the cleanser dropped no duplicate from the poll)
        row_msgs: list[StreamMessage] | None = None
        if res.duplicates == 0:
            bad = set(res.quarantine.column("_row").to_pylist())
            row_msgs = [m for i, m in enumerate(msgs) if i not in bad]
        ts = accepted.column(engine.ts)
        if ts.null_count:
            has = pc.is_valid(ts)
            missing = pc.invert(has)
            idx = pc.indices_nonzero(missing).to_pylist()
            acc.quarantine.append(self._window_quarantine(accepted, idx, row_msgs, "no_event_time",
                                                          ["no event time: windows cannot place it"] * len(idx), None))
            acc.reasons["no_event_time"] += len(idx)
            keep_idx = pc.indices_nonzero(has).to_pylist()
            row_msgs = [row_msgs[i] for i in keep_idx] if row_msgs is not None else None
            accepted = accepted.filter(has)
        scorer = self.scorer
        if scorer is not None and scorer.conf.score == "readings" and accepted.num_rows:
            unscorable, first = scorer.missing(accepted)
            if unscorable.any():
                idx = np.flatnonzero(unscorable).tolist()
                problems = [f"{scorer.ref} needs {c!r}; the reading has no value" for c in first]
                acc.quarantine.append(self._window_quarantine(accepted, idx, row_msgs, MISSING_INPUT, problems,
                                                              None, columns=first))
                acc.reasons[MISSING_INPUT] += len(idx)
                keep_idx = np.flatnonzero(~unscorable).tolist()
                row_msgs = [row_msgs[i] for i in keep_idx] if row_msgs is not None else None
                accepted = accepted.filter(pa.array(~unscorable))
        wb = engine.process(accepted)
        if wb.late:
            idx = [lr.row for lr in wb.late]
            acc.quarantine.append(self._window_quarantine(accepted, idx, row_msgs, "late",
                                                          [lr.describe() for lr in wb.late],
                                                          [lr.window for lr in wb.late]))
            acc.reasons["late"] += len(idx)
        acc.duplicates += int(wb.duplicate.sum())
        kept = accepted.filter(pa.array(wb.keep))
        acc.accepted.append(kept)
        for name, table in wb.closed.items():
            acc.closed.setdefault(name, []).append(table)
        acc.alerts += wb.alerts
        if scorer is not None:
            self._score(acc, scorer, wb, kept)
        self._after_poll(wb, accepted, msgs, kept)

    def _score(self, acc: _PollState, scorer: StreamScorer, wb: WindowBatch, kept: pa.Table) -> None:
        """Score the poll's stored readings (or its closed windows): into the run, onto the topic, alerts."""
        engine = self.windows
        assert engine is not None
        conf = scorer.conf
        if conf.score == "readings":
            rows, times, window = kept, kept.column(engine.ts), None
        else:
            window = conf.window
            rows = wb.closed.get(window or "")
            if rows is None or not rows.num_rows:
                return
            bad, _first = scorer.missing(rows)
            if bad.any():
                self.metrics.scores_skipped.labels(self.spec.name, scorer.ref).inc(int(bad.sum()))
                rows = rows.filter(pa.array(~bad))
            times = rows.column(WINDOW_END)
        if not rows.num_rows:
            return
        scored = scorer.score(rows)
        self.metrics.score_seconds.labels(self.spec.name, scorer.ref).observe(scored.seconds)
        self.metrics.scores.labels(self.spec.name, scorer.ref, scored.engine).inc(rows.num_rows)
        table = score_table(engine.key, rows.column(engine.key), times, window, scorer, scored)
        acc.scores.append(table)
        self._deliver_scores(scorer, table, scored, acc)

    def _deliver_scores(self, scorer: StreamScorer, table: pa.Table, scored: Scored, acc: _PollState) -> None:
        import json

        conf = scorer.conf
        keys = table.column(0).to_pylist()
        t_us = pc.cast(table.column("event_time"), pa.int64()).to_pylist()
        stamps = pc.strftime(table.column("event_time"), format="%Y-%m-%dT%H:%M:%SZ").to_pylist()
        alerts: list[Alert] = []
        rule = f"{scorer.ref} {conf.alert.name}" if conf.alert is not None else ""
        for i, x in enumerate(scored.score.tolist()):
            if conf.topic is not None:
                doc = {"dataset": self.spec.name, "entity": keys[i], "event_time": stamps[i], "model": scorer.name,
                       "model_version": scorer.version, "score": x}
                if conf.window is not None:
                    doc["window"] = conf.window
                if scored.label[i] is not None:
                    doc["label"] = scored.label[i]
                self._publish_message(conf.topic, json.dumps(doc).encode(), "score")
            if conf.alert is not None:
                fired = conf.alert.fires(x)
                if fired is not None:
                    alerts.append(Alert(str(keys[i]), int(t_us[i]), rule, "score", x, fired))
        if alerts:
            acc.alerts += alerts
            if self.alerts is not None:
                self.alerts.dispatch(alerts)

    def _after_poll(self, wb: WindowBatch, accepted: pa.Table, msgs: list[StreamMessage], kept: pa.Table) -> None:
        """Online push, alerts and metrics of one poll."""
        engine = self.windows
        assert engine is not None
        now_wall = time.time()
        for table in wb.closed.values():
            ends = pc.cast(table.column(WINDOW_END), pa.int64()).to_numpy(zero_copy_only=False)
            for e in ends.tolist():
                self.metrics.close_delay.observe(max(0.0, now_wall - e / 1e6))
        if kept.num_rows:
            newest = pc.max(pc.cast(kept.column(engine.ts), pa.int64())).as_py()
            if newest is not None:
                self.metrics.lag.set(now_wall - newest / 1e6)
        self.metrics.open_windows.set(engine.open_windows)
        if wb.alerts and self.alerts is not None:
            self.alerts.dispatch(wb.alerts)
        latest = accepted.take(pa.array(wb.latest, pa.int64()))
        if self.online is not None and (latest.num_rows or wb.closed):
            took = self.online.write(latest, wb.closed)
            self.metrics.push.observe(took)
            if msgs:
                self.metrics.to_online.observe(time.monotonic() - msgs[0].received_at)

    def _window_quarantine(self, accepted: pa.Table, idx: list[int], row_msgs: list[StreamMessage] | None,
                           reason: str, problems: list[str], windows: list[str] | None,
                           columns: list[str] | None = None) -> pa.Table:
        """Quarantine rows for accepted readings the windows refuse (values as text, like every quarantine)."""
        n = len(idx)
        rows = accepted.take(pa.array(idx, pa.int64()))
        msgs = [row_msgs[i] for i in idx] if row_msgs is not None else None
        engine = self.windows
        cols: dict[str, pa.Array] = {
            "_source": pa.array([self._broker] * n, pa.string()),
            "_row": pa.nulls(n, pa.int64()),
            "_page": pa.nulls(n, pa.int64()),
            "_column": pa.array(columns if columns is not None else [engine.ts if engine is not None else None] * n,
                                pa.string()),
            "_reason": pa.array([reason] * n, pa.string()),
            "_problems": pa.array(problems, pa.string()),
        }
        for name in rows.column_names:
            col = rows.column(name)
            if pa.types.is_timestamp(col.type):
                col = pc.strftime(col, format="%Y-%m-%dT%H:%M:%SZ")
            cols[name] = pc.cast(col, pa.string())
        cols["_topic"] = pa.array([m.topic for m in msgs] if msgs else [None] * n, pa.string())
        cols["_message"] = pa.array([m.number for m in msgs] if msgs else [None] * n, pa.int64())
        cols["_mid"] = pa.array([m.mid for m in msgs] if msgs else [None] * n, pa.int64())
        cols["_window"] = pa.array(windows if windows is not None else [None] * n, pa.string())
        return pa.table(cols)

    def _flush_windowed(self, buf: StreamSegment) -> None:
        """Publish a segment's polls as one run with its closed windows and the window checkpoint."""
        from skiff.stream_features import run_window_file

        engine = self.windows
        assert engine is not None
        self._poll(buf)
        acc: _PollState | None = getattr(buf, "polls", None)
        if acc is None:
            acc = _PollState(Cleanser(self.spec))
        accepted = (pa.concat_tables(acc.accepted, promote_options="default") if acc.accepted
                    else acc.cleanser.output_schema().empty_table())
        parts = acc.quarantine
        if buf.rejected:
            parts = [*parts, self._rejected_table(acc.cleanser, buf.rejected)]
        quarantine = (pa.concat_tables(parts, promote_options="default") if parts
                      else self._annotate(acc.cleanser.quarantine_schema().empty_table(), []))
        reasons = Counter(acc.reasons)
        reasons.update(r.reason for _, r in buf.rejected)
        counts = Counter(messages=len(buf.msgs), read=buf.records, accepted=accepted.num_rows,
                         quarantined=quarantine.num_rows, duplicates=acc.duplicates)
        if counts["read"] != counts["accepted"] + counts["quarantined"] + counts["duplicates"]:
            raise InvariantError(f"{self.spec.name}: stream batch read {counts['read']} != accepted "
                                 f"{counts['accepted']} + quarantined {counts['quarantined']} + duplicates "
                                 f"{counts['duplicates']}")
        panes, devices = engine.snapshot()
        extra = {STATE_PANES: panes, STATE_DEVICES: devices}
        for w in engine.defs:
            got = acc.closed.get(w.name)
            extra[run_window_file(w.name)] = pa.concat_tables(got) if got else engine.empty_closed(w.name)
        if acc.alerts:
            extra["_alerts.parquet"] = pa.Table.from_pylist([a.to_dict() for a in acc.alerts])
        if self.scorer is not None:
            extra[SCORES_FILE] = (pa.concat_tables(acc.scores) if acc.scores
                                  else empty_scores(engine.key, engine.key_type))
        ref = self._publish(accepted, quarantine, counts, reasons, buf, extra)
        self._committed_state = (panes, devices)
        buf.commit_state()  # PUBACK in arrival order, after the run (and the window state) is committed
        self._committed(ref, counts, reasons)

    def _impute(self, cleanser: Cleanser, table: pa.Table) -> pa.Table:
        """mean/median/mode imputation with the statistic of this run's accepted rows."""
        for name, how in cleanser.stat_imputed.items():
            i = table.schema.get_field_index(name)
            col = table.column(i)
            if col.null_count:
                value = impute_statistic(col, how, col.type)
                if value is not None:
                    table = table.set_column(i, name, pc.fill_null(col, pa.scalar(value, col.type)))
        return table

    def _annotate(self, quarantine: pa.Table, row_msgs: list[StreamMessage]) -> pa.Table:
        """Topic, message number and MQTT message id of each quarantined row."""
        idx = quarantine.column("_row").to_pylist()
        msgs = [row_msgs[i] for i in idx]
        return quarantine.append_column("_topic", pa.array([m.topic for m in msgs], pa.string())) \
            .append_column("_message", pa.array([m.number for m in msgs], pa.int64())) \
            .append_column("_mid", pa.array([m.mid for m in msgs], pa.int64()))

    def _rejected_table(self, cleanser: Cleanser, rejected: list[tuple[StreamMessage, Rejected]]) -> pa.Table:
        n = len(rejected)
        cols: dict[str, pa.Array] = {
            "_source": pa.array([self._broker] * n, pa.string()),
            "_row": pa.nulls(n, pa.int64()),
            "_page": pa.nulls(n, pa.int64()),
            "_column": pa.nulls(n, pa.string()),
            "_reason": pa.array([r.reason for _, r in rejected], pa.string()),
            "_problems": pa.array([f"{r.problem}: {r.raw[:500]!r}" for _, r in rejected], pa.string()),
        }
        cols.update({name: pa.nulls(n, pa.string()) for name in cleanser.quarantine_schema().names
                     if name not in cols})
        cols["_topic"] = pa.array([m.topic for m, _ in rejected], pa.string())
        cols["_message"] = pa.array([m.number for m, _ in rejected], pa.int64())
        cols["_mid"] = pa.array([m.mid for m, _ in rejected], pa.int64())
        return pa.table(cols)

    def _publish(self, accepted: pa.Table, quarantine: pa.Table, counts: Counter[str], reasons: Counter[str],
                 buf: StreamSegment, extra: dict[str, pa.Table] | None = None) -> RunRef:
        date = dt.datetime.now(dt.UTC).date().isoformat()
        spec_hash = spec_fingerprint(self.spec)
        sources: list[SourceReader] = [buf]
        fingerprint = run_fingerprint(spec_hash, sources)
        entries = [dict(r.describe()) for r in sources]
        for _attempt in range(100):
            run_id = run_id_for(self.client_id, self._seq)
            self._seq += 1
            try:
                with self.lake.publish_run(self.spec.name, run_id, date) as staging:
                    pq.write_table(accepted, staging / _PART)
                    pq.write_table(quarantine, staging / QUARANTINE)
                    for name, table in (extra or {}).items():  # window results and state: underscore names
                        pq.write_table(table, staging / name)
                    staging.manifest = RunManifest(
                        dataset=self.spec.name,
                        run_id=run_id,
                        ingest_date=date,
                        fingerprint=fingerprint,
                        spec_hash=spec_hash,
                        sources=entries,
                        counts=RunCounts(**counts),
                        quarantine_reasons=dict(sorted(reasons.items())),
                        schema={f.name: str(f.type) for f in accepted.schema},
                        files=[PartFile(name=_PART, rows=accepted.num_rows)],
                        quarantine_file=QUARANTINE,
                        started_at=(buf.started_at or dt.datetime.now(dt.UTC)).isoformat(),
                        skiff_version=__version__,
                    )
                return RunRef(self.spec.name, date, run_id)
            except ConflictError:  # a run of this id exists (an earlier process): take the next number
                log.warning("%s: run %s exists; using the next sequence number", self.spec.name, run_id)
            except OSError as e:
                raise StorageError(f"{self.spec.name}: publishing stream run {run_id} to "
                                   f"{self.lake.store.uri('raw')} failed (its messages stay unacknowledged "
                                   f"and come again): {e}") from e
        raise ConflictError(f"{self.spec.name}: no free run id for consumer {self.client_id}")


def consume(spec: DatasetSpec, lake: Lake, *, topic: str | Sequence[str] | None = None,
            config: StreamConfig | None = None, client_id: str | None = None,
            on_progress: Callable[[StreamResult], None] | None = None) -> StreamResult:
    """Consume the spec's MQTT source (or the filters ``topic``) into the lake until a stop condition; see
    the module."""
    topics = [topic] if isinstance(topic, str) else list(topic or [])
    consumer = StreamConsumer(spec, lake, mqtt_source(spec, topics[0] if topics else None), config,
                              client_id=client_id, on_progress=on_progress, topics=topics or None)
    return consumer.run()
