"""Real-time interaction events from MQTT into a recommender's recent items.

``python -m skiff.recommend.stream MODEL --topic shop/events [--host H --port P --version V]`` subscribes to
the topic; each message is one event object or a list of them (the fields of
:class:`~skiff.recommend.events.InteractionEvent`). paho's network thread only queues messages; a worker
thread drains the queue in batches (up to ``batch`` events or ``linger_ms``) and merges them into the
users' recent items in the online store (:class:`~skiff.recommend.online.RecentItems`), where the model
server reads them on the next request. A message that is not valid JSON or not an event is counted under
its reason and dropped (never retried); unknown event types likewise.

Delivery: QoS 1 subscription, acknowledged by paho on receipt, so an event is at most once in the store
if the consumer dies between receipt and write (a recent-items list is a hint for ranking, not a ledger).
Several consumers share a subscription with ``$share/<group>/<topic>``; keep one user's events on one
consumer (a topic per user shard) so no two writers merge the same user at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from skiff.recommend.events import InteractionEvent, RecsConfig

if TYPE_CHECKING:
    from skiff.recommend.online import RecentItems

__all__ = ["EventConsumer", "parse_message", "main"]

log = logging.getLogger(__name__)


def parse_message(payload: bytes, config: RecsConfig) -> tuple[list[InteractionEvent], Counter[str]]:
    """The events of one message and, per reason, what was dropped."""
    dropped: Counter[str] = Counter()
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        dropped["not JSON"] += 1
        return [], dropped
    raw = body if isinstance(body, list) else [body]
    events = []
    for item in raw:
        try:
            event = InteractionEvent.model_validate(item)
        except ValidationError:
            dropped["not an event"] += 1
            continue
        if config.weight(event.event_type) is None:
            dropped["unknown event type"] += 1
            continue
        events.append(event)
    return events, dropped


class EventConsumer:
    """MQTT subscription → queue → batched writes to the recent items (see the module docstring)."""

    def __init__(self, recent: RecentItems, topic: str, *, host: str = "127.0.0.1", port: int = 1883,
                 client_id: str | None = None, batch: int = 500, linger_ms: float = 20.0) -> None:
        self.recent = recent
        self.topic = topic
        self.host, self.port = host, port
        self.client_id = client_id or f"skiff-recs-{recent.model}"
        self.batch, self.linger_s = batch, linger_ms / 1000.0
        self.counts: Counter[str] = Counter()
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=10_000)
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._client: Any = None
        self._worker: threading.Thread | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id)
        client.max_inflight_messages_set(1000)  # paho reuses message ids past this (facts: lost messages)

        def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
            c.subscribe(self.topic, qos=1)

        def on_subscribe(c: Any, userdata: Any, mid: Any, reasons: Any, properties: Any) -> None:
            self._subscribed.set()

        def on_message(c: Any, userdata: Any, msg: Any) -> None:
            try:
                self._queue.put(msg.payload, timeout=5)
            except queue.Full:
                self.counts["dropped: queue full"] += 1

        client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
        client.connect(self.host, self.port)
        client.loop_start()
        self._client = client
        self._worker = threading.Thread(target=self._drain, name="recs-events", daemon=True)
        self._worker.start()
        if not self._subscribed.wait(timeout_s):
            self.stop()
            raise TimeoutError(f"no subscription to {self.topic!r} on {self.host}:{self.port} in {timeout_s}s")

    def _drain(self) -> None:
        while not self._stop.is_set() or not self._queue.empty():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            events, dropped = parse_message(first, self.recent.config)
            deadline = time.monotonic() + self.linger_s
            while len(events) < self.batch and time.monotonic() < deadline:
                try:
                    more, d = parse_message(self._queue.get(timeout=max(deadline - time.monotonic(), 0.001)),
                                            self.recent.config)
                except queue.Empty:
                    break
                events += more
                dropped += d
            for reason, n in dropped.items():
                self.counts[f"dropped: {reason}"] += n
            if events:
                try:
                    self.recent.add(events)
                    self.counts["written"] += len(events)
                except Exception as e:  # the store was unreachable: count and go on (the next events retry it)
                    self.counts["dropped: store error"] += len(events)
                    log.warning("recent items not written (%s: %s)", type(e).__name__, e)

    def stop(self) -> None:
        self._stop.set()
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
        if self._worker is not None:
            self._worker.join(timeout=10)


def main(argv: list[str] | None = None) -> int:
    from skiff.config import load_settings
    from skiff.recommend.online import RecentItems
    from skiff.registry import ModelRegistry

    ap = argparse.ArgumentParser(prog="python -m skiff.recommend.stream", description=__doc__.splitlines()[0])
    ap.add_argument("model", help="Registered recommender name.")
    ap.add_argument("--version", default=None, help="Version (default: champion, else latest): its config.")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    opts = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    mv = ModelRegistry.from_settings(settings).get(opts.model, opts.version)
    config = RecsConfig.model_validate((mv.metadata.extra.get("recs") or {}).get("config") or {})
    consumer = EventConsumer(RecentItems.open(settings, opts.model, config), opts.topic, host=opts.host,
                             port=opts.port)
    consumer.start()
    log.info("events from %s on %s:%s into %s's recent items", opts.topic, opts.host, opts.port, opts.model)
    try:
        while True:
            time.sleep(10)
            log.info("counts: %s", dict(consumer.counts))
    except KeyboardInterrupt:
        consumer.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
