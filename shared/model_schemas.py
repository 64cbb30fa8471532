"""The catalogue's models as clients see them (`GET /v1/models`, `Client.models()`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from shared.states import Task


class ModelWorker(BaseModel):
    """A live worker that serves a model."""

    name: str
    device: str
    dtype: str
    loaded: bool = Field(description="Whether the model is on its device (else: on first work).")
    revision: str | None = Field(description="The exact revision it serves the model at.")
    error: str | None = Field(default=None, description="Why it could not load the model.")


class ModelRead(BaseModel):
    """One catalogue model as `GET /v1/models` shows it."""

    name: str = Field(description="What a job chooses it by (`model`).")
    task: Task
    source: str = Field(description="A hub id or a local directory.")
    revision: str | None = Field(description="The pinned revision (none: the newest).")
    default: bool = Field(description="Whether jobs of its task that name no model get it.")
    shadow: str | None = None
    shadow_fraction: float | None = None
    loaded_revisions: list[str] = Field(
        description="The exact revisions live workers serve it at (one, unless a rollout is "
        "under way)."
    )
    labels: list[str] | None = Field(
        description="A classifier's labels, as a worker that loaded it read them (none: not "
        "loaded yet, or not a classifier)."
    )
    window_tokens: int | None = Field(
        description="The longest input it reads at once, in tokens (longer texts are split); "
        "none until a worker loaded it."
    )
    workers: list[ModelWorker] = Field(description="The live workers that serve it.")


class ModelList(BaseModel):
    """Body of `GET /v1/models`."""

    models: list[ModelRead]


class ShadowReport(BaseModel):
    """Body of `GET /v1/models/{name}/shadow`: a candidate against the default it shadows,
    on the same texts, over the last `window_h` hours. Fields of the other task are null."""

    task: Task
    default: str = Field(description="The default model whose results users got.")
    candidate: str = Field(description="The model run on a share of them (`shadow`).")
    shadow_fraction: float = Field(description="The share of the default's texts shadowed.")
    window_h: float
    items_compared: int = Field(description="Texts both models finished (newest first).")
    limited: bool = Field(
        description="Whether the window held more texts than a report compares (the newest "
        "2000 were)."
    )
    label_agreement: float | None = Field(
        default=None, description="Sentiment: the share of texts given the same label (0-1)."
    )
    labels: list[str] | None = Field(default=None, description="The confusion matrix's labels.")
    confusion: list[list[int]] | None = Field(
        default=None,
        description="Sentiment: texts per (default's label: row, candidate's label: column).",
    )
    mean_abs_delta_score: float | None = Field(
        default=None, description="Sentiment: mean |difference| in the default label's score."
    )
    max_abs_delta_score: float | None = Field(
        default=None, description="Sentiment: the largest such difference."
    )
    mean_rouge_l_f: float | None = Field(
        default=None, description="Summaries: mean ROUGE-L F of the candidate's vs the default's."
    )
    mean_length_ratio: float | None = Field(
        default=None, description="Summaries: mean words of the candidate's over the default's."
    )
