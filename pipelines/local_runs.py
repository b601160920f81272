"""What a kfp.local run left in its run folder, read back for the run's summary, and what every pipeline's
run summary and preflight share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from skiff.errors import UsageError

__all__ = ["task_metadata", "summary_base", "check_margin"]


def task_metadata(run: dict[str, Any], task: str) -> dict[str, Any]:
    """The output artifacts' metadata of one task of a local run (its ``executor_output.json``), merged;
    empty when the run has no local folder (a cluster run) or the task wrote none (it failed first)."""
    if not run.get("run_dir"):
        return {}
    path = Path(run["run_dir"]) / task / "executor_output.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    found: dict[str, Any] = {}
    for artifacts in doc.get("artifacts", {}).values():
        for art in artifacts.get("artifacts", []):
            found.update(art.get("metadata", {}))
    return found


def summary_base(run: dict[str, Any], run_id: str | None) -> dict[str, Any]:
    """The fields every pipeline's run summary starts with; each adds its own after them."""
    return {
        "pipeline": run["pipeline"], "status": run["status"], "duration_s": run["duration_s"],
        "steps": run["steps"], "error": run.get("error"), "run_id": run_id,
        "failed_step": run.get("failed_step"), "log_file": run.get("log_file"),
    }


def check_margin(args: dict[str, Any]) -> None:
    """The champion/challenger gate's ``margin`` parameter: a number >= 0."""
    margin = args.get("margin", 0.0)
    if not isinstance(margin, int | float) or isinstance(margin, bool) or margin < 0:
        raise UsageError("pipeline parameter 'margin' must be a number >= 0")
