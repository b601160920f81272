"""Run checkov offline and read its JSON reports (shared by the static-check tests)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path


def run_checkov(checkov: str, framework: str, targets: list[Path], cwd: Path) -> list[dict]:
    """Scan ``targets`` (folders with -d, files with -f) and return one report per framework, each with
    ``summary`` and ``results``. checkov exits 1 when a check failed; anything else is an error."""
    args = [checkov, "--framework", framework, "--compact", "--quiet", "--skip-download", "-o", "json"]
    for t in targets:
        args += ["-d" if Path(t).is_dir() else "-f", str(t)]
    env = dict(os.environ, OMP_NUM_THREADS="1", BC_SKIP_MAPPING="TRUE", LOG_LEVEL="ERROR")
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    data = json.loads(result.stdout)
    reports = data if isinstance(data, list) else [data]
    # a target without any checked resource yields a bare summary instead of a report
    return [r if "summary" in r else {"summary": r, "results": {}} for r in reports]


def failed_checks(reports: list[dict]) -> list[dict]:
    return [f for r in reports for f in r.get("results", {}).get("failed_checks", [])]


def summary(reports: list[dict]) -> dict[str, int]:
    return {k: sum(r["summary"].get(k, 0) for r in reports) for k in ("passed", "failed", "skipped", "parsing_errors")}
