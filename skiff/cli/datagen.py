"""``skiff example-data``: the demo data sets as raw CSV exports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skiff.cli._common import console
from skiff.errors import UsageError

_SETS = ("churn", "housing")


def add_commands(app: typer.Typer) -> None:
    @app.command("example-data")
    def example_data(
        name: Annotated[str, typer.Argument(help="churn (binary classification) or housing (regression).")],
        output: Annotated[Path | None, typer.Option("-o", "--output", help="CSV file (default data/<name>.csv).")] = None,
        rows: Annotated[int | None, typer.Option("--rows", min=100, help="Rows to generate.")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
        clean: Annotated[bool, typer.Option("--clean", help="Without the dirt of a real export.")] = False,
    ) -> None:
        """Write a realistic example data set (the one examples/<name>.yaml describes) as CSV."""
        from skiff import datagen

        if name not in _SETS:
            raise UsageError(f"unknown example data set {name!r}; known: {', '.join(_SETS)}")
        make = getattr(datagen, name)
        df = make(**({"n": rows} if rows else {}), seed=seed)
        if not clean:
            df = datagen.dirty(df, seed=seed)
        out = output or Path("data") / f"{name}.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        df.to_csv(tmp, index=False)
        tmp.replace(out)
        console.print(f"{out} ({len(df)} rows)", highlight=False)
