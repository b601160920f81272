"""``skiff config``: show the effective settings."""

from __future__ import annotations

from typing import Any

import typer

from skiff.cli._common import JsonOption, console, emit, state


def add_commands(app: typer.Typer) -> None:
    @app.command("config")
    def show_config(ctx: typer.Context, json_out: JsonOption = False) -> None:
        """Show the effective settings (skiff.yaml, SKIFF_* variables and flags combined)."""
        s = state(ctx).settings
        result = s.model_dump(mode="json")
        result.update(lake_uri=s.lake_uri, artifacts_uri=s.artifacts_uri, registry_uri=s.registry_uri)

        def human(r: dict[str, Any]) -> None:
            for k, v in r.items():
                console.print(f"[bold]{k}[/]: {v}", highlight=False)

        emit(result, json_out, human)
