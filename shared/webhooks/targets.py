"""Where webhooks (and a batch's input_url / output_url) may go: public addresses only,
unless an address is explicitly allowed.

A webhook URL is the client's choice, so without a guard textq could be made to call its own
network (a database's HTTP port, a cloud metadata service). Every address the host resolves
to is checked, at submit time and again right before each send (the DNS answer may change).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from shared.errors import TextqError

if TYPE_CHECKING:
    from shared.config import Settings

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

# What the embedded default opens besides TEXTQ_WEBHOOK_ALLOWED_NETWORKS.
LOOPBACK_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

# Cloud metadata services that are not all inside the ranges `is_global` already refuses.
METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("169.254.170.2"),
    ipaddress.ip_address("100.100.100.200"),
    ipaddress.ip_address("fd00:ec2::254"),
}


class UnsafeWebhookUrl(TextqError):
    """A URL textq would reach (a webhook, an input_url, an output_url) is not one it may.

    The problem type keeps its first name, which clients already match on; the detail names
    the field."""

    status_code = 422
    problem_type = "unsafe-webhook-url"
    title = "URL refused"


def parse_networks(spec: str) -> list[IpNetwork]:
    """Return the networks of a comma-separated CIDR list (TEXTQ_WEBHOOK_ALLOWED_NETWORKS)."""
    return [
        ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip()
    ]


def allowed_networks(settings: Settings) -> list[IpNetwork]:
    """Return the non-public networks webhooks may go to under these settings.

    TEXTQ_WEBHOOK_ALLOWED_NETWORKS, plus loopback on the embedded default (the SQLite file
    and no API key): its API listens on loopback only and everything runs on one machine,
    so whoever can submit a job can reach loopback already, and a receiver tried there
    (the README's) must work without a restart. Postgres, or keys, means a shared service:
    loopback is then refused unless the setting opens it.
    """
    networks = parse_networks(settings.webhook_allowed_networks)
    if settings.database_url is None and not settings.requires_api_key:
        networks.extend(LOOPBACK_NETWORKS)
    return networks


def system_resolver(host: str, port: int) -> list[str]:
    """Return every address `host` resolves to."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def safe_addresses(
    url: str,
    *,
    allowed: Sequence[IpNetwork],
    resolver: Resolver = system_resolver,
    field: str = "webhook_url",
) -> list[IpAddress]:
    """Return the addresses to send `url` to, or raise UnsafeWebhookUrl saying why not.

    `field` is the request field the URL came in, named in the messages; a URL shown in a
    message loses its query string (a presigned URL's signature is a secret).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeWebhookUrl(
            f"{field} must be an http or https URL with a host: {redacted(url)!r}"
        )
    if parts.username or parts.password:
        raise UnsafeWebhookUrl(f"{field} must not carry credentials; sign, don't embed")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found = resolver(parts.hostname, port)
    except (OSError, ValueError) as error:
        raise UnsafeWebhookUrl(
            f"{field} host {parts.hostname!r} does not resolve: {error}"
        ) from None
    if not found:
        raise UnsafeWebhookUrl(f"{field} host {parts.hostname!r} has no address")
    addresses = [ipaddress.ip_address(address.split("%")[0]) for address in found]
    for address in addresses:
        if any(address in network for network in allowed):
            continue
        if address in METADATA_ADDRESSES or not _is_public(address):
            raise UnsafeWebhookUrl(
                f"{field} host {parts.hostname!r} resolves to {address}, a "
                f"{_kind(address)} address; textq only sends to public addresses unless "
                "TEXTQ_WEBHOOK_ALLOWED_NETWORKS allows it"
            )
    return addresses


def pinned(url: str, address: IpAddress) -> tuple[str, str]:
    """Return the URL with its host replaced by the checked address, and the Host header.

    Sending to the address that was checked (with the name kept for Host and TLS SNI) is
    what makes the check hold: a DNS answer that changed since cannot point it inward.
    The query string is kept verbatim (presigned URLs sign it).
    """
    parts = urlsplit(url)
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), host


def url_host(url: str) -> str:
    """Return the host (and port, if given) of a URL: what may be shown of a presigned one."""
    return urlsplit(url).netloc.rsplit("@", 1)[-1]


def redacted(url: str) -> str:
    """Return the URL without its query string, fragment and credentials, to show or log."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, url_host(url), parts.path, "", ""))


def _is_public(address: IpAddress) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    target = mapped or address
    return target.is_global and not target.is_multicast


def _kind(address: IpAddress) -> str:
    target = getattr(address, "ipv4_mapped", None) or address
    if target in METADATA_ADDRESSES:
        return "cloud-metadata"
    # Most specific first: Python counts link-local and unspecified as private too.
    for kind in ("loopback", "link_local", "unspecified", "multicast", "private", "reserved"):
        if getattr(target, f"is_{kind}"):
            return kind.replace("_", "-")
    return "non-public"
