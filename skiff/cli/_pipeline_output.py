"""How the pipeline commands (``run``, ``demo``) show a local run: progress while it runs, then the
step table, the verdict and the lines its pipeline definition gives for people."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from rich.table import Table

from skiff.cli._common import console, err_console

__all__ = ["print_run", "progress"]


@contextlib.contextmanager
def progress(label: str, quiet: bool) -> Iterator[Callable[[str, str], None]]:
    """A spinner on stderr (none with ``quiet``, so ``--json`` output stays one document); yields the
    ``on_event(step, status)`` callback that updates it."""
    if quiet:
        yield lambda step, status: None
        return
    with err_console.status(f"running {label} with kfp.local…", spinner="dots") as status:
        yield lambda step, st: status.update(f"{label}: {step} {st.lower()}…")


def print_run(summary: dict[str, Any], lines: list[str]) -> None:
    """The steps with their status and seconds, the run's verdict (its error on stderr), then ``lines``
    (the definition's summary lines, printed as text: nothing in them is read as markup)."""
    t = Table("step", "status", "seconds")
    for step, info in summary["steps"].items():
        t.add_row(step, info["status"], f"{info['duration_s']:.1f}")
    console.print(t)
    console.print(f"pipeline [bold]{summary['pipeline']}[/]: {summary['status']} in {summary['duration_s']:.1f} s")
    if summary.get("error"):
        err_console.print(summary["error"], highlight=False)
    for line in lines:
        console.print(line, highlight=False, markup=False)
