"""The platform's cloud chores on AWS (boto3) and Azure (azure-identity, azure-ai-ml).

Each provider is a sub-package (``skiff.cloud.aws``, ``skiff.cloud.azure``) imported only when a command
asks for it, so the core never needs the cloud SDKs installed. What both providers share lives here:
the result of one ``skiff doctor`` check.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Check", "failed"]


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
