"""The webhook destination guard, with a stubbed resolver: nothing here opens a connection."""

import pytest

from shared.config import Settings
from shared.webhooks.targets import (
    UnsafeWebhookUrl,
    allowed_networks,
    parse_networks,
    safe_addresses,
)


def resolving_to(*addresses):
    return lambda host, port: list(addresses)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.9", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud-metadata"),
        ("100.100.100.200", "cloud-metadata"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::5", "private"),
        ("fd00:ec2::254", "cloud-metadata"),
        ("::ffff:127.0.0.1", "loopback"),
        ("ff02::1", "multicast"),
    ],
)
def test_inward_addresses_are_refused(address, kind):
    with pytest.raises(UnsafeWebhookUrl, match=kind):
        safe_addresses("https://hooks.example/x", allowed=[], resolver=resolving_to(address))


def test_one_inward_address_among_public_ones_is_enough_to_refuse():
    with pytest.raises(UnsafeWebhookUrl):
        safe_addresses(
            "https://hooks.example/x",
            allowed=[],
            resolver=resolving_to("93.184.215.14", "10.0.0.1"),
        )


def test_public_addresses_pass_and_the_allow_list_opens_a_network():
    public = safe_addresses("https://hooks.example/x", allowed=[], resolver=resolving_to("8.8.8.8"))
    assert [str(a) for a in public] == ["8.8.8.8"]
    allowed = parse_networks("127.0.0.0/8, ::1/128")
    loop = safe_addresses(
        "http://localhost:9/x", allowed=allowed, resolver=resolving_to("127.0.0.1")
    )
    assert [str(a) for a in loop] == ["127.0.0.1"]


@pytest.mark.parametrize(
    "url",
    ["ftp://hooks.example/x", "file:///etc/passwd", "http:///nohost", "https://u:p@hooks.example/"],
)
def test_urls_that_are_not_plain_http_are_refused(url):
    with pytest.raises(UnsafeWebhookUrl):
        safe_addresses(url, allowed=[], resolver=resolving_to("8.8.8.8"))


def test_a_host_that_does_not_resolve_is_refused():
    def fails(host, port):
        raise OSError("Name or service not known")

    with pytest.raises(UnsafeWebhookUrl, match="does not resolve"):
        safe_addresses("https://nowhere.invalid/x", allowed=[], resolver=fails)


LOOPBACK_RECEIVER = "http://127.0.0.1:8080/"


def test_the_embedded_default_sends_to_loopback_and_nothing_else_inward():
    # `textq up` with no key: its API listens on loopback only, so whoever submits is on
    # this machine already and may try the README's receiver there.
    embedded = Settings(database_url=None, auth="auto")
    for address in ("127.0.0.1", "::1"):
        found = safe_addresses(
            LOOPBACK_RECEIVER, allowed=allowed_networks(embedded), resolver=resolving_to(address)
        )
        assert [str(a) for a in found] == [address]
    for address in ("10.0.0.1", "169.254.169.254", "192.168.1.1"):
        with pytest.raises(UnsafeWebhookUrl):
            safe_addresses(
                LOOPBACK_RECEIVER,
                allowed=allowed_networks(embedded),
                resolver=resolving_to(address),
            )


@pytest.mark.parametrize(
    "settings",
    [
        Settings(database_url="postgresql+psycopg://db/textq"),
        Settings(database_url=None, auth="required"),
        Settings(database_url="postgresql+psycopg://db/textq", auth="off"),
    ],
    ids=["postgres", "sqlite-with-keys", "postgres-without-keys"],
)
def test_every_other_mode_refuses_loopback_unless_the_setting_allows_it(settings):
    with pytest.raises(UnsafeWebhookUrl, match="loopback"):
        safe_addresses(
            LOOPBACK_RECEIVER, allowed=allowed_networks(settings), resolver=resolving_to("::1")
        )
    opened = settings.model_copy(update={"webhook_allowed_networks": "127.0.0.0/8"})
    found = safe_addresses(
        LOOPBACK_RECEIVER, allowed=allowed_networks(opened), resolver=resolving_to("127.0.0.1")
    )
    assert [str(a) for a in found] == ["127.0.0.1"]
