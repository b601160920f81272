"""``skiff cloud aws ...``: the aws commands (see skiff/cli/cloud.py)."""

from __future__ import annotations

import typer


def add_commands(cloud: typer.Typer) -> None:
    aws = typer.Typer(help="aws commands.", no_args_is_help=True)
    cloud.add_typer(aws, name="aws")
