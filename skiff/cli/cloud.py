"""``skiff cloud``, ``skiff images`` and ``skiff doctor``: the platform's cloud chores.

``skiff cloud aws ...`` and ``skiff cloud azure ...`` are the providers' own commands (credentials for
the cluster, the Azure ML workspace); ``skiff images push --registry ecr|acr`` and
``skiff doctor --cloud aws|azure`` are one command each with a provider chosen by flag. The providers'
commands live in ``_cloud_aws.py`` and ``_cloud_azure.py``; the SDKs are imported only when one runs.
"""

from __future__ import annotations

import typer

from skiff.cli import _cloud_aws, _cloud_azure


def add_commands(app: typer.Typer) -> None:
    cloud = typer.Typer(help="Cloud chores on AWS and Azure with the identity skiff already has.",
                        no_args_is_help=True)
    app.add_typer(cloud, name="cloud")
    _cloud_aws.add_commands(cloud)
    _cloud_azure.add_commands(cloud)
