"""Shared CLI plumbing: the state every command gets, and output in human or JSON form."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console

from skiff.config import Settings

__all__ = ["State", "JsonOption", "emit", "console", "err_console", "state"]

console = Console()
err_console = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as one JSON document.")]


@dataclass
class State:
    settings: Settings
    debug: bool = False


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    assert isinstance(obj, State), "the root callback sets the state"
    return obj


def emit(result: Any, as_json: bool, human: Callable[[Any], None] | str | None = None) -> None:
    """Print a command's result: JSON on stdout with --json, else the human rendering."""
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
        sys.stdout.flush()
    elif callable(human):
        human(result)
    elif human is not None:
        console.print(human, highlight=False)
    else:
        console.print_json(json.dumps(result, default=str))
