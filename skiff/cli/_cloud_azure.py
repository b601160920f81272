"""``skiff cloud azure ...``: the azure commands (see skiff/cli/cloud.py)."""

from __future__ import annotations

import typer


def add_commands(cloud: typer.Typer) -> None:
    azure = typer.Typer(help="azure commands.", no_args_is_help=True)
    cloud.add_typer(azure, name="azure")
