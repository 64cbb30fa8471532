"""The client refuses, when it is made, an API key that no HTTP header can carry.

A stand-in transport answers in the process: nothing is sent anywhere.
"""

import os
import subprocess
import sys

import httpx
import pytest

from textq.client import AsyncClient, Client, InvalidApiKey


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("tq_…", "'…' (U+2026) at position 3"),  # the README's placeholder, pasted as it was
        ("tq_abc def", "a space at position 6"),
        ("tq_abc\n", "'\\n' (U+000A) at position 6"),
        ("tq_clé", "'é' (U+00E9) at position 5"),
    ],
)
@pytest.mark.parametrize("client_class", [Client, AsyncClient])
def test_a_key_a_header_cannot_carry_is_refused_at_construction(client_class, key, says):
    with pytest.raises(InvalidApiKey) as refused:
        client_class("http://127.0.0.1:1", api_key=key, transport=None)
    message = str(refused.value)
    assert says in message
    assert "textq keys create" in message
    assert isinstance(refused.value, ValueError)


def test_a_bad_key_from_the_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("TEXTQ_API_KEY", "tq_…")
    with pytest.raises(InvalidApiKey, match="TEXTQ_API_KEY"):
        Client("http://127.0.0.1:1")


def test_a_real_key_is_sent_as_a_bearer_token():
    seen = []

    def answer(request):
        seen.append(request.headers["authorization"])
        return httpx.Response(200, json={"items": [], "next_cursor": None})

    key = "tq_3f9c1a2b7d4e_Zm9vYmFyLWJhei1xdXV4LTAxMjM0NTY3ODlhYmNkZWY"
    with Client("http://textq.test", api_key=key, transport=httpx.MockTransport(answer)) as c:
        assert c.jobs() == []
    assert seen == [f"Bearer {key}"]


def test_the_cli_says_so_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "textq", "jobs"],
        env={**os.environ, "TEXTQ_API_KEY": "tq_…", "TEXTQ_URL": "http://127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("textq: ") and "U+2026" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
