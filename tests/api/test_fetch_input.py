"""Fetching an input_url: checked and pinned at the fetch itself, capped, nothing left behind."""

import re

import pytest

from api.fetch_input import InputFetchFailed, fetch_input
from shared.errors import RequestTooLarge
from shared.webhooks.targets import UnsafeWebhookUrl
from tests.file_server import FileServer, Served


@pytest.fixture
def files():
    running = FileServer(files={"/f.csv": Served(b"text\nfine\n")}).start()
    yield running
    running.stop()


@pytest.fixture
def fetch_settings(settings):
    # Keys required: the embedded default would open all of loopback.
    return settings.model_copy(
        update={
            "webhook_allowed_networks": "127.0.0.1/32",
            "auth": "required",
            "max_upload_bytes": 4096,
        }
    )


def test_the_name_is_resolved_at_the_fetch_and_the_request_goes_to_that_address(
    files, fetch_settings
):
    port = files.server.server_address[1]
    fetched = fetch_input(
        f"http://files.test:{port}/f.csv?sig=a%2Fb",
        fetch_settings,
        lambda host, port: ["127.0.0.1"],
    )
    with fetched.file:
        assert fetched.file.read() == b"text\nfine\n"
    assert (fetched.filename, fetched.host) == ("f.csv", f"files.test:{port}")
    [get] = files.received
    assert (get.path, get.headers["host"]) == ("/f.csv?sig=a%2Fb", f"files.test:{port}")


def test_a_name_that_now_resolves_where_textq_may_not_go_is_not_fetched(files, fetch_settings):
    port = files.server.server_address[1]
    with pytest.raises(
        UnsafeWebhookUrl, match=re.escape("input_url host 'files.test' resolves to 127.0.0.3")
    ):
        fetch_input(
            f"http://files.test:{port}/f.csv", fetch_settings, lambda host, port: ["127.0.0.3"]
        )
    assert files.received == []


def test_a_redirect_is_not_followed_and_a_big_body_is_cut_off(files, fetch_settings):
    files.files["/moved"] = Served(b"", status=302, headers={"location": "http://10.0.0.1/x"})
    with pytest.raises(
        InputFetchFailed, match=re.escape("HTTP 302 (a redirect, which is not followed)")
    ):
        fetch_input(files.url("/moved"), fetch_settings)
    files.files["/big"] = Served(b"x" * 5000, content_length=False)
    with pytest.raises(RequestTooLarge, match="over 4096 bytes"):
        fetch_input(files.url("/big"), fetch_settings)
    assert [r.path for r in files.received] == ["/moved", "/big"]
