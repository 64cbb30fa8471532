"""A job's options per task, the rules that validate them, and the words for unknown fields."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from shared.blank import blank_problem, is_blank
from shared.states import Task


class Strict(BaseModel):
    """A request body that refuses unknown fields and converts no types."""

    model_config = ConfigDict(extra="forbid", strict=True)


MAX_CATEGORIES = 50
MAX_CATEGORY_CHARS = 100


class SentimentOptions(Strict):
    """Options of a sentiment job: labels and scores come from the model; categories and
    insights are asked for here."""

    categories: list[str] | None = Field(
        default=None,
        description=f"1 to {MAX_CATEGORIES} category names (e.g. billing, shipping); each "
        "text gets the one nearest in meaning (`category`, `category_score` in its result).",
    )
    insights: bool = Field(
        default=False,
        description="Add to the job counts per category and label, and a summary of the "
        "negative feedback per category. Without categories every text is in one category, "
        "`all`.",
    )

    @field_validator("categories")
    @classmethod
    def _check_categories(cls, categories: list[str] | None) -> list[str] | None:
        if categories is None:
            return None
        if not 1 <= len(categories) <= MAX_CATEGORIES:
            raise ValueError(
                f"categories must have 1 to {MAX_CATEGORIES} names, not {len(categories)}"
            )
        names: list[str] = []
        seen: dict[str, int] = {}
        for position, raw in enumerate(categories):
            name = raw.strip()
            if is_blank(name):
                raise ValueError(blank_problem(f"categories[{position}]", name))
            if len(name) > MAX_CATEGORY_CHARS:
                raise ValueError(
                    f"categories[{position}] is {len(name)} characters; the limit is "
                    f"{MAX_CATEGORY_CHARS}"
                )
            if "\x00" in name or _unstorable(name):
                raise ValueError(
                    f"categories[{position}] contains a NUL character or an unpaired surrogate"
                )
            earlier = seen.setdefault(name.casefold(), position)
            if earlier != position:
                raise ValueError(
                    f"categories[{position}] {name!r} repeats categories[{earlier}] "
                    f"{names[earlier]!r} (names are compared ignoring case)"
                )
            names.append(name)
        return names


# Lengths count generated tokens with the decoder's start token: a max_length of 1 leaves
# no room for any (transformers refuses it); the model's own limit is checked at submit
# against what its workers recorded (shared/model_limits.py).
MAX_LENGTH_FIELD = Field(
    default=None,
    ge=2,
    le=4096,
    description="The longest summary, in tokens (start token included): 2 to 4096, and no "
    "more than the model's decoder positions (1,024 for BART), else 422.",
)
MIN_LENGTH_FIELD = Field(
    default=None,
    ge=0,
    le=4096,
    description="The shortest summary, in tokens; at most max_length and the model's limit.",
)


class SummarizeOptions(Strict):
    """Decoding options of a summarization job; what is omitted comes from the model's config.

    A sampled summary (`do_sample`) differs each time: it is never answered from the cache.
    """

    max_length: int | None = MAX_LENGTH_FIELD
    min_length: int | None = MIN_LENGTH_FIELD
    num_beams: int | None = Field(default=None, ge=1, le=16)
    do_sample: bool = False

    @model_validator(mode="after")
    def _min_not_above_max(self) -> SummarizeOptions:
        check_length_range(self.min_length, self.max_length)
        return self


def _unstorable(text: str) -> bool:
    """Say whether no database can store the text (an unpaired surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_length_range(min_length: int | None, max_length: int | None) -> None:
    """Raise ValueError if min_length is greater than max_length (None: not given)."""
    if max_length is not None and min_length is not None and min_length > max_length:
        raise ValueError("min_length must not be greater than max_length")


OPTIONS_BY_TASK: dict[Task, type[Strict]] = {
    Task.SENTIMENT: SentimentOptions,
    Task.SUMMARIZE: SummarizeOptions,
}


def validate_options(task: Task, options: Any) -> dict[str, Any]:
    """Return a task's options as given (defaults left out), or raise the ValidationError
    whose locations start at `options` and whose unknown options name the task's own."""
    model = OPTIONS_BY_TASK[task]
    try:
        return model.model_validate(options).model_dump(exclude_defaults=True)
    except ValidationError as error:
        line_errors: list[Any] = []
        for found in error.errors(include_url=False):
            location = ("options", *found["loc"])
            if found["type"] == "extra_forbidden" and found["loc"]:
                message = unknown_field_message(
                    str(found["loc"][-1]), list(model.model_fields), what=f"{task.value} option"
                )
                line_errors.append(
                    {
                        "type": PydanticCustomError("unknown_option", message),
                        "loc": location,
                        "input": found["input"],
                    }
                )
                continue
            rebuilt = {"type": found["type"], "loc": location, "input": found["input"]}
            if "ctx" in found:
                rebuilt["ctx"] = found["ctx"]
            line_errors.append(rebuilt)
        raise ValidationError.from_exception_data(error.title, line_errors) from None


def unknown_field_message(name: str, accepted: Sequence[str], *, what: str = "field") -> str:
    """Say that `name` is not a known `what`, the nearest known one, and all known ones:
    "unknown sentiment option 'max_length'; the sentiment options are: categories, insights"."""
    near = difflib.get_close_matches(name, accepted, n=1, cutoff=0.7)
    guess = f" (did you mean {near[0]!r}?)" if near else ""
    return f"unknown {what} {name!r}{guess}; the {what}s are: {', '.join(accepted)}"


# A deadline this far in the past is taken for a mistake (a wrong zone, a stale value),
# not for clocks that disagree a little.
PAST_TOLERANCE_S = 60.0
DEADLINE_FORM = (
    "an RFC 3339 time with a UTC offset, e.g. 2026-12-01T17:30:00Z or 2026-12-01T18:30:00+01:00"
)


def parse_deadline(raw: Any, *, now: datetime | None = None) -> datetime:
    """Return the deadline written in `raw` as an aware UTC datetime.

    Raises ValueError, saying the accepted form, for anything but an RFC 3339 string with
    an offset (`Z` or `+hh:mm`), and for a time more than PAST_TOLERANCE_S in the past.
    """
    if isinstance(raw, datetime):
        parsed = raw
    elif isinstance(raw, str) and "T" in raw.upper():
        try:
            parsed = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise ValueError(f"deadline {raw!r} is not {DEADLINE_FORM}") from None
    else:
        raise ValueError(f"deadline {raw!r} is not {DEADLINE_FORM}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"deadline {raw!r} has no UTC offset; give {DEADLINE_FORM}")
    current = now or datetime.now(UTC)
    if parsed < current - timedelta(seconds=PAST_TOLERANCE_S):
        raise ValueError(
            f"deadline {raw!r} passed already (it is {current:%Y-%m-%dT%H:%M:%SZ} now); give "
            f"a time to come, {DEADLINE_FORM}"
        )
    return parsed.astimezone(UTC)
