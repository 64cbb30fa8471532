"""Every error leaves the API as RFC 9457 problem details (`application/problem+json`)."""

from __future__ import annotations

import logging
from enum import Enum
from typing import Any, get_args

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from shared.errors import InvalidRequest, ServiceUnavailable, TextqError
from shared.job_options import unknown_field_message

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "/problems/"
DATABASE_RETRY_AFTER_S = 5


def problem_response(
    *,
    status: int,
    title: str,
    detail: str,
    problem_type: str | None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """Return a problem-details response."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + problem_type if problem_type else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def error_response(error: TextqError, *, instance: str | None) -> JSONResponse:
    """Return the problem-details response for one of textq's errors."""
    headers = dict(error.headers)
    if error.status_code == 503:
        headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
    return problem_response(
        status=error.status_code,
        title=error.title,
        detail=error.detail,
        problem_type=error.problem_type,
        instance=instance,
        headers=headers,
        **error.extra,
    )


def validation_problems(
    errors: list[Any], model: type[BaseModel] | None = None
) -> list[dict[str, str]]:
    """Turn pydantic errors into `{"field", "message"}` pairs a person can read.

    With the body's `model`, an unknown field's message names the fields accepted where it
    was sent (or, for a field of a nested object sent one level too high, where it goes), and
    a missing or non-object field names what it should hold.
    """
    problems = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part not in ("body",)]
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        kind = error.get("type")
        if kind == "extra_forbidden":
            message = _unknown_field(location, model)
        elif kind in ("model_type", "dict_type"):
            message = "must be a JSON object" + _fields_of(_model_at(model, location))
        elif kind == "missing":
            message = "required" + _expected(model, location)
        problems.append({"field": ".".join(location), "message": message})
    return problems


def _unknown_field(location: list[str], model: type[BaseModel] | None) -> str:
    if not location:
        return "unknown field"
    name, parent = location[-1], _model_at(model, location[:-1])
    if parent is None:
        return f"unknown field {name!r}"
    for field, info in parent.model_fields.items():
        inner = _model_in(info.annotation)
        if inner is not None and name in inner.model_fields:
            path = ".".join([*location[:-1], field, name])
            return (
                f"unknown field {name!r}: it belongs in `{field}`, as {path} "
                f'({{"{field}": {{"{name}": ...}}}})'
            )
    return unknown_field_message(name, list(parent.model_fields))


def _fields_of(model: type[BaseModel] | None) -> str:
    if model is None:
        return ""
    return " with fields " + ", ".join(f"`{name}`" for name in model.model_fields)


def _expected(model: type[BaseModel] | None, location: list[str]) -> str:
    """Say what a missing field holds: an object's fields, or an enumeration's values."""
    inner = _model_at(model, location)
    if inner is not None:
        return ": a JSON object" + _fields_of(inner)
    parent = _model_at(model, location[:-1]) if location else None
    info = parent.model_fields.get(location[-1]) if parent is not None else None
    if info is not None and isinstance(info.annotation, type) and issubclass(info.annotation, Enum):
        return ": one of " + ", ".join(str(member.value) for member in info.annotation)
    return ""


def _model_at(model: type[BaseModel] | None, location: list[str]) -> type[BaseModel] | None:
    """Return the model of the object at `location` in a body of `model`, if it is one."""
    for part in location:
        if model is None or part.isdigit():  # a list's index: the items' model is the same
            continue
        info = model.model_fields.get(part)
        model = _model_in(info.annotation) if info is not None else None
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """Return the model an annotation holds (`JobInput`, `JobInput | None`, `list[X]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def invalid_request(error: ValidationError, model: type[BaseModel] | None = None) -> InvalidRequest:
    """Return the InvalidRequest for a pydantic validation error of a request body of `model`."""
    problems = validation_problems(error.errors(include_url=False), model)
    summary = "; ".join(
        f"{p['field']}: {p['message']}" if p["field"] else p["message"] for p in problems[:3]
    )
    return InvalidRequest(summary, errors=problems)


def install_error_handlers(app: FastAPI) -> None:
    """Map every error the API can raise to one problem-details shape."""

    @app.exception_handler(TextqError)
    async def _textq_error(request: Request, error: TextqError) -> JSONResponse:
        return error_response(error, instance=request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = validation_problems(list(error.errors()))
        return problem_response(
            status=422,
            title=InvalidRequest.title,
            detail="; ".join(f"{p['field']}: {p['message']}" for p in problems[:3]),
            problem_type=InvalidRequest.problem_type,
            instance=request.url.path,
            errors=problems,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
        return problem_response(
            status=error.status_code,
            title=_reason(error.status_code),
            detail=str(error.detail),
            problem_type=None,
            instance=request.url.path,
            headers=headers,
        )

    @app.exception_handler(OperationalError)
    async def _database_down(request: Request, error: DBAPIError) -> JSONResponse:
        log.warning("database unavailable: %s", error.orig, extra={"action": "db_unavailable"})
        return await _textq_error(request, ServiceUnavailable("The database is not reachable."))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path, extra={"action": "error"})
        return await _textq_error(request, TextqError("An unexpected error occurred."))


def _allowed_methods(request: Request) -> str:
    """Return the documented methods of the request's path (Starlette's 405 names one route's)."""
    path, root = request.scope["path"], request.scope.get("root_path", "")
    path = path.removeprefix(root) if root else path
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        if compile_path(template)[0].fullmatch(path):
            methods.update(method.upper() for method in operations)
    return ", ".join(sorted(methods))


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
