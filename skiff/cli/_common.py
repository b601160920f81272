"""Shared CLI plumbing: the state every command gets, and output in human or JSON form."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console

from skiff.config import Settings

if TYPE_CHECKING:
    from skiff.spec import DatasetSpec

__all__ = ["State", "JsonOption", "emit", "console", "err_console", "state", "dataset_spec"]

console = Console()
err_console = Console(stderr=True)

_Result = TypeVar("_Result")

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as one JSON document.")]


@dataclass
class State:
    settings: Settings
    debug: bool = False


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    assert isinstance(obj, State), "the root callback sets the state"
    return obj


def emit(result: _Result, as_json: bool, human: Callable[[_Result], None] | str | None = None) -> None:
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


def dataset_spec(ctx: typer.Context, dataset: str | None, spec_file: Path | None) -> DatasetSpec:
    """The spec a command works on: ``--spec FILE``, else ``<datasets_dir>/<dataset>.yaml``; with both,
    the file must describe that dataset."""
    from skiff.errors import UsageError
    from skiff.spec import load_spec, spec_path

    if spec_file is not None:
        path = spec_file
    elif dataset is not None:
        path = spec_path(dataset, state(ctx).settings.datasets_dir)
    else:
        raise UsageError("give --dataset NAME (or --spec FILE)")
    spec = load_spec(path)
    if dataset is not None and spec.name != dataset:
        raise UsageError(f"{path} describes dataset {spec.name!r}, not {dataset!r}")
    return spec
