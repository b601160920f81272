"""``skiff validate``: TFDV statistics, schema, anomalies and drift for a lake partition; a blocking gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import ValidationError
from rich.table import Table

from skiff.cli._common import JsonOption, console, dataset_spec, emit, state
from skiff.errors import UsageError
from skiff.lake import Lake

__all__ = ["add_commands"]


def add_commands(app: typer.Typer) -> None:
    @app.command("validate")
    def validate(
        ctx: typer.Context,
        dataset: Annotated[
            str | None, typer.Option("--dataset", "-d", help="Dataset name (its spec: <datasets_dir>/NAME.yaml).")
        ] = None,
        date: Annotated[
            str | None, typer.Option("--date", help="Partition ingest date YYYY-MM-DD (default: the latest).")
        ] = None,
        spec: Annotated[
            Path | None, typer.Option("--spec", help="Dataset spec file (the dataset name comes from it).")
        ] = None,
        run_id: Annotated[
            str | None,
            typer.Option("--run", help="Validate this ingest run only (default: the partition's runs written "
                         "with the current spec, the runs the features step reads)."),
        ] = None,
        schema: Annotated[
            str | None,
            typer.Option("--schema", help="Reviewed schema text proto to validate against (path or URI); "
                         "default: the lake's validation/<NAME>/schema.pbtxt, inferred on the first run."),
        ] = None,
        export_schema: Annotated[
            Path | None,
            typer.Option("--export-schema", help="Copy the dataset's current schema to this file and exit."),
        ] = None,
        drift_threshold: Annotated[
            float | None,
            typer.Option("--drift-threshold", help="Default drift threshold: Jensen-Shannon divergence for "
                         "numeric features, L-infinity for categorical ones.  [default: 0.1]", show_default=False),
        ] = None,
        no_drift: Annotated[bool, typer.Option("--no-drift", help="Skip the drift comparison.")] = False,
        feature_threshold: Annotated[
            list[str] | None,
            typer.Option("--feature-threshold", help="COLUMN=THRESHOLD (or COLUMN=off) for one column; repeatable."),
        ] = None,
        new_columns: Annotated[
            str, typer.Option("--new-columns", help="Severity of columns the schema does not list: warning or error.")
        ] = "warning",
        domain_tolerance: Annotated[
            float | None,
            typer.Option("--domain-tolerance", help="Fraction of out-of-domain values that is only a warning. "
                         " [default: 0.01]", show_default=False),
        ] = None,
        warn_only: Annotated[bool, typer.Option("--warn-only", help="Report anomalies as warnings; never fail.")] = False,
        timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds the TFDV step may take.")] = None,
        json_out: JsonOption = False,
    ) -> None:
        """Validate a partition against the dataset's schema and the previous partition (exit 1 on blocking anomalies)."""
        from components.validate.logic import (
            ValidateConfig,
            blocking_failure,
            parse_feature_thresholds,
            validate_partition,
        )
        from components.validate.logic import (
            export_schema as export,
        )

        settings = state(ctx).settings
        lake = Lake.from_settings(settings)
        if export_schema is not None:  # the schema lives in the lake: a name is enough
            name = dataset if dataset and spec is None else dataset_spec(ctx, dataset, spec).name
            path = export(lake, name, export_schema)
            emit({"dataset": name, "schema": path}, json_out, f"schema of {name} written to {path}")
            return

        if new_columns not in ("warning", "error"):
            raise UsageError(f"--new-columns {new_columns!r}: expected warning or error")
        options: dict[str, Any] = {"warn_only": warn_only, "new_columns": _severity(new_columns)}
        if no_drift:
            options["drift_threshold"] = None
        elif drift_threshold is not None:
            options["drift_threshold"] = drift_threshold
        if feature_threshold:
            options["feature_thresholds"] = parse_feature_thresholds(feature_threshold)
        if domain_tolerance is not None:
            options["domain_tolerance"] = domain_tolerance
        if timeout is not None:
            options["timeout_s"] = timeout
        try:
            config = ValidateConfig(**options)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg'].removeprefix('Value error, ')}"
                                 for err in e.errors())
            raise UsageError(f"invalid validation options: {problems}") from e

        s = dataset_spec(ctx, dataset, spec)
        dataset = s.name
        if not json_out:
            console.print(f"validating {dataset}{f' ingest_date={date}' if date else ''}"
                          f"{f' run {run_id}' if run_id else ''} with TFDV…", highlight=False)
        result = validate_partition(
            s, lake, date=date, config=config, schema=schema, tfdv_python=settings.tfdv_python,
            storage_options=settings.storage_options, threads=settings.max_threads, run_id=run_id,
        )

        def human(_: dict[str, Any]) -> None:
            if result.anomalies:
                t = Table("feature")
                t.add_column("anomaly", overflow="fold")
                t.add_column("description", ratio=1)
                t.add_column("severity")
                for a in result.anomalies:
                    style = "bold red" if a.severity == "error" else "yellow"
                    t.add_row(a.feature, a.anomaly, a.description, f"[{style}]{a.severity}[/]")
                console.print(t)
            drifted = result.drifted
            if result.drift:
                console.print(
                    f"drift vs {result.previous_date}: "
                    + (", ".join(f"{f} {result.drift[f].measure}={result.drift[f].value:.3f} "
                                 f"> {result.drift[f].threshold:g}" for f in drifted) if drifted else "none above threshold"),
                    highlight=False,
                )
            console.print("runs: " + (", ".join(r["run_id"] for r in result.runs) or "none"), highlight=False)
            for note in result.notes:
                console.print(f"note: {note}", highlight=False)
            verdict = "[bold green]passed[/]" if result.passed else "[bold red]failed[/]"
            console.print(
                f"{result.dataset} ingest_date={result.date}: {verdict} "
                f"({len(result.blocking)} blocking, {len(result.warnings)} warnings, {result.num_examples} examples"
                f"{', schema inferred' if result.schema_inferred else ''})",
                highlight=False,
            )
            console.print(f"report: {result.report_uri}", highlight=False, soft_wrap=True)

        emit(result.model_dump(mode="json"), json_out, human)
        failure = blocking_failure(result)
        if failure is not None:
            raise failure


def _severity(value: str) -> Literal["warning", "error"]:
    return "error" if value == "error" else "warning"
