"""``skiff stream``: consume MQTT topics of sensor readings into the lake, run by run."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from skiff.cli._common import JsonOption, console, dataset_spec, emit, err_console, state

if TYPE_CHECKING:
    from components.stream.logic import StreamSummary

__all__ = ["add_commands"]


def _human_summary(r: StreamSummary) -> None:
    from rich.table import Table

    c = r["counts"]
    t = Table(title=f"{r['dataset']} · {r['client_id']} · {', '.join(r['topics'])}")
    for k in c:  # messages, read, accepted, quarantined, duplicates
        t.add_column(k, justify="right")
    t.add_row(*(f"{v:,}" for v in c.values()))
    console.print(t)
    if r["quarantine_reasons"]:
        console.print("quarantine reasons: " + ", ".join(f"{k} {v:,}" for k, v in r["quarantine_reasons"].items()),
                      highlight=False)
    console.print(f"runs published: {len(r['runs'])}  partitions: {', '.join(r['partitions']) or 'none'}  "
                  f"({r['duration_s']:.1f} s, {r['messages_per_s']:,.0f} msg/s)", highlight=False)


def add_commands(app: typer.Typer) -> None:
    @app.command("stream")
    def stream_cmd(
        ctx: typer.Context,
        dataset: Annotated[
            str | None, typer.Option("--dataset", "-d", help="Dataset name (its spec: <datasets_dir>/NAME.yaml).")
        ] = None,
        spec_file: Annotated[Path | None, typer.Option("--spec", help="Dataset spec file.")] = None,
        topic: Annotated[
            list[str] | None, typer.Option("--topic", help="Topic filter overriding the spec's ($share/<group>/... "
                                           "to share the stream between consumers); repeat it to subscribe to "
                                           "several filters (disjoint ones).")
        ] = None,
        client_id: Annotated[
            str | None, typer.Option("--client-id", help="MQTT client id (fixed: it names the persistent "
                                     "session and the runs). Default: the spec's, else skiff-stream-<dataset>.")
        ] = None,
        max_messages: Annotated[
            int | None, typer.Option("--max-messages", min=1, help="Stop after N messages.")
        ] = None,
        duration: Annotated[float | None, typer.Option("--duration", min=0.1, help="Stop after S seconds.")] = None,
        batch_rows: Annotated[int, typer.Option("--batch-rows", min=1, help="Records per lake run.")] = 10_000,
        batch_seconds: Annotated[
            float, typer.Option("--batch-seconds", min=0.01, help="Publish a run at least every S seconds.")
        ] = 5.0,
        inflight: Annotated[
            int | None, typer.Option("--inflight", min=2, max=65_535, help="Unacknowledged messages the broker "
                                     "may send ahead (MQTT 5 Receive Maximum); default 2 x --batch-rows.")
        ] = None,
        session_expiry: Annotated[
            int, typer.Option("--session-expiry", min=1, help="Seconds the broker keeps this consumer's session "
                              "(and queues its messages) while it is away (MQTT 5 session expiry).")
        ] = 86_400,
        with_features: Annotated[
            bool, typer.Option("--with-features", help="Push closed windows and each device's latest reading to "
                               "the Feast online store (opened once; its window views are applied).")
        ] = False,
        metrics_port: Annotated[
            int | None, typer.Option("--metrics-port", min=0, max=65_535, help="Serve /metrics, /healthz and "
                                     "/readyz on this port.")
        ] = None,
        metrics_host: Annotated[str, typer.Option("--metrics-host", help="Address of the metrics server.")] = "127.0.0.1",
        poll_max: Annotated[
            int, typer.Option("--poll-max", min=1, help="With windows: messages cleansed, windowed and pushed "
                              "online per poll.")
        ] = 5_000,
        json_out: JsonOption = False,
    ) -> None:
        """Consume MQTT topics of JSON readings; cleanse them per the spec; publish atomic lake runs.

        Messages are acknowledged only after the run holding them is committed. Stops on Ctrl-C,
        SIGTERM, --max-messages or --duration, publishing what it buffered first.
        """
        from components.stream.logic import StreamConfig, StreamConsumer, mqtt_source
        from components.stream.ops import HealthServer, StreamMetrics
        from skiff.lake import Lake

        settings = state(ctx).settings
        spec = dataset_spec(ctx, dataset, spec_file)
        config = StreamConfig(batch_rows=batch_rows, batch_seconds=batch_seconds, inflight=inflight,
                              session_expiry_s=session_expiry,
                              max_messages=max_messages, duration_s=duration, poll_max=poll_max)
        live_status = not json_out and err_console.is_terminal
        started = time.monotonic()

        lake = Lake.from_settings(settings)
        online = None
        if with_features:
            from skiff.errors import UsageError
            from skiff.feature_store import open_store_from_settings
            from skiff.stream_features import FeastStreamWriter

            if spec.windows is None:
                raise UsageError(f"--with-features pushes window results: dataset {spec.name!r} declares no windows")
            online = FeastStreamWriter(open_store_from_settings(settings, lake), spec, lake)
        metrics = StreamMetrics(spec.name)
        registry = None
        if spec.windows is not None and spec.windows.scoring is not None:
            from skiff.registry import ModelRegistry

            registry = ModelRegistry.from_settings(settings)  # the scoring model is resolved and loaded once
        topics = list(topic or [])
        consumer = StreamConsumer(spec, lake, mqtt_source(spec, topics[0] if topics else None), config,
                                  client_id=client_id, online=online, metrics=metrics, registry=registry,
                                  topics=topics or None)
        health = (HealthServer(metrics, consumer.not_ready, metrics_host, metrics_port)
                  if metrics_port is not None else None)

        class _Status:  # rendered by rich.live on each refresh
            def __rich__(self) -> str:
                c, n = consumer.result.counts, consumer.received
                rate = n / max(time.monotonic() - started, 1e-9)
                return (f"[bold]streaming[/] {spec.name}: {n:,} messages ({rate:,.0f}/s), {c['accepted']:,} "
                        f"accepted, {c['quarantined']:,} quarantined, {len(consumer.result.runs)} runs")

        live = None
        if live_status:
            from rich.live import Live

            live = Live(_Status(), console=err_console, transient=True, refresh_per_second=4)
        previous = {s: signal.signal(s, lambda *_: consumer.stop()) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            if live is not None:
                with live:
                    result = consumer.run()
            else:
                result = consumer.run()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            if health is not None:
                health.close()
        if online is not None:
            from skiff.stream_features import build_window_sources

            build_window_sources(lake, spec)  # the window views' offline files, for point-in-time training
        emit(result.summary(), json_out, _human_summary)
