import uuid
from datetime import UTC, datetime

import pytest

from api import cursors
from shared.errors import InvalidCursor


def test_cursors_round_trip():
    moment, job_id = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), uuid.uuid4()
    assert cursors.read_job_cursor(cursors.job_cursor(moment, job_id)) == (moment, job_id)
    assert cursors.read_result_cursor(cursors.result_cursor(41)) == 41


@pytest.mark.parametrize("cursor", ["nope", "", "e30", cursors.result_cursor(3)])
def test_a_foreign_cursor_is_refused(cursor):
    with pytest.raises(InvalidCursor):
        cursors.read_job_cursor(cursor)
