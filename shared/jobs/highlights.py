"""What a sentiment job's results look like at a glance: a score histogram and its extremes.

Computed in the database, so a job of a million rows costs one scan, not a download; it is
read while the job runs too, over the rows finished so far.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Float, case, func, select
from sqlalchemy.orm import Session

from shared.models import JobItem
from shared.states import ItemStatus

SNIPPET_CHARS = 280


class HistogramBin(BaseModel):
    start: float
    end: float
    count: int


class HighlightedItem(BaseModel):
    index: int
    custom_id: str | None
    label: str
    score: float = Field(description="The measured score of this item (see `measure`).")
    text: str = Field(description=f"The text's first {SNIPPET_CHARS} characters.")


class Highlights(BaseModel):
    """A sentiment job's score histogram and its most negative and most positive texts."""

    measure: str = Field(
        description="What the histogram counts: the probability of this label (the model's "
        "positive label), or `confidence` (the winning label's probability) when the model "
        "has no label named positive."
    )
    scored: int = Field(description="Texts finished with a result so far.")
    histogram: list[HistogramBin]
    most_negative: list[HighlightedItem]
    most_positive: list[HighlightedItem]


def job_highlights(session: Session, job_id: uuid.UUID, *, bins: int, top: int) -> Highlights:
    """Return the histogram (`bins` equal bins over [0, 1]) and the `top` extremes."""
    done = (
        (JobItem.job_id == job_id)
        & JobItem.parent_id.is_(None)
        & (JobItem.status == ItemStatus.DONE.value)
    )
    positive = _positive_label(session, done)
    measure: ColumnElement[Any] = (
        JobItem.result[("scores", positive)].as_float()
        if positive is not None
        else JobItem.result["score"].as_float()
    )
    # A CASE ladder bins the same way on every database (floor and casts differ).
    bin_of = case(
        *[(measure < (b + 1) / bins, b) for b in range(bins - 1)],
        else_=bins - 1,
    )
    counts: dict[int, int] = dict(
        session.execute(select(bin_of.label("bin"), func.count()).where(done).group_by("bin")).all()
    )
    histogram = [
        HistogramBin(start=b / bins, end=(b + 1) / bins, count=counts.get(b, 0))
        for b in range(bins)
    ]
    return Highlights(
        measure=positive or "confidence",
        scored=sum(counts.values()),
        histogram=histogram,
        most_negative=_extremes(session, done, measure, top, lowest=True),
        most_positive=_extremes(session, done, measure, top, lowest=False),
    )


def _positive_label(session: Session, done: ColumnElement[bool]) -> str | None:
    """Return the model's positive label, read off one finished result's scores."""
    scores = session.scalar(select(JobItem.result["scores"]).where(done).limit(1))
    if not isinstance(scores, dict):
        return None
    return next((label for label in scores if "pos" in label.lower()), None)


def _extremes(
    session: Session,
    done: ColumnElement[bool],
    measure: ColumnElement[Any],
    top: int,
    *,
    lowest: bool,
) -> list[HighlightedItem]:
    order = measure.cast(Float).asc() if lowest else measure.cast(Float).desc()
    rows = session.execute(
        select(
            JobItem.idx,
            JobItem.custom_id,
            JobItem.result["label"].as_string(),
            measure,
            func.substr(JobItem.input_text, 1, SNIPPET_CHARS),
        )
        .where(done)
        .order_by(order, JobItem.idx)
        .limit(top)
    ).all()
    return [
        HighlightedItem(index=idx, custom_id=custom_id, label=label, score=score, text=text)
        for idx, custom_id, label, score, text in rows
    ]
