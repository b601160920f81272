"""One place mapping errors to HTTP responses with a JSON body ``{"error", "message", "detail"?}``.

:class:`skiff.errors.SkiffError` subclasses give their own ``http_status``; request validation gives
422 naming the field; unknown routes 404; anything unexpected 500 without a traceback (logged here).
"""

from __future__ import annotations

import http
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from skiff.errors import SkiffError

__all__ = ["install_error_handlers"]

log = logging.getLogger("skiff.api")


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase.replace(" ", "")
    except ValueError:
        return "HTTPError"


def _loc(loc: Any) -> str:
    return ".".join(str(p) for p in loc)


async def _skiff_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SkiffError)
    if exc.http_status >= 500:
        log.error("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc.message)
    return JSONResponse(exc.to_dict(), status_code=exc.http_status)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": _loc(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
              for e in exc.errors()]
    message = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors) or "invalid request"
    return JSONResponse({"error": "RequestValidationError", "message": message, "detail": {"errors": errors}},
                        status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else _phrase(exc.status_code)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path}"
    return JSONResponse({"error": _phrase(exc.status_code), "message": message}, status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return JSONResponse({"error": "InternalServerError",
                         "message": "unexpected server error; the server log has the details"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SkiffError, _skiff_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
