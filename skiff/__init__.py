"""skiff: a Kubernetes-native ML platform on Kubeflow Pipelines and KServe.

The same pipelines, model server and feature repo run on one machine (the embedded default) and on
a cluster (the distributed engine); configuration chooses.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("skiff")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
