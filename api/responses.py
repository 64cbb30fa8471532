"""What routes document besides their answer: problem details, headers, the key schemes."""

from __future__ import annotations

from typing import Any

from fastapi import Security
from fastapi.security import APIKeyHeader, HTTPBearer

from api.errors import PROBLEM_MEDIA_TYPE
from shared.schemas import JobRead

Responses = dict[int | str, dict[str, Any]]

# Inline rather than a component: FastAPI files a `model=` under application/json as well.
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; `type` is a link to what the problem means.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

DESCRIPTIONS = {
    400: "The body is not JSON or not UTF-8, or the cursor is not one this server issued.",
    401: "No API key, or one that is unknown, revoked or expired.",
    404: "No job with this id for this API key's tenant.",
    409: "The job is not in a state that allows this.",
    410: "The job's inputs and results were purged after the retention period.",
    413: "The body is over the size limit.",
    415: "The body is not of a media type this route reads.",
    422: "The request is well-formed but not valid; `errors` names the fields.",
    429: "Over the API key's rate limit, or the tenant's limit of unfinished jobs; see "
    "Retry-After.",
    500: "The model could not process the text.",
    503: "The database is not reachable; retry after Retry-After.",
}

# What every route behind an API key may answer.
KEYED = (401, 429, 503)

LOCATION = {"Location": {"description": "The job's URL, to poll.", "schema": {"type": "string"}}}

# What a submit answers: the new job, or the one an earlier try with its Idempotency-Key made.
SUBMITTED: Responses = {
    202: {"headers": LOCATION},
    200: {
        "model": JobRead,
        "description": "A retry with an Idempotency-Key: the job the first try created.",
        "headers": LOCATION,
    },
}

IDEMPOTENCY_KEY = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "Retrying with the same key and request within 24 h answers 200 "
            "with the job the first try created; the same key with another request is a 422.",
            "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
        }
    ]
}


def problems(*statuses: int, **descriptions: str) -> Responses:
    """Return `responses=` documenting these statuses as problem details.

    `descriptions` replaces a status's default text, keyed `s409=...`.
    """
    return {
        status: {
            "description": descriptions.get(f"s{status}", DESCRIPTIONS[status]),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}},
        }
        for status in sorted(statuses)
    }


# Only documents the two ways to send a key (OpenAPI `securitySchemes`); deps.get_tenant_id
# reads and checks the key, and skips it when auth is off.
API_KEY_SCHEMES = [
    Security(HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")),
    Security(APIKeyHeader(name="X-API-Key", auto_error=False, description="The key alone.")),
]
