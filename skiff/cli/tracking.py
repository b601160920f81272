"""``skiff tracking``: the pipeline runs kept in the lake because the MLflow tracking server did not answer,
and their replay (``skiff tracking sync``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from skiff.cli._common import JsonOption, console, emit, state


def add_commands(app: typer.Typer) -> None:
    tracking = typer.Typer(help="Experiment tracking in MLflow: runs kept while the server was unreachable.",
                           no_args_is_help=True)
    app.add_typer(tracking, name="tracking")

    @tracking.command("pending")
    def pending(ctx: typer.Context, json_out: JsonOption = False) -> None:
        """List the runs kept in the lake (<lake>/tracking/pending/) that are not in MLflow yet."""
        from skiff.tracking.runs import pending_records

        settings = state(ctx).settings
        result = {"lake": settings.lake_uri, "pending": pending_records(settings.lake_uri, settings.storage_options)}

        def human(r: dict[str, Any]) -> None:
            if not r["pending"]:
                console.print("no pending tracking records", highlight=False)
            for run_id in r["pending"]:
                console.print(run_id, highlight=False)

        emit(result, json_out, human)

    @tracking.command("sync")
    def sync(
        ctx: typer.Context,
        run: Annotated[list[str] | None, typer.Option("--run", help="Only this run id (repeatable).")] = None,
        uri: Annotated[str | None, typer.Option("--tracking-uri", help="Log to this MLflow tracking URI (default: "
                                                "the tracking_uri setting, else the URI each run was meant "
                                                "for).", show_default=False)] = None,
        json_out: JsonOption = False,
    ) -> None:
        """Log the kept runs to MLflow and remove each one logged; a run already there is completed, never
        logged twice. Exit 2 when some could not be logged (they stay kept)."""
        from skiff.errors import StorageError
        from skiff.tracking.runs import OFF, sync_pending

        settings = state(ctx).settings
        target = (uri or settings.tracking_uri or "").strip() or None
        if target is not None and target.lower() == OFF:
            target = None
        result = sync_pending(settings.lake_uri, target, storage_options=settings.storage_options, run_ids=run)

        def human(r: dict[str, Any]) -> None:
            for done in r["logged"]:
                console.print(f"{done['run_id']}: logged to {done['tracking_uri']} (MLflow run "
                              f"{done['mlflow_run_id']})", highlight=False)
            for failed in r["failed"]:
                console.print(f"{failed['run_id']}: still pending — {failed['reason']}", highlight=False)
            if not r["logged"] and not r["failed"]:
                console.print("no pending tracking records", highlight=False)

        emit(result, json_out, human)
        if result["failed"]:
            raise StorageError(f"{len(result['failed'])} run(s) could not be logged and stay pending: "
                               + ", ".join(f["run_id"] for f in result["failed"][:10]))
