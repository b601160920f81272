"""``skiff demo``: the platform's main job end to end on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from skiff.cli._common import JsonOption, console, emit, state
from skiff.cli._pipeline_output import print_run, progress
from skiff.config import project_path
from skiff.errors import NotFoundError


def find_example(name: str) -> Path:
    """An example spec: ./examples/<name>.yaml, else the one in the skiff source tree."""
    path = project_path(Path("examples") / f"{name}.yaml")
    if not path.is_file():
        raise NotFoundError(f"example spec examples/{name}.yaml not found")
    return path


def add_commands(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        ctx: typer.Context,
        rows: Annotated[int, typer.Option("--rows", min=200, help="Customers to generate.")] = 7043,
        seed: Annotated[int, typer.Option("--seed", help="Random seed of the generator.")] = 0,
        json_out: JsonOption = False,
    ) -> None:
        """Generate a realistic, dirty customer-churn export and run the tabular pipeline on it locally:
        ingest → validate (TFDV) → features (Feast) → train → evaluate → register."""
        from pipelines import runner
        from pipelines.definitions import TABULAR, run_failure
        from skiff import datagen
        from skiff.spec import load_spec, parse_spec
        from skiff.uri import local_path

        settings = state(ctx).settings
        data_dir = local_path(settings.root, "root (the demo runs on the local engine)") / "demo"
        data_dir.mkdir(parents=True, exist_ok=True)
        csv = data_dir / "churn.csv"
        raw = datagen.dirty(datagen.churn(n=rows, seed=seed), seed=seed)
        tmp = csv.with_suffix(".csv.tmp")
        raw.to_csv(tmp, index=False)
        tmp.replace(csv)
        if not json_out:
            console.print(f"generated {len(raw)} rows of customer data (with the dirt of a real export) → {csv}",
                          highlight=False)
        example = load_spec(find_example("churn")).model_dump(mode="json", exclude_none=True)
        spec = parse_spec({**example, "sources": [{"type": "file", "path": str(csv.resolve()), "format": "csv"}]},
                          origin="the demo's churn spec")
        args = TABULAR.arguments(spec, {}, settings, local=True)
        with progress(f"the {TABULAR.name} pipeline", quiet=json_out) as on_event:
            local_run = runner.run_local(TABULAR.name, args, runner.local_pipeline_root(settings), on_event)
        summary = TABULAR.summarize(local_run, settings)

        def human(s: dict[str, Any]) -> None:
            print_run(s, TABULAR.summary_lines(s))
            if s.get("registered"):
                console.print(f"next: skiff models show {s['registered']['name']}  ·  "
                              f"skiff serve {s['registered']['name']}", highlight=False)

        emit(summary, json_out, human)
        failure = run_failure("the demo pipeline", summary)
        if failure is not None:
            raise failure

