"""The one settings object: every knob of textq, read from `TEXTQ_*` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AwareDatetime, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.states import Task

if TYPE_CHECKING:
    from shared.catalogue import Catalogue

DEFAULT_SENTIMENT_MODEL = "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
DEFAULT_SUMMARIZATION_MODEL = "facebook/bart-large-cnn"
DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_MODEL_SETTING = "TEXTQ_EMBEDDING_MODEL"
# A forward's fixed cost, in tokens, that the batch planner weighs against padding. Beside
# the framework's per-call work, on CPUs oneDNN compiles kernels for each new batch shape
# (about 6 ms a kernel, six a distilbert shape, on a 2-core AMX Xeon), and the worker keeps
# few (worker/memory.py). There, against 32, the full-size classifier in bf16 ran 2,048
# feedback texts in pools of 1,024 at 116 texts/s against 91 (three alternated passes each;
# 128: 101, 512: 105), in under half the forwards.
FORWARD_OVERHEAD_TOKENS = 256


def _default_data_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "textq"


class Settings(BaseSettings):
    """textq settings; each field is the env var `TEXTQ_<FIELD>` (see the README's table)."""

    model_config = SettingsConfigDict(env_prefix="TEXTQ_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None
    broker_url: str | None = None
    queue_prefix: str = "textq"

    sentiment_model: str = DEFAULT_SENTIMENT_MODEL
    sentiment_model_revision: str | None = None
    summarization_model: str = DEFAULT_SUMMARIZATION_MODEL
    summarization_model_revision: str | None = None
    # A TOML file naming several models per task (shared/catalogue.py); without it the two
    # settings above make a catalogue of one model per task.
    models_file: Path | None = None
    # The sentence encoder that puts each text of a job with `categories` in one of them;
    # loaded by a sentiment worker only when such a job comes.
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    embedding_model_revision: str | None = None
    # Negative feedback given to the summarizer per category of an insights job, most
    # negative first (about 5,000 tokens of English).
    insight_max_chars: int = Field(default=20_000, ge=100, le=1_000_000)

    worker_tasks: str = "sentiment,summarize"
    # Comma-separated catalogue names a worker serves (empty: every model of its tasks).
    worker_models: str = ""
    # Memory for the models a worker keeps loaded, in GB (10^9 bytes) of parameters and
    # buffers; past it the least recently used is evicted (worker/model_budget.py). None:
    # no budget, every served model stays once loaded.
    worker_memory_gb: float | None = Field(default=None, gt=0)
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    torch_threads: int = Field(default=0, ge=0)
    max_batch_tokens: int = Field(default=8192, ge=64)
    max_batch_size: int = Field(default=64, ge=1)
    summarize_max_batch_size: int = Field(default=6, ge=1)
    claim_batches: int = Field(default=16, ge=1)
    summarize_claim_batches: int = Field(default=2, ge=1)
    record_interval_s: float = Field(default=0.25, ge=0)
    result_cache: bool = True
    result_cache_ttl_s: float = Field(default=7 * 24 * 3600, gt=0)
    batch_overhead_tokens: int = Field(default=FORWARD_OVERHEAD_TOKENS, ge=0)

    retention_days: int = Field(default=30, ge=0)
    retention_sweep_interval_s: float = Field(default=3600.0, gt=0)

    lease_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    sweep_interval_s: float = Field(default=5.0, gt=0)
    drain_slice_s: float = Field(default=20.0, gt=0)
    # Redis hands an unacked doorbell to another worker after this long, even while it still
    # runs; harmless, since claims in the database decide who works on an item.
    broker_visibility_timeout_s: float = Field(default=3600.0, gt=0)
    # Passed to the broker's transport as they are, e.g. '{"unacked_restore_interval": 1}'.
    broker_transport_options: dict[str, Any] = Field(default_factory=dict)

    max_text_chars: int = Field(default=50_000, ge=1)
    max_document_chars: int = Field(default=1_000_000, ge=1)
    max_items_per_job: int = Field(default=10_000, ge=1)
    max_upload_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024)
    max_upload_rows: int = Field(default=2_000_000, ge=1)
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Jobs a tenant may have queued or running at once (0: no limit).
    max_active_jobs_per_tenant: int = Field(default=1000, ge=0)
    # Tokens of one text as submitted; a million characters of English is about 250,000.
    max_item_tokens: int = Field(default=400_000, ge=1)
    sync_timeout_s: float = Field(default=30.0, ge=0)

    webhook_allowed_networks: str = ""
    webhook_timeout_s: float = Field(default=15.0, gt=0)
    webhook_concurrency: int = Field(default=8, ge=1)
    # Seconds after the event (first) and after each failed attempt, as Standard Webhooks.
    webhook_retry_schedule_s: str = "0,5,300,1800,7200,18000,36000,50400,72000,86400"
    webhook_secret_overlap_s: float = Field(default=24 * 3600, ge=0)
    public_url: str = "http://127.0.0.1:8000"

    # auto: keys are required unless the database is the embedded SQLite file.
    auth: Literal["auto", "required", "off"] = "auto"

    # Per API key: requests per second on average, and the burst allowed (0: no limit).
    rate_limit_per_s: float = Field(default=20.0, ge=0)
    rate_limit_burst: int = Field(default=100, ge=1)
    # How long an API process trusts a key it verified (0: check the database every time).
    api_key_cache_s: float = Field(default=5.0, ge=0)
    # Database connections an API process keeps open (as many again may open under load).
    api_db_pool: int = Field(default=20, ge=1)

    # Where a worker and the webhooks process serve /metrics (port 0: not at all).
    metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=9101, ge=0, le=65535)
    webhooks_metrics_port: int = Field(default=9102, ge=0, le=65535)

    # The reference window drift is measured against, for every model and tenant (both or
    # neither; ISO 8601 with a zone). Unset: each model's first 7 days of a tenant's traffic.
    drift_reference_start: AwareDatetime | None = None
    drift_reference_end: AwareDatetime | None = None

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    log_level: str = "INFO"
    # OpenTelemetry spans to the OTLP endpoint of OTEL_EXPORTER_OTLP_* (the `otel` extra).
    tracing: bool = False
    # json: one JSON object per line; text: for people; auto: text on a terminal, else JSON.
    log_format: Literal["auto", "json", "text"] = "auto"

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        from shared.webhooks.targets import parse_networks

        parse_networks(value)  # a typo here must stop start-up, not every delivery
        return value

    @field_validator("models_file")
    @classmethod
    def _catalogue(cls, value: Path | None) -> Path | None:
        from shared.catalogue import load_file

        if value is not None:
            load_file(value)  # a bad file must stop start-up with what is wrong in it
        return value

    @property
    def catalogue(self) -> Catalogue:
        """Return the named models of each task (TEXTQ_MODELS_FILE, or the two settings)."""
        from shared.catalogue import from_settings

        return from_settings(self)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda", "mps") or value.startswith("cuda:"):
            return value
        raise ValueError("device must be auto, cpu, cuda, cuda:N or mps")

    @model_validator(mode="after")
    def _drift_reference(self) -> Settings:
        start, end = self.drift_reference_start, self.drift_reference_end
        if (start is None) != (end is None):
            raise ValueError(
                "set both TEXTQ_DRIFT_REFERENCE_START and TEXTQ_DRIFT_REFERENCE_END, or neither"
            )
        if start is not None and end is not None and start >= end:
            raise ValueError("TEXTQ_DRIFT_REFERENCE_START must be before TEXTQ_DRIFT_REFERENCE_END")
        return self

    @property
    def webhook_retry_delays_s(self) -> list[float]:
        """Return the delay before each delivery attempt of an event."""
        return [float(part) for part in self.webhook_retry_schedule_s.split(",") if part.strip()]

    @property
    def resolved_database_url(self) -> str:
        """Return the configured database, or the embedded SQLite file under the data dir."""
        return self.database_url or f"sqlite:///{self.data_dir / 'textq.db'}"

    @property
    def requires_api_key(self) -> bool:
        """Return whether the API asks every job route for an API key."""
        if self.auth == "auto":
            return self.database_url is not None
        return self.auth == "required"

    @property
    def resolved_broker_url(self) -> str:
        """Return the configured broker, or the embedded file-system broker."""
        return self.broker_url or "filesystem://localhost//"

    @property
    def is_embedded_broker(self) -> bool:
        return self.resolved_broker_url.startswith("filesystem://")

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    def model_for(self, task: Task) -> str:
        """Return the model id or directory of TEXTQ_SENTIMENT_MODEL / _SUMMARIZATION_MODEL
        (the catalogue's default where no models file is set; see `catalogue`)."""
        return self.sentiment_model if task is Task.SENTIMENT else self.summarization_model

    def revision_for(self, task: Task) -> str | None:
        """Return the pinned model revision configured for a task (None: the newest)."""
        if task is Task.SENTIMENT:
            return self.sentiment_model_revision
        return self.summarization_model_revision

    def model_setting_name(self, task: Task) -> str:
        """Return the env var a user changes to pick the model of a task."""
        return "TEXTQ_SENTIMENT_MODEL" if task is Task.SENTIMENT else "TEXTQ_SUMMARIZATION_MODEL"

    def claim_batches_for(self, task: Task) -> int:
        """Return how many batches' worth of a task's items a worker claims at once."""
        return self.summarize_claim_batches if task is Task.SUMMARIZE else self.claim_batches

    @property
    def webhook_queue(self) -> str:
        """Return the broker queue of webhook deliveries."""
        return f"{self.queue_prefix}.webhooks"

    def queue_for(self, task: Task, model_name: str | None = None) -> str:
        """Return the broker queue whose messages wake the workers of a catalogue model,
        `<prefix>.<task>.<name>`; without a name (jobs from before the catalogue), the
        task's queue `<prefix>.<task>`, which every worker of the task takes."""
        queue = f"{self.queue_prefix}.{task.value}"
        return f"{queue}.{model_name}" if model_name else queue


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment."""
    return Settings()
