"""Read a JSON request body strictly: size, media type, UTF-8 and JSON each get a clear error."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from api.errors import invalid_request
from shared.config import Settings
from shared.errors import BodyNotUtf8, MalformedJson, RequestTooLarge, UnsupportedMediaType
from shared.schemas import InputLimits, JobCreate

ModelT = TypeVar("ModelT", bound=BaseModel)

# `curl -d` sends form-urlencoded unless told otherwise; its body is still the JSON typed.
JSON_MEDIA_TYPES = {"application/json", "application/x-www-form-urlencoded", "text/plain", ""}


def media_type_of(request: Request) -> str:
    """Return the request's media type, lower-cased, without parameters."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_text(request: Request, *, max_bytes: int) -> str:
    """Return the body as UTF-8 text, refusing it once it passes `max_bytes`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise RequestTooLarge(f"The body is {declared} bytes; the limit is {max_bytes}.")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise RequestTooLarge(f"The body is over the limit of {max_bytes} bytes.")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BodyNotUtf8(
            f"The body is not valid UTF-8: byte 0x{body[error.start]:02x} at offset {error.start}."
        ) from None


async def read_json(request: Request, *, max_bytes: int) -> Any:
    """Return the parsed JSON body, or raise the error that says what is wrong with it."""
    media_type = media_type_of(request)
    if media_type not in JSON_MEDIA_TYPES and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"The body must be JSON (Content-Type: application/json), not {media_type!r}."
        )
    text = await read_text(request, max_bytes=max_bytes)
    if not text.strip():
        raise MalformedJson("The body is empty; send a JSON object.")
    return parse_json(text, what="The body")


def parse_json(text: str, *, what: str) -> Any:
    """Return `text` parsed as JSON, or raise MalformedJson naming `what` was not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise MalformedJson(
            f"{what} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}."
        ) from None
    except (ValueError, RecursionError) as error:  # a 5,000-digit number; nesting 10,000 deep
        raise MalformedJson(f"{what} is not JSON this server accepts: {error}.") from None


def parse_body(model: type[ModelT], data: Any, *, settings: Settings) -> ModelT:
    """Validate parsed JSON against a request model and the configured input limits."""
    limits = InputLimits(
        max_text_chars=settings.max_text_chars,
        max_items_per_job=settings.max_items_per_job,
        max_document_chars=settings.max_document_chars,
    )
    try:
        return model.model_validate(data, context={"limits": limits})
    except ValidationError as error:
        raise invalid_request(error, model) from None


def json_body(model: type[ModelT]) -> Callable[[Request], Awaitable[ModelT]]:
    """Return a dependency that reads and validates the request body as `model`."""

    async def dependency(request: Request) -> ModelT:
        settings: Settings = request.app.state.settings
        data = await read_json(request, max_bytes=settings.max_request_bytes)
        return parse_body(model, data, settings=settings)

    return dependency


async def read_job_submission(request: Request) -> JobCreate:
    """Read a job from a JSON body, or a `text/plain` document with `?task=` (and `options=`,
    `model=`).

    `text/plain` without `task` stays JSON: some clients label JSON that way.
    """
    settings: Settings = request.app.state.settings
    task = request.query_params.get("task")
    if media_type_of(request) != "text/plain" or task is None:
        data = await read_json(request, max_bytes=settings.max_request_bytes)
        return parse_body(JobCreate, data, settings=settings)
    document = await read_text(request, max_bytes=settings.max_request_bytes)
    raw_options = request.query_params.get("options")
    options = parse_json(raw_options, what="The options parameter") if raw_options else {}
    data = {"task": task, "input": {"document": document}, "options": options}
    if (model := request.query_params.get("model")) is not None:
        data["model"] = model
    return parse_body(JobCreate, data, settings=settings)


def request_body_doc(
    model: type[BaseModel], *, plain_text_document: bool = False
) -> dict[str, Any]:
    """Return the `openapi_extra` that documents a body read by `json_body(model)`."""
    content: dict[str, Any] = {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
    }
    if plain_text_document:
        content["text/plain"] = {
            "schema": {"type": "string", "description": "A document; needs ?task=."}
        }
    return {"requestBody": {"required": True, "content": content}}
