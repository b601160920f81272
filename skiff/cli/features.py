"""``skiff features``: Feast definitions from a spec, materialization, and online lookups."""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from skiff.cli._common import JsonOption, console, dataset_spec, emit, state
from skiff.lake import Lake

if TYPE_CHECKING:
    from skiff.spec import DatasetSpec

SpecOption = Annotated[Path | None, typer.Option("--spec", help="Dataset spec (default datasets/<NAME>.yaml).")]
DatasetOption = Annotated[
    str | None, typer.Option("--dataset", "-d", help="Dataset name (or --spec FILE, which names it).")
]


def _spec(ctx: typer.Context, dataset: str | None, spec: Path | None) -> DatasetSpec:
    return dataset_spec(ctx, dataset, spec)


def add_commands(app: typer.Typer) -> None:
    features = typer.Typer(help="Feast features of a dataset.", no_args_is_help=True)
    app.add_typer(features, name="features")

    @features.command("generate")
    def generate(
        ctx: typer.Context,
        dataset: DatasetOption = None,
        spec: SpecOption = None,
        output: Annotated[Path | None, typer.Option("-o", "--output", help="File (default feature_repo/<NAME>.py).")] = None,
    ) -> None:
        """Write the Feast definitions rendered from the dataset spec into the feature repo."""
        from components.features.logic import definitions_file, write_definitions

        s = _spec(ctx, dataset, spec)
        out = write_definitions(s, output or definitions_file(s, state(ctx).settings.feature_repo))
        console.print(str(out), highlight=False)

    @features.command("materialize")
    def materialize_cmd(
        ctx: typer.Context,
        dataset: DatasetOption = None,
        spec: SpecOption = None,
        training_out: Annotated[
            Path | None, typer.Option("--training-out", help="Also write point-in-time training rows (Parquet).")
        ] = None,
        json_out: JsonOption = False,
    ) -> None:
        """Build the offline source from the lake, apply the definitions, load the online store."""
        from components.features.logic import run_features

        settings = state(ctx).settings
        s = _spec(ctx, dataset, spec)
        with console.status("opening Feast and materializing…", spinner="dots") if not json_out else contextlib.nullcontext():
            result = run_features(s, Lake.from_settings(settings), settings.feature_repo, settings.feast_dir,
                                  settings.feature_store_yaml, training_out)
        emit(asdict(result), json_out,
             f"{result.dataset}: {result.rows} rows, {result.entities} entities → feature service "
             f"[bold]{result.feature_service}[/] ({result.online_store}), materialized until {result.materialized_until}")

    @features.command("get")
    def get_online(
        ctx: typer.Context,
        keys: Annotated[list[str], typer.Argument(help="Entity key values (or JSON objects for composite keys).")],
        dataset: DatasetOption = None,
        spec: SpecOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Read online features for entity keys."""
        from components.features.logic import entity_rows
        from skiff.feature_store import feature_service_name, online_features, open_store_from_settings

        settings = state(ctx).settings
        s = _spec(ctx, dataset, spec)
        rows = entity_rows(s, keys)  # checked before the store opens (seconds)
        store = open_store_from_settings(settings)
        emit(online_features(store, feature_service_name(s), rows), json_out)
