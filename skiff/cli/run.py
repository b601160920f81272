"""``skiff run``, ``skiff compile``: the pipelines, on this machine or on a Kubeflow Pipelines cluster."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from skiff.cli._common import JsonOption, console, emit, err_console, state
from skiff.config import Settings
from skiff.errors import GateFailed, SkiffError, UsageError
from skiff.spec import load_spec

ParamOption = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="Pipeline parameter k=v (JSON values allowed; spec=FILE.yaml loads a spec)."),
]


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


def pipeline_arguments(name: str, params: dict[str, Any], settings: Settings, local: bool) -> dict[str, Any]:
    """Fill a pipeline's arguments from --param values and the settings (lake, registry, Feast repo)."""
    from pipelines.tabular import PARAMETERS, build_arguments

    if name != "tabular":
        raise UsageError(f"unknown pipeline {name!r}; known: ['tabular']")
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise UsageError(f"unknown parameter(s) {unknown} for pipeline {name}; known: {sorted(PARAMETERS)}")
    spec_value = params.get("spec")
    if spec_value is None:
        raise UsageError("the tabular pipeline needs --param spec=path/to/dataset.yaml")
    if isinstance(spec_value, str):
        params["spec"] = load_spec(Path(spec_value)).model_dump(mode="json", exclude_none=True)
    args = build_arguments(params, settings, local=local)
    preflight(args)
    return args


def preflight(args: dict[str, Any]) -> str:
    """Check what can be checked before any step runs: the spec, the training config against the
    problem type (estimator, parameters, search space), the gate metric."""
    from components.train.logic import check_config, parse_config
    from components.train.metrics import default_scoring
    from skiff.spec_text import spec_from_text

    spec = spec_from_text(args["spec"], origin="--param spec")
    if spec.target is None or spec.problem_type is None:
        raise UsageError(f"dataset {spec.name!r} has no target/problem_type: the tabular pipeline trains a model")
    scoring = check_config(parse_config(args.get("train_config")), spec)
    metric = args.get("metric") or scoring or default_scoring(spec.problem_type)
    if not isinstance(args.get("margin", 0.0), int | float) or args.get("margin", 0.0) < 0:
        raise UsageError("--param margin must be a number >= 0")
    return metric


def _print_run(summary: dict[str, Any]) -> None:
    t = Table("step", "status", "seconds")
    for step, info in summary["steps"].items():
        t.add_row(step, info["status"], f"{info['duration_s']:.1f}")
    console.print(t)
    console.print(f"pipeline [bold]{summary['pipeline']}[/]: {summary['status']} in {summary['duration_s']:.1f} s")
    if summary.get("error"):
        err_console.print(summary["error"], highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        ctx: typer.Context,
        pipeline: Annotated[str, typer.Argument(help="Pipeline name: tabular.")],
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

        settings = state(ctx).settings
        if local and host:
            raise UsageError("give --local or --host, not both")
        host = None if local else (host or settings.kfp_host)
        parsed = parse_params(params)
        if host:
            args = pipeline_arguments(pipeline, parsed, settings, local=False)
            result = runner.submit(pipeline, args, host, experiment, run_name)
            emit(result, json_out, f"submitted run {result['run_id']} to {host} (experiment {experiment})")
            return
        args = pipeline_arguments(pipeline, parsed, settings, local=True)
        from pipelines.tabular import summarize

        with err_console.status(f"running {pipeline} with kfp.local…", spinner="dots") if not json_out else _Null() as st:
            def on_event(step: str, status: str) -> None:
                if st is not None and hasattr(st, "update"):
                    st.update(f"{pipeline}: {step} {status.lower()}…")

            local_run = runner.run_local(pipeline, args, Path(settings.root) / "pipeline_runs", on_event)
        summary = summarize(asdict(local_run), settings)
        emit(summary, json_out, lambda s: _print_summary(s))
        if local_run.status != "SUCCESS":
            err = summary.get("error") or "pipeline failed"
            raise (GateFailed if summary.get("gate_failed") else SkiffError)(f"pipeline {pipeline} failed: {err.splitlines()[0]}")

    @app.command("compile")
    def compile_cmd(
        pipeline: Annotated[str, typer.Argument(help="Pipeline name: tabular.")],
        output: Annotated[Path, typer.Option("-o", "--output", help="IR YAML file to write.")] = Path("pipeline.yaml"),
    ) -> None:
        """Compile a pipeline to KFP IR YAML for a Kubeflow Pipelines backend."""
        from pipelines import runner

        out = runner.compile_pipeline(pipeline, output)
        console.print(str(out), highlight=False)


def _print_summary(s: dict[str, Any]) -> None:
    _print_run(s)
    from pipelines.tabular import print_human_summary

    print_human_summary(s, console)


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
