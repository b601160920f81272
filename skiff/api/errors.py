"""One place mapping errors to HTTP responses with a JSON body ``{"error", "message", "detail"?}``.

:class:`skiff.errors.SkiffError` subclasses give their own ``http_status``; request validation gives
422 naming the field (``detail.errors``); unknown routes 404; anything unexpected 500 without a
traceback (logged here). :class:`ErrorBody` is that body's schema: every route declares it in the
OpenAPI document for every status it can return (:func:`declare`), and every error response of the
server, the request guard's 401 and 413 included, is built by :func:`error_response`.
"""

from __future__ import annotations

import http
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from skiff.errors import SkiffError

__all__ = ["ErrorBody", "FieldError", "ValidationErrorBody", "declare", "declare_beside", "error_response", "install_error_handlers"]

log = logging.getLogger("skiff.api")


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str = Field(description="The error class, e.g. NotFoundError, Unauthorized, PayloadTooLarge.")
    message: str = Field(description="One line saying what was wrong and what to do.")
    detail: dict[str, Any] | None = Field(default=None, description="Structured context, when there is some.")


class FieldError(BaseModel):
    loc: str = Field(description="Where: body.version, path.name, query.date …")
    msg: str
    type: str


class ValidationDetail(BaseModel):
    errors: list[FieldError]


class ValidationErrorBody(ErrorBody):
    """A request that does not match the schema (422)."""

    detail: ValidationDetail  # type: ignore[assignment]


_DESCRIPTIONS = {
    400: "Bad request: a value the schema cannot express was refused (named in the message).",
    401: "Missing or invalid bearer token (checked before the body is read).",
    403: "The token is read-only; the request needs an admin token.",
    404: "What the path names does not exist.",
    409: "Conflict with the current state (e.g. a local run is in progress).",
    413: "The request body is larger than the server's limit.",
    422: "The request does not match the schema, or a spec or gate refused it.",
    500: "The server is misconfigured or failed unexpectedly (the server log has the details).",
    502: "An upstream (e.g. Kubeflow Pipelines) failed.",
    503: "The lake, registry or a step's environment is unavailable or unreadable.",
    504: "An upstream (e.g. the model server behind the predict proxy) did not answer in time.",
}


def declare(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, all with :class:`ErrorBody` (422: its validation form)."""
    return {s: {"model": ValidationErrorBody if s == 422 else ErrorBody, "description": _DESCRIPTIONS[s]}
            for s in statuses}


def declare_beside(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """:func:`declare` for a route whose success is not JSON (HTML, YAML): FastAPI would document the error
    model under the route's own media type, so the JSON content is named explicitly (the schemas are in
    the document's components through the JSON routes' declarations)."""
    def ref(s: int) -> str:
        return "#/components/schemas/" + ("ValidationErrorBody" if s == 422 else "ErrorBody")

    return {s: {"description": _DESCRIPTIONS[s], "content": {"application/json": {"schema": {"$ref": ref(s)}}}}
            for s in statuses}


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase.replace(" ", "")
    except ValueError:
        return "HTTPError"


def error_response(status: int, message: str, *, error: str | None = None, detail: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=error or _phrase(status), message=message, detail=detail)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _loc(loc: Any) -> str:
    return ".".join(str(p) for p in loc)


async def _skiff_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SkiffError)
    if exc.http_status >= 500:
        log.error("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc.message)
    return error_response(exc.http_status, exc.message, error=type(exc).__name__, detail=exc.detail or None)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": _loc(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
              for e in exc.errors()]
    message = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors) or "invalid request"
    return error_response(422, message, error="RequestValidationError", detail={"errors": errors})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else _phrase(exc.status_code)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path}"
    return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return error_response(500, "unexpected server error; the server log has the details",
                          error="InternalServerError")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SkiffError, _skiff_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
