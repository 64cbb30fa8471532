from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from shared.config import Settings
from shared.models import Job, JobItem


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "max_text_chars": 100,
            "max_document_chars": 5000,
            "max_items_per_job": 5,
            "max_request_bytes": 16384,
            "max_upload_bytes": 1024 * 1024,
        }
    )


@pytest.fixture
def client(api_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings), base_url="http://127.0.0.1") as test_client:
        yield test_client


@pytest.fixture
def stored_rows(db):
    """Return a callable counting jobs and items, to show a refused request wrote nothing."""

    def count() -> tuple[int, int]:
        with db.read() as session:
            return (
                session.scalar(select(func.count()).select_from(Job)),
                session.scalar(select(func.count()).select_from(JobItem)),
            )

    return count
