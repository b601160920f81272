"""``skiff ingest`` and ``skiff init-dataset``: bring data into the lake, and write a spec to start from."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import typer

from skiff.cli._common import JsonOption, console, dataset_spec, emit, err_console, state
from skiff.errors import ConflictError, UsageError

if TYPE_CHECKING:
    from rich.progress import Progress

    from components.ingest.logic import IngestSummary

__all__ = ["add_commands"]

TableOpt = Annotated[str | None, typer.Option("--table", help="Database table (SQL sources).")]
QueryOpt = Annotated[str | None, typer.Option("--query", help="SELECT to read instead of a table (SQL sources).")]
WatermarkOpt = Annotated[
    str | None, typer.Option("--watermark", help="Monotonic column: a re-run reads only rows above it (SQL).")
]
AuthEnvOpt = Annotated[
    str | None,
    typer.Option("--auth-env", help="Environment variable holding a bearer token (http(s) sources)."),
]
PaginationOpt = Annotated[
    str | None, typer.Option("--pagination", help="none, page, cursor or link (http(s) sources).")
]
RecordsPathOpt = Annotated[
    str | None, typer.Option("--records-path", help="Dotted path of the record list in a page (http(s)).")
]


def _progress(enabled: bool) -> Progress | None:
    """A rich progress display of rows read on stderr, or a no-op."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if not enabled:
        return None
    prog = Progress(
        SpinnerColumn(),
        TextColumn("[bold]ingesting[/] {task.fields[dataset]}"),
        TextColumn("{task.completed:,.0f} rows read"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
    return prog


def _human_summary(r: IngestSummary) -> None:
    from rich.table import Table

    if r["status"] == "unchanged":
        console.print(f"[bold]{r['dataset']}[/]: unchanged ({r.get('reason', 'nothing new')}); nothing written",
                      highlight=False)
        if r.get("partition"):
            console.print(f"  existing run: {r['partition']}", highlight=False)
        return
    c = r["counts"]
    t = Table(title=f"{r['dataset']} · run {r['run_id']} · ingest_date={r['ingest_date']}", show_header=True)
    for col in ("read", "accepted", "quarantined", "duplicates"):
        t.add_column(col, justify="right")
    t.add_row(*(f"{c.get(k, 0):,}" for k in ("read", "accepted", "quarantined", "duplicates")))
    console.print(t)
    if r["quarantine_reasons"]:
        reasons = ", ".join(f"{k} {v:,}" for k, v in r["quarantine_reasons"].items())
        console.print(f"quarantine reasons: {reasons}", highlight=False)
    for w in r.get("warnings", []):
        err_console.print(f"[bold yellow]warning:[/] {w}", highlight=False)
    if r["imputed"]:
        console.print("imputed: " + ", ".join(f"{k} {v if v is not None else ''}".strip()
                                              for k, v in r["imputed"].items()), highlight=False)
    console.print(f"partition: {r['partition']}  ({r['duration_s']:.2f} s)", highlight=False)


def add_commands(app: typer.Typer) -> None:
    @app.command("ingest")
    def ingest_cmd(
        ctx: typer.Context,
        sources: Annotated[
            list[str] | None,
            typer.Argument(
                help="Sources overriding the spec's: a path, glob, folder or fsspec URI (files), an http(s) "
                "URL (REST, JSON), or a SQLAlchemy URL without a password (with --table or --query).",
                show_default=False,
            ),
        ] = None,
        dataset: Annotated[
            str | None, typer.Option("--dataset", "-d", help="Dataset name (its spec: <datasets_dir>/NAME.yaml).")
        ] = None,
        spec_file: Annotated[Path | None, typer.Option("--spec", help="Dataset spec file.")] = None,
        table: TableOpt = None,
        query: QueryOpt = None,
        watermark: WatermarkOpt = None,
        auth_env: AuthEnvOpt = None,
        pagination: PaginationOpt = None,
        records_path: RecordsPathOpt = None,
        run_id: Annotated[str | None, typer.Option("--run-id", help="Run id (default: time + random).")] = None,
        ingest_date: Annotated[
            str | None, typer.Option("--date", help="Ingest date YYYY-MM-DD (default: today, UTC).")
        ] = None,
        force: Annotated[bool, typer.Option("--force", help="Ingest even if this input was ingested.")] = False,
        min_accepted: Annotated[
            float | None,
            typer.Option("--min-accepted-fraction", min=0.0, max=1.0,
                         help="Fail (exit 1, nothing committed) when a smaller share of the rows is accepted "
                         "(default: the spec's min_accepted_fraction; a run accepting no row always fails)."),
        ] = None,
        json_out: JsonOption = False,
    ) -> None:
        """Read sources, cleanse and validate rows per the dataset spec, write Parquet to the lake.

        Rejected rows go to _quarantine.parquet with a reason; a re-run on the same input writes nothing.
        """
        from components.ingest.logic import ingest, source_from_arg
        from skiff.lake import Lake

        settings = state(ctx).settings
        spec = dataset_spec(ctx, dataset, spec_file)
        override = None
        if sources:
            if len(sources) > 1 and (table or query):
                raise UsageError("--table/--query apply to one database SOURCE at a time")
            override = [source_from_arg(s, table=table, query=query, watermark=watermark, auth_env=auth_env,
                                        pagination=pagination, records_path=records_path) for s in sources]
        elif any(v is not None for v in (table, query, watermark, auth_env, pagination, records_path)):
            raise UsageError("--table, --query, --watermark, --auth-env, --pagination and --records-path need "
                             "a SOURCE argument")

        show = not json_out and err_console.is_terminal
        prog = _progress(show)
        lake = Lake.from_settings(settings)
        if prog is None:
            result = ingest(spec, lake, sources=override, run_id=run_id, ingest_date=ingest_date, force=force,
                            min_accepted_fraction=min_accepted)
        else:
            with prog:
                task = prog.add_task("ingest", total=None, dataset=spec.name)
                result = ingest(spec, lake, sources=override, run_id=run_id, ingest_date=ingest_date,
                                force=force, progress=lambda n: prog.advance(task, n),
                                min_accepted_fraction=min_accepted)
        emit(result.summary(), json_out, _human_summary)

    @app.command("init-dataset")
    def init_dataset_cmd(
        ctx: typer.Context,
        source: Annotated[str, typer.Argument(help="A file/folder/URI, an http(s) URL, or a SQLAlchemy URL.")],
        name: Annotated[str, typer.Option("--name", "-n", help="Dataset name.")],
        target: Annotated[
            str | None, typer.Option("--target", "-t", help="Label column (omit for unlabeled data).")
        ] = None,
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="Spec file to write (default <datasets_dir>/NAME.yaml).")
        ] = None,
        entity_key: Annotated[
            str | None, typer.Option("--entity-key", "-k", help="Entity key column (default: guessed).")
        ] = None,
        generated_key: Annotated[
            str | None,
            typer.Option("--generated-key", help="No id column: 'row' (an id from the source and row offset) "
                         "or 'content' (a hash of the row's values: identical rows become one)."),
        ] = None,
        allow_duplicate_keys: Annotated[
            bool, typer.Option("--allow-duplicate-keys",
                               help="Keep an --entity-key that repeats in the sample (ingestion drops repeats).")
        ] = False,
        table: TableOpt = None,
        query: QueryOpt = None,
        auth_env: AuthEnvOpt = None,
        pagination: PaginationOpt = None,
        records_path: RecordsPathOpt = None,
        rows: Annotated[int, typer.Option("--rows", min=1, help="Rows to sample.")] = 10_000,
        force: Annotated[bool, typer.Option("--force", help="Overwrite an existing spec file.")] = False,
        json_out: JsonOption = False,
    ) -> None:
        """Infer a starting dataset spec from a sample of SOURCE and write it for you to edit."""
        from components.ingest.infer import infer_dataset, sample_table
        from components.ingest.logic import source_from_arg
        from skiff.spec import save_spec, spec_path

        settings = state(ctx).settings
        path = output or spec_path(name, settings.datasets_dir)
        if path.exists() and not force:
            raise ConflictError(f"{path} exists already: edit it, or pass --force to overwrite it", path=str(path))
        src = source_from_arg(source, table=table, query=query, auth_env=auth_env, pagination=pagination,
                              records_path=records_path)
        if generated_key not in (None, "row", "content"):
            raise UsageError(f"--generated-key {generated_key!r}: use row or content")
        # checked just above; the typer option stays a str so a wrong value gets this message
        key_kind = cast(Literal["row", "content"] | None, generated_key)
        table_ = sample_table(src, rows)
        inferred = infer_dataset(table_, name, target, entity_key=entity_key, source=src,
                                 generated_key=key_kind, allow_duplicate_keys=allow_duplicate_keys)
        save_spec(inferred.spec, path, inferred.notes)
        result = inferred.summary(str(path), table_.num_rows)

        def human(r: dict[str, Any]) -> None:
            console.print(r["path"], highlight=False)
            err_console.print(
                f"inferred from {r['rows_sampled']:,} rows: {len(r['columns'])} columns, entity key "
                f"{r['entity_key']!r}, event timestamp {r['event_timestamp']!r}, problem type {r['problem_type']}. "
                "Review it (sentinels, rules, missing-value policy) before ingesting.",
                highlight=False,
            )
            for m in r["messages"]:
                err_console.print(f"  {m}", highlight=False)
            for c, note in r["notes"].items():
                err_console.print(f"  {c}: {note}", highlight=False)

        emit(result, json_out, human)
