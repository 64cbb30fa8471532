"""JSON log lines carry the fields bound to their unit of work; text lines stay for people."""

import json
import logging

import pytest

from shared.logs import bind, configure_logging, log_scope


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_what_the_unit_of_work_bound(restore_logging, capsys):
    configure_logging("INFO", "json")
    log = logging.getLogger("textq.test")
    with log_scope(request_id="r1"):
        bind(tenant="acme")
        bind(job_id="j1")
        log.info("job %s accepted — ok", "j1", extra={"action": "submit"})
    log.info("outside")
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["message"] == "job j1 accepted — ok"
    assert (first["level"], first["logger"]) == ("INFO", "textq.test")
    assert {k: first[k] for k in ("request_id", "tenant", "job_id", "action")} == {
        "request_id": "r1",
        "tenant": "acme",
        "job_id": "j1",
        "action": "submit",
    }
    assert "time" in first and "tenant" not in second


def test_text_lines_are_for_people(restore_logging, capsys):
    configure_logging("INFO", "text")
    logging.getLogger("textq.test").warning("plain")
    line = capsys.readouterr().err.strip()
    assert line.endswith("WARNING MainProcess textq.test: plain")
