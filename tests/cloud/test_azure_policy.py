"""The least-privilege role assignments modules/azure-aks outputs for skiff's cloud commands
(cloud_commands_role_assignments): each names a command skiff has, a built-in role, and a scope no wider
than one resource the module makes; the docs' table of what each command needs says the same. (No Azure
emulator enforces RBAC, so unlike AWS's policy these are not exercised as the caller's only rights.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import hcl2
import pytest
from typer.main import get_command

from skiff.cli import app
from skiff.cloud.azure.doctor import ROLES

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "terraform/modules/azure-aks"
DOCS = REPO / "docs/tasks/cloud-azure.md"


def _assignments() -> list[dict[str, str]]:
    doc = hcl2.load((MODULE / "cloud_commands.tf").open())
    rows = doc["locals"][0]["cloud_commands_role_assignments"]

    def plain(v: str) -> str:
        return v[1:-1] if len(v) >= 2 and v[0] == v[-1] == '"' else v

    return [{k: plain(v) for k, v in row.items() if not k.startswith("__")} for row in rows]


def test_the_output_is_the_local_the_commands_are_documented_by() -> None:
    outputs = {k.strip('"'): v for o in hcl2.load((MODULE / "outputs.tf").open())["output"] for k, v in o.items()}
    out = outputs["cloud_commands_role_assignments"]
    assert "local.cloud_commands_role_assignments" in out["value"]


@pytest.mark.parametrize("row", _assignments(), ids=lambda r: f"{r['command']}:{r['role']}")
def test_each_assignment_is_a_real_command_a_built_in_role_and_a_narrow_scope(row: dict[str, str]) -> None:
    words = shlex.split(row["command"])
    assert words[0] == "skiff"
    cmd = get_command(app)
    path = []
    for w in words[1:]:
        if w.startswith("-"):
            break
        cmd = cmd.commands[w]  # type: ignore[attr-defined]
        path.append(w)
    options = {o for p in cmd.params for o in p.opts}
    assert {w for w in words if w.startswith("--")} <= options, (path, options)
    assert row["role"] in ROLES.values()
    scope = row["scope"]
    # one resource of the module (or its resource group): never a subscription, never a wildcard
    assert re.fullmatch(r"\$\{(azurerm_[a-z_]+\.[a-z_]+\.id|local\.container_scope)\}", scope), scope
    if row["role"].startswith("Storage Blob Data"):
        assert scope == "${local.container_scope}"  # skiff's file system, not the account


def test_the_docs_table_lists_every_assignment() -> None:
    text = DOCS.read_text()
    table = text[text.index("## What each command needs (Azure RBAC)"):]
    for row in _assignments():
        short = row["command"].removeprefix("skiff ").removeprefix("cloud azure ")
        line = next((ln for ln in table.splitlines() if ln.startswith("|") and f"`{short}`" in ln), None)
        assert line is not None, short
        assert f"`{row['role']}`" in line, (short, line)
