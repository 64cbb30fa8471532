"""`/problems/{type}`: what each problem-details `type` this API returns means."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from api.errors import PROBLEM_TYPE_BASE
from shared.errors import TextqError

router = APIRouter(tags=["problems"], include_in_schema=False)


def all_errors() -> list[type[TextqError]]:
    """Return TextqError and every subclass imported so far, each with its problem type."""
    found, stack = [TextqError], [TextqError]
    while stack:
        for sub in stack.pop().__subclasses__():
            found.append(sub)
            stack.append(sub)
    return found


@router.get(PROBLEM_TYPE_BASE + "{problem_type}")
def describe_problem(problem_type: str) -> dict[str, object]:
    """Describe one problem type, naming it by the `type` URI its problem bodies carry."""
    for error in all_errors():
        if error.problem_type == problem_type:
            return {
                "type": PROBLEM_TYPE_BASE + problem_type,
                "title": error.title,
                "status": error.status_code,
                "description": (error.__doc__ or "").strip(),
            }
    raise HTTPException(status_code=404, detail=f"No problem type {problem_type!r}.")
