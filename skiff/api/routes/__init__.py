"""The REST API's routers, one per area."""

from skiff.api.routes import deployments, models, monitoring, pipelines

__all__ = ["models", "pipelines", "deployments", "monitoring"]
