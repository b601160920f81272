"""``skiff monitor run``: serving drift of a model's logged windows against its training data, stored in
the control plane (:mod:`skiff.monitoring`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from skiff.cli._common import JsonOption, console, emit, state
from skiff.errors import GateFailed, UsageError

__all__ = ["add_commands"]


def _since(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--since {value!r} is not an ISO date/time (e.g. 2026-05-01T10:00)") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _table(result: dict[str, Any]) -> None:
    table = Table(title=f"serving drift of {result['model']}", show_lines=False)
    for col in ("version", "window (UTC)", "rows", "drifted", "largest PSI"):
        table.add_column(col)
    for w in result["windows"]:
        psi = [r for r in w["results"] if r["metric"] == "psi"]
        top = max(psi, key=lambda r: r["value"], default=None)
        largest = f"{top['feature'] or 'prediction'} {top['value']:.4f} (> {top['threshold']:g})" if top and \
            top["drifted"] else (f"{top['feature'] or 'prediction'} {top['value']:.4f}" if top else "")
        table.add_row(str(w["version"]), w["window_start"][:16].replace("T", " "), str(w["rows"]),
                      w["skipped"] and f"skipped: {w['skipped']}" or (", ".join(w["drifted"]) or "none"), largest)
    console.print(table)
    console.print(f"{result['drifted_windows']} of {len(result['windows'])} window(s) drifted; scores stored in "
                  "the control plane", highlight=False)


def add_commands(app: typer.Typer) -> None:
    monitor = typer.Typer(name="monitor", help="Monitor served models: drift of their logged traffic.",
                          no_args_is_help=True)
    app.add_typer(monitor)

    @monitor.command("run")
    def run(
        ctx: typer.Context,
        model: Annotated[str, typer.Argument(help="Registered model whose inference log to score.")],
        version: Annotated[int | None, typer.Option("--version", "-v", min=1,
                                                    help="Only this version's windows (default: every logged one).")] = None,
        since: Annotated[str | None, typer.Option("--since", help="Only windows from this UTC time on (ISO).")] = None,
        min_rows: Annotated[int, typer.Option("--min-rows", min=1, help="Windows with fewer rows are skipped.")] = 200,
        metrics_file: Annotated[Path | None, typer.Option(
            "--metrics-file", dir_okay=False,
            help="Also write the latest window's scores per version as Prometheus text (skiff_drift_*), e.g. "
            "for node-exporter's textfile collector. On a cluster the REST API serves them on /api/v1/metrics.",
        )] = None,
        json_out: JsonOption = False,
    ) -> None:
        """Score each hour window of a model's inference log against its training data (PSI, L-infinity,
        Jensen-Shannon; the predictions against validation time) and store the scores. Exit 1 when a window
        drifted."""
        from skiff.monitoring.runner import monitor_model

        reports = monitor_model(state(ctx).settings, model, version=version, since=_since(since), min_rows=min_rows)
        if metrics_file is not None:
            from skiff.monitoring.metrics import write_metrics_file

            write_metrics_file(metrics_file, [r for rep in reports for r in rep.results])
        windows = [r.to_dict() for r in reports]
        drifted = sum(1 for r in reports if r.drifted)
        emit({"model": model, "windows": windows, "drifted_windows": drifted}, json_out, _table)
        if drifted:
            which = "; ".join(f"{r.window_start[:16].replace('T', ' ')} v{r.version}: {', '.join(r.drifted)}"
                              for r in reports if r.drifted)
            raise GateFailed(f"{drifted} window(s) of {model} drifted ({which})")
