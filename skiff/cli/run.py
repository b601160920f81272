"""``skiff run``, ``skiff compile``: the pipelines, on this machine or on a Kubeflow Pipelines cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from skiff.cli._common import JsonOption, console, dataset_spec, emit, state
from skiff.cli._pipeline_output import print_run, progress
from skiff.errors import UsageError

if TYPE_CHECKING:
    from pipelines.definitions import PipelineDefinition
    from skiff.spec import DatasetSpec

ParamOption = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="Pipeline parameter k=v (JSON values allowed); spec=FILE is an alias "
                 "of --spec FILE."),
]
DatasetOption = Annotated[
    str | None, typer.Option("--dataset", "-d", help="Dataset name (its spec: <datasets_dir>/NAME.yaml).")
]
SpecOption = Annotated[Path | None, typer.Option("--spec", help="Dataset spec file (the dataset name comes from it).")]


def parse_params(pairs: list[str] | None) -> dict[str, Any]:
    """``k=v`` pairs to a dict; values are JSON when they parse, strings otherwise."""
    params: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param takes k=v, got {pair!r}")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


def _pipeline_help() -> str:
    from pipelines.definitions import PIPELINES

    return "Pipeline name: " + ", ".join(sorted(PIPELINES)) + "."


def _run_spec(ctx: typer.Context, params: dict[str, Any], dataset: str | None, spec_file: Path | None,
             pipeline: str, definition: PipelineDefinition | None = None) -> DatasetSpec:
    """The run's dataset spec, parsed once: ``--spec FILE`` (``--param spec=FILE`` is its alias), else
    ``--dataset NAME``, else the one the pipeline defines from the parameters (the image pipeline's
    folder); ``params`` loses its ``spec`` entry."""
    alias = params.pop("spec", None)
    if alias is not None:
        if spec_file is not None:
            raise UsageError("give --spec FILE or --param spec=FILE (its alias), not both")
        if not isinstance(alias, str) or not alias:
            raise UsageError(f"--param spec takes a spec file path, got {alias!r}"[:200])
        spec_file = Path(alias)
    if dataset is None and spec_file is None and definition is not None and definition.spec_from_params:
        return definition.spec_from_params(params)
    if dataset is None and spec_file is None:
        raise UsageError(f"the {pipeline} pipeline runs on a dataset: give --dataset NAME or --spec FILE")
    return dataset_spec(ctx, dataset, spec_file)


def add_commands(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        ctx: typer.Context,
        pipeline: Annotated[str, typer.Argument(help=_pipeline_help())],
        dataset: DatasetOption = None,
        spec_file: SpecOption = None,
        params: ParamOption = None,
        local: Annotated[
            bool, typer.Option("--local", help="Run on this machine with kfp.local (the default unless a host is set).")
        ] = False,
        host: Annotated[str | None, typer.Option("--host", help="Kubeflow Pipelines endpoint: submit there.")] = None,
        experiment: Annotated[str, typer.Option("--experiment", help="KFP experiment (with --host).")] = "skiff",
        run_name: Annotated[str | None, typer.Option("--run-name", help="KFP run name (with --host).")] = None,
        json_out: JsonOption = False,
    ) -> None:
        """Run a pipeline locally (kfp.local) or submit it to Kubeflow Pipelines (--host)."""
        from pipelines import runner
        from pipelines.definitions import get_pipeline, run_failure

        settings = state(ctx).settings
        if local and host:
            raise UsageError("give --local or --host, not both")
        host = None if local else (host or settings.kfp_host)
        definition = get_pipeline(pipeline)
        parsed = parse_params(params)
        spec = _run_spec(ctx, parsed, dataset, spec_file, pipeline, definition)
        args = definition.arguments(spec, parsed, settings, local=not host)
        if host:
            result = runner.submit(pipeline, args, host, experiment, run_name,
                                   target=runner.RunTarget.from_settings(settings))
            emit(result, json_out, f"submitted run {result['run_id']} to {host} (experiment {experiment})")
            return
        with progress(pipeline, quiet=json_out) as on_event:
            local_run = runner.run_local(pipeline, args, runner.local_pipeline_root(settings), on_event)
        summary = definition.summarize(local_run, settings)
        emit(summary, json_out, lambda s: print_run(s, definition.summary_lines(s)))
        failure = run_failure(f"pipeline {pipeline}", summary)
        if failure is not None:
            raise failure

    @app.command("compile")
    def compile_cmd(
        pipeline: Annotated[str, typer.Argument(help=_pipeline_help())],
        output: Annotated[Path, typer.Option("-o", "--output", help="IR YAML file to write.")] = Path("pipeline.yaml"),
    ) -> None:
        """Compile a pipeline to KFP IR YAML for a Kubeflow Pipelines backend."""
        from pipelines import runner

        out = runner.compile_pipeline(pipeline, output)
        console.print(str(out), highlight=False)
