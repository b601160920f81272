"""Operating a stream consumer: Prometheus metrics, liveness and readiness over HTTP, and alert delivery.

``skiff stream --metrics-port 9108`` serves, on ``--metrics-host`` (default 127.0.0.1):

* ``/metrics``: the consumer's Prometheus metrics (:class:`StreamMetrics`, names ``skiff_stream_*``);
* ``/healthz``: 200 while the process runs;
* ``/readyz``: 200 with ``{"ready": true}`` while the broker connection is up and subscribed (and the
  online store is open, when features are pushed), else 503 with the reason as JSON.

Alerts (:class:`AlertDispatcher`) go to the log, to an MQTT topic (QoS 1, through the consumer's own
connection) and to a webhook (JSON POST with httpx on a thread of its own with a bounded queue, so a slow
endpoint never holds the stream; alerts beyond the queue are dropped and counted).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from skiff.errors import ConfigError

if TYPE_CHECKING:
    from skiff.windows import Alert

__all__ = ["StreamMetrics", "HealthServer", "AlertDispatcher"]

log = logging.getLogger("skiff.stream")

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class StreamMetrics:
    """The consumer's metrics, in a registry of its own (several consumers in one process stay apart)."""

    def __init__(self, dataset: str) -> None:
        self.registry = CollectorRegistry()
        r, d = self.registry, dataset
        self.messages = Counter("skiff_stream_messages_total", "MQTT messages received.", ["dataset"],
                                registry=r).labels(d)
        self.records = Counter("skiff_stream_records_total", "Records by outcome (accepted, quarantined, "
                               "duplicate), counted when their run is committed.", ["dataset", "outcome"], registry=r)
        self.quarantined = Counter("skiff_stream_quarantined_total", "Quarantined records by reason (late "
                                   "included).", ["dataset", "reason"], registry=r)
        self.runs = Counter("skiff_stream_runs_total", "Lake runs committed.", ["dataset"], registry=r).labels(d)
        self.rate = Gauge("skiff_stream_messages_per_second", "Messages per second over the last 10 s.",
                          ["dataset"], registry=r).labels(d)
        self.inflight = Gauge("skiff_stream_inflight_messages", "Messages received and not yet acknowledged "
                              "(buffered for the next run).", ["dataset"], registry=r).labels(d)
        self.queue = Gauge("skiff_stream_queue_messages", "Messages waiting for the writer thread.", ["dataset"],
                           registry=r).labels(d)
        self.lag = Gauge("skiff_stream_event_lag_seconds", "Wall clock minus the newest event time processed.",
                         ["dataset"], registry=r).labels(d)
        self.connected = Gauge("skiff_stream_broker_connected", "1 while connected and subscribed.", ["dataset"],
                               registry=r).labels(d)
        self.open_windows = Gauge("skiff_stream_open_window_panes", "Window panes held in memory.", ["dataset"],
                                  registry=r).labels(d)
        self.close_delay = Histogram("skiff_stream_window_close_delay_seconds", "Wall clock at a window's close "
                                     "minus its end (event time).", ["dataset"], registry=r,
                                     buckets=(1, 5, 15, 30, 60, 120, 300, 900, 3600)).labels(d)
        self.push = Histogram("skiff_stream_online_push_seconds", "Time of one online-store write (a poll's "
                              "windows and latest readings).", ["dataset"], registry=r, buckets=_LATENCY).labels(d)
        self.to_online = Histogram("skiff_stream_receive_to_online_seconds", "Time from a poll's oldest message "
                                   "arriving to its features being in the online store.", ["dataset"], registry=r,
                                   buckets=_LATENCY).labels(d)
        self.alerts = Counter("skiff_stream_alerts_total", "Alerts raised, by rule.", ["dataset", "rule"], registry=r)
        self.alerts_dropped = Counter("skiff_stream_alerts_dropped_total", "Webhook alerts dropped (queue full).",
                                      ["dataset"], registry=r).labels(d)
        self.webhook_failed = Counter("skiff_stream_alert_webhook_failures_total", "Webhook POSTs that failed "
                                      "or were answered with an error status.", ["dataset"], registry=r).labels(d)
        self.publish_dropped = Counter("skiff_stream_publish_dropped_total", "Scores and alerts not handed to the "
                                       "MQTT client (its outgoing queue stayed full).", ["dataset", "what"], registry=r)
        self.score_seconds = Histogram("skiff_stream_score_seconds", "Time to score one poll's readings or closed "
                                       "windows (one batch).", ["dataset", "model"], registry=r, buckets=_LATENCY)
        self.scores = Counter("skiff_stream_scores_total", "Readings or windows scored, by engine (onnxruntime, "
                              "sklearn, mixed).", ["dataset", "model", "engine"], registry=r)
        self.scores_skipped = Counter("skiff_stream_scores_skipped_total", "Closed windows not scored (a model "
                                      "input missing).", ["dataset", "model"], registry=r)
        self.dataset = d
        self._window: list[tuple[float, int]] = []

    def received(self, n: int = 1) -> None:
        self.messages.inc(n)

    def committed(self, accepted: int, quarantined: int, duplicates: int, reasons: dict[str, int]) -> None:
        self.runs.inc()
        for outcome, n in (("accepted", accepted), ("quarantined", quarantined), ("duplicate", duplicates)):
            if n:
                self.records.labels(self.dataset, outcome).inc(n)
        for reason, n in reasons.items():
            self.quarantined.labels(self.dataset, reason).inc(n)

    def tick(self, received_total: int) -> None:
        """Update the 10-second message rate (called by the consumer's main loop)."""
        now = time.monotonic()
        self._window.append((now, received_total))
        while len(self._window) > 2 and now - self._window[0][0] > 10:
            self._window.pop(0)
        t0, n0 = self._window[0]
        if now > t0:
            self.rate.set((received_total - n0) / (now - t0))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on a thread of their own."""

    def __init__(self, metrics: StreamMetrics, ready: Callable[[], str | None], host: str = "127.0.0.1",
                 port: int = 0) -> None:
        metrics_ref, ready_ref = metrics, ready

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if self.path == "/metrics":
                    self._send(200, metrics_ref.render(), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    self._send(200, b'{"alive": true}', "application/json")
                elif self.path == "/readyz":
                    why = ready_ref()
                    body = {"ready": True} if why is None else {"ready": False, "reason": why}
                    self._send(200 if why is None else 503, json.dumps(body).encode(), "application/json")
                else:
                    self._send(404, json.dumps({"error": f"no route {self.path[:100]}"}).encode(), "application/json")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: no line per scrape
                pass

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as e:
            raise ConfigError(f"cannot serve stream metrics on {host}:{port}: {e.strerror}") from e
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="skiff-stream-health", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class AlertDispatcher:
    """Delivers alerts: log (always), MQTT topic (``publish``), webhook (URL from ``webhook_env``)."""

    def __init__(self, dataset: str, metrics: StreamMetrics, *, topic: str | None = None,
                 publish: Callable[[str, bytes], None] | None = None, webhook_env: str | None = None,
                 max_queued: int = 1000, timeout_s: float = 5.0) -> None:
        self.dataset, self.metrics, self.topic, self.publish = dataset, metrics, topic, publish
        self.timeout_s = timeout_s
        self._closing = threading.Event()
        self.url: str | None = None
        if webhook_env is not None:
            if webhook_env not in os.environ:
                raise ConfigError(f"{dataset}: windows.alert_webhook_env names {webhook_env}, which is not set")
            self.url = os.environ[webhook_env]
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(max_queued)
        self._thread: threading.Thread | None = None
        if self.url is not None:
            self._thread = threading.Thread(target=self._post_loop, name="skiff-stream-webhook", daemon=True)
            self._thread.start()

    def dispatch(self, alerts: list[Alert]) -> None:
        for a in alerts:
            doc = {"dataset": self.dataset, **a.to_dict()}
            self.metrics.alerts.labels(self.dataset, a.rule).inc()
            log.warning("alert %s: %s %s=%s (%s)", self.dataset, a.entity, a.column, a.value, a.rule)
            if self.topic is not None and self.publish is not None:
                self.publish(self.topic, json.dumps(doc).encode())
            if self.url is not None:
                try:
                    self._queue.put_nowait(doc)
                except queue.Full:
                    self.metrics.alerts_dropped.inc()

    def _post_loop(self) -> None:
        import httpx

        with httpx.Client(timeout=self.timeout_s) as client:
            while True:
                doc = self._queue.get()
                if doc is None or self._closing.is_set():
                    return
                try:
                    r = client.post(self.url or "", json=doc)
                    if r.status_code >= 400:
                        self.metrics.webhook_failed.inc()
                        log.warning("alert webhook answered %d", r.status_code)  # the URL may hold a token: not logged
                except httpx.HTTPError as e:
                    self.metrics.webhook_failed.inc()
                    log.warning("alert webhook failed: %s", type(e).__name__)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued within ``timeout`` seconds; what is left then is dropped and counted."""
        if self._thread is None:
            return
        marked = True
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            marked = False
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._closing.set()
            left = max(0, self._queue.qsize() - marked)
            if left:
                self.metrics.alerts_dropped.inc(left)
                log.warning("%s: %d webhook alerts left undelivered at exit (the endpoint is slow)", self.dataset, left)
