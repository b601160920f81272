"""Unknown query parameters are refused (422 naming them), as unknown body fields are: the OpenAPI document
declares each route's query parameters and no others, so a misspelt one (``?verison=2``) is an error
rather than silently ignored."""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

__all__ = ["reject_unknown_query"]

_DECLARED: dict[int, frozenset[str]] = {}


def _query_names(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _declared(route: APIRoute) -> frozenset[str]:
    names = _DECLARED.get(id(route))
    if names is None:
        names = frozenset(_query_names(route.dependant))
        _DECLARED[id(route)] = names
    return names


def reject_unknown_query(request: Request) -> None:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    unknown = sorted({k for k in request.query_params} - _declared(route))
    if unknown:
        raise RequestValidationError([{"loc": ("query", name), "msg": "unknown query parameter",
                                       "type": "extra_forbidden"} for name in unknown])
