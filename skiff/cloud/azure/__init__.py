"""Azure from skiff itself: model versions in an Azure ML workspace, the AKS cluster as its compute,
images in ACR and a check of the storage account, with the identity azure-identity finds.

Modules (each imports the Azure SDKs only inside the functions that call Azure):

- :mod:`~skiff.cloud.azure.workspace`: which environments opted in (``<env>/azureml.yaml``) and the
  ``MLClient`` of their workspace;
- :mod:`~skiff.cloud.azure.models`: a skiff version as an ``azure.ai.ml.entities.Model``, synced on
  registration and promotion, with pending syncs that ``skiff cloud azure sync-models`` completes;
- :mod:`~skiff.cloud.azure.compute`: the AKS cluster attached as a Kubernetes compute target;
- :mod:`~skiff.cloud.azure.acr`: ``skiff images push --registry acr``;
- :mod:`~skiff.cloud.azure.doctor`: ``skiff doctor --cloud azure``;
- :mod:`~skiff.cloud.azure.arm`: the few Azure Resource Manager calls the SDKs installed here do not make.
"""

from __future__ import annotations

__all__: list[str] = []
