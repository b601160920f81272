"""What a kfp.local run left in its run folder, read back for the run's summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["task_metadata"]


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
