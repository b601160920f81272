"""skiff's REST API (FastAPI): ``create_app`` builds it; ``skiff api`` serves it with uvicorn."""

from skiff.api.app import API_PREFIX, create_app
from skiff.api.auth import TokenSet, hash_token, load_tokens

__all__ = ["API_PREFIX", "create_app", "TokenSet", "hash_token", "load_tokens"]
