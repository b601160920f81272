"""``skiff models``: list, inspect and export registered model versions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from skiff.cli._common import JsonOption, console, emit, state
from skiff.registry import ModelRegistry
from skiff.versions import parse_version, parse_version_number

_KEY_METRICS = ("roc_auc", "f1", "accuracy", "pr_auc", "rmse", "mae", "r2")


def add_commands(app: typer.Typer) -> None:
    models = typer.Typer(help="Registered models and their versions.", no_args_is_help=True)
    app.add_typer(models, name="models")

    @models.command("list")
    def list_models(
        ctx: typer.Context,
        name: Annotated[str | None, typer.Argument(help="Only this model's versions.")] = None,
        json_out: JsonOption = False,
    ) -> None:
        """List models, or the versions of one model, with their key metrics."""
        reg = ModelRegistry.from_settings(state(ctx).settings)
        names = [name] if name else reg.models()
        rows: list[dict[str, Any]] = []
        for n in names:
            for mv in reg.versions(n):
                m = mv.metadata
                rows.append({
                    "name": n, "version": mv.version, "champion": mv.champion, "created_at": m.created_at,
                    "estimator": m.estimator,
                    "metrics": {k: m.metrics[k] for k in _KEY_METRICS if k in m.metrics},
                })

        def human(rs: list[dict[str, Any]]) -> None:
            if not rs:
                console.print("no models registered yet")
                return
            t = Table("model", "version", "champion", "estimator", "metrics", "created")
            for r in rs:
                t.add_row(r["name"], str(r["version"]), "★" if r["champion"] else "", r["estimator"] or "",
                          ", ".join(f"{k}={v:.3f}" for k, v in r["metrics"].items()), r["created_at"])
            console.print(t)

        emit(rows, json_out, human)

    @models.command("show")
    def show(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="Model name.")],
        version: Annotated[str | None, typer.Argument(help="Version number, 'latest' or 'champion'.")] = None,
        json_out: JsonOption = False,
    ) -> None:
        """Show one version's metadata (default: the champion, else the latest)."""
        reg = ModelRegistry.from_settings(state(ctx).settings)
        mv = reg.get(name, None if version is None else parse_version(version, what="VERSION"))
        result = mv.model_dump(mode="json")

        def human(r: dict[str, Any]) -> None:
            m = r["metadata"]
            console.print(f"[bold]{r['name']}[/] version {r['version']}" + (" (champion)" if r["champion"] else ""))
            console.print(f"uri: {r['uri']}", highlight=False)
            for key in ("created_at", "problem_type", "target", "estimator", "threshold", "feature_service",
                        "data_fingerprint", "pipeline_run_id"):
                if m.get(key) is not None:
                    console.print(f"{key}: {m[key]}", highlight=False)
            if m["metrics"]:
                t = Table("metric", "value")
                for k, v in sorted(m["metrics"].items()):
                    t.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
                console.print(t)

        emit(result, json_out, human)

    @models.command("set-champion")
    def set_champion(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="Model name.")],
        version_text: Annotated[str, typer.Argument(metavar="VERSION", help="Version number to make the champion.")],
        reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the history).")] = "manual",
        json_out: JsonOption = False,
    ) -> None:
        """Make a version the champion by hand (the pipeline's gate does this automatically)."""
        version = parse_version_number(version_text, what="VERSION")
        reg = ModelRegistry.from_settings(state(ctx).settings)
        entry = reg.set_champion(name, version, reason)
        emit(entry, json_out, f"{name}: champion is now version {version} (was {entry['previous']})")

    @models.command("export")
    def export(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="Model name.")],
        output: Annotated[Path, typer.Option("-o", "--output", help="Folder to write (new or empty).")],
        version: Annotated[str | None, typer.Option("--version", help="Version number, 'latest' or 'champion' "
                                                    "(default: the champion, else the latest).")] = None,
        fmt: Annotated[str, typer.Option("--format", help="Model format: mlflow (MLmodel, sklearn flavor).")] = "mlflow",
        register: Annotated[bool, typer.Option("--register", help="Also register it in the MLflow Model "
                                               "Registry of the tracking URI, its metrics as tags.")] = False,
        registered_name: Annotated[str | None, typer.Option("--registered-name", help="MLflow registered model "
                                                            "name (default: NAME).")] = None,
        json_out: JsonOption = False,
    ) -> None:
        """Write a version in another model format: an MLflow model (mlflow.pyfunc predicts what skiff serves)."""
        from skiff.errors import UsageError
        from skiff.tracking.export import export_version, register_export
        from skiff.tracking.runs import tracking_uri

        settings = state(ctx).settings
        uri = tracking_uri(settings) if register else None
        if register and uri is None:
            raise UsageError("--register needs an MLflow tracking URI: set tracking_uri (SKIFF_TRACKING_URI)")
        reg = ModelRegistry.from_settings(settings)
        result = export_version(reg, name, None if version is None else parse_version(version, what="--version"),
                                output, fmt=fmt)
        if register and uri is not None:
            metrics = reg.get(name, result["version"]).metadata.metrics
            result["registered"] = register_export(result["path"], registered_name or name, metrics,
                                                   tracking_uri=uri)

        def human(r: dict[str, Any]) -> None:
            console.print(f"{r['name']} version {r['version']} written as an MLflow model to {r['path']}",
                          highlight=False)
            if r.get("registered"):
                console.print(f"registered as {r['registered']['registered_model']} version "
                              f"{r['registered']['mlflow_version']}", highlight=False)

        emit(result, json_out, human)
