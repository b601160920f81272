"""What a kfp.local run left in its run folder, read back for the run's summary, and what every pipeline's
run summary and preflight share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skiff.errors import UsageError

if TYPE_CHECKING:
    from skiff.config import Settings

__all__ = ["task_metadata", "summary_base", "check_margin", "local_tracking_uri", "track_summary",
           "tracking_line"]


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


def local_tracking_uri(settings: Settings, local: bool) -> str:
    """The ``tracking_uri`` argument of a run: locally where this process resolves it (``off`` when
    nowhere), so the logging step needs no settings of its own; on a cluster empty (the steps' settings
    decide, :func:`skiff.tracking.runs.tracking_uri`)."""
    from skiff.tracking.runs import OFF, tracking_uri

    return (tracking_uri(settings) or OFF) if local else ""


def track_summary(summary: dict[str, Any], args: dict[str, Any], model_name: str | None, settings: Settings,
                  params: dict[str, Any] | None = None) -> None:
    """Where the run is in MLflow (``summary["tracking"]``: the store and the command that shows it); a
    run that did not succeed gets its failed step and error there. The pipeline's exit task has already
    marked it FAILED (:func:`components.track.component.track_final_status_op`), but kfp.local tells that
    task neither the step nor the error; the run's log does (``summary["failed_step"]``, ``error``), so
    this fills them in (a successful run was logged by the pipeline's own step; skiff.tracking.runs says
    why). Never raises."""
    from skiff.tracking.runs import OFF, track_failure, ui_command

    uri = args.get("tracking_uri") or ""
    if not uri or uri == OFF:
        summary["tracking"] = None
        return
    summary["tracking"] = {"uri": uri, "ui": ui_command(uri)}
    if summary["status"] != "SUCCESS" and summary.get("run_id"):
        error = str(summary.get("error") or "").split("\nfull log: ")[0]
        track_failure(uri, run_id=str(summary["run_id"]), pipeline=str(summary["pipeline"]),
                      model_name=model_name or "", step=summary.get("failed_step"), reason=error or "failed",
                      settings=settings, params=params, lake_uri=args.get("lake_uri") or None)


def tracking_line(summary: dict[str, Any]) -> list[str]:
    """The summary's last line when the run is tracked: how to see it beside the others."""
    track = summary.get("tracking")
    return [f"compare runs: {track['ui']}"] if track else []
