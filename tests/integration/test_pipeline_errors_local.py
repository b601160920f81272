"""A pipeline step that fails under kfp.local: ``skiff run`` names the step, its real error and the log."""

import json
from pathlib import Path

import pytest
import yaml

from skiff.cli import main

pytestmark = [pytest.mark.integration]

SPEC = {
    "name": "orders",
    "entity_key": "order_id",
    "target": "returned",
    "problem_type": "binary",
    "columns": {
        "order_id": {"type": "string", "required": True},
        "amount": {"type": "float"},
        "returned": {"type": "boolean", "required": True},
    },
}


def test_a_failing_step_shows_its_exception_and_where_the_log_is(skiff_env, capsys):
    (skiff_env / "orders.csv").write_text("order_id,amount\no1,3.5\no2,4.0\n")  # the target column is missing
    spec = skiff_env / "orders.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "sources": [{"type": "file", "path": "orders.csv"}]}, sort_keys=False))

    code = main(["run", "tabular", "--local", "--json", "--spec", str(spec)])
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert code != 0 and summary["status"] == "FAILURE"
    assert summary["failed_step"] == "ingest-op"
    error = summary["error"]
    # the step's own exception, not kfp.local's "Inner task failed" wrapper
    assert error.startswith("step ingest-op failed: skiff.errors.InputError: ")
    assert "required column 'returned' missing (columns found: order_id, amount)" in error
    assert "Inner task failed" not in error and "Traceback" not in error
    log = Path(error.rsplit("full log: ", 1)[1].strip())
    assert log == Path(summary["log_file"]) and "Traceback (most recent call last)" in log.read_text()
    assert "step ingest-op failed: skiff.errors.InputError" in captured.err  # the one-line error
