"""Print the fault table after the run, where pytest does not capture it."""

from __future__ import annotations

import pytest

from tests.faults.__main__ import table
from tests.faults.test_faults import VERDICTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if VERDICTS:
        terminalreporter.section("fault runs")
        for line in table(VERDICTS).splitlines():
            terminalreporter.write_line(line)
