"""Where the clients (Python and CLI) look for the server when not told."""

import pytest

from textq.client import AsyncClient, Client
from textq.server_address import server_url


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 8000, "http://127.0.0.1:8000"),
        ("0.0.0.0", 8080, "http://127.0.0.1:8080"),  # listening everywhere: reach it here
        ("", 8080, "http://127.0.0.1:8080"),
        ("::", 9000, "http://[::1]:9000"),
        ("::1", 9000, "http://[::1]:9000"),
        ("api.internal", 80, "http://api.internal:80"),
    ],
)
def test_the_default_url_is_where_a_server_with_those_settings_listens(host, port, url):
    assert server_url(host, port) == url


@pytest.mark.parametrize("client_class", [Client, AsyncClient])
def test_a_client_not_told_where_finds_the_server_where_its_settings_put_it(
    client_class, monkeypatch
):
    monkeypatch.delenv("TEXTQ_URL", raising=False)
    monkeypatch.setenv("TEXTQ_API_HOST", "0.0.0.0")
    monkeypatch.setenv("TEXTQ_API_PORT", "8731")
    assert str(client_class()._http.base_url) == "http://127.0.0.1:8731"
    monkeypatch.setenv("TEXTQ_URL", "http://127.0.0.1:9999")
    assert str(client_class()._http.base_url) == "http://127.0.0.1:9999"
    assert str(client_class("http://[::1]:1")._http.base_url) == "http://[::1]:1"
