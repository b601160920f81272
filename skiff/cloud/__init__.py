"""The platform's cloud chores on AWS (boto3) and Azure (azure-identity, azure-ai-ml).

Each provider is a sub-package (``skiff.cloud.aws``, ``skiff.cloud.azure``) imported only when a command
asks for it, so the core never needs the cloud SDKs installed. What both providers share lives here:
the result of one ``skiff doctor`` check, and the Terraform outputs the commands read (``terraform output
-json`` of ``terraform/modules/aws-eks`` or ``terraform/modules/azure-aks``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skiff.errors import ConfigError, EnvironmentMissing, UsageError

__all__ = ["Check", "failed", "terraform_outputs", "output_value"]


@dataclass(frozen=True)
class Check:
    """One thing skiff relies on in a cloud account, checked: what, whether it holds, and how to fix it.

    ``fix`` says what to change (a console step, a CLI command or the Terraform setting) when ``ok`` is
    false; it never holds a secret.
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""


def failed(checks: list[Check]) -> list[Check]:
    """The checks that did not hold (``skiff doctor`` exits 1 when there is any)."""
    return [c for c in checks if not c.ok]


def terraform_outputs(file: Path | None = None, directory: Path | None = None) -> dict[str, Any]:
    """The outputs of an applied Terraform configuration: ``file`` holds what ``terraform output -json``
    printed, or ``terraform output -json`` runs in ``directory``. Exactly one of them."""
    if (file is None) == (directory is None):
        raise UsageError("give one of --tf-outputs FILE or --terraform-dir DIR")
    if file is not None:
        try:
            data = json.loads(Path(file).read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{file}: not the JSON of terraform output -json ({e})") from e
        where = str(file)
    else:
        exe = shutil.which("terraform")
        if exe is None:
            raise EnvironmentMissing("terraform is not on PATH: pass --tf-outputs FILE (terraform output -json)")
        proc = subprocess.run([exe, f"-chdir={directory}", "output", "-json"], capture_output=True, text=True,
                              timeout=120, check=False)
        if proc.returncode != 0:
            raise ConfigError(f"terraform output failed in {directory}: {proc.stderr.strip()[:500]}")
        try:
            data = json.loads(proc.stdout or "{}")
        except ValueError as e:
            raise ConfigError(f"terraform output -json in {directory} printed no JSON ({e})") from e
        where = f"terraform output -json in {directory}"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of outputs")
    return data


def output_value(outputs: Mapping[str, Any], key: str) -> Any:
    """One output's value: ``terraform output -json`` wraps each in ``{"value": ..., "type": ...}``; a plain
    mapping of values is taken as it is. None when the output is absent (or null)."""
    v = outputs.get(key)
    return v["value"] if isinstance(v, dict) and "value" in v else v
