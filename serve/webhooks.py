"""Song webhooks: which callback URLs a song request may name, and how deliveries are signed.

A URL is accepted when its scheme is https (or http with `webhooks.allow_http`), its host matches
`webhooks.allowed_hosts`, and every address the host resolves to is public, unless
`webhooks.allow_private_addresses`. Addresses are checked when the request is accepted and again
before each delivery, so a name that later resolves inside the network is caught then too.

Deliveries are signed as Standard Webhooks (https://www.standardwebhooks.com) specifies, so
receivers can use its libraries:
- `webhook-id`: the delivery's id, the same on every retry (receivers dedupe on it: delivery is
  at least once);
- `webhook-timestamp`: Unix seconds when this attempt was signed (refuse old ones: replays);
- `webhook-signature`: `v1,` + base64 of HMAC-SHA256(key, "{id}.{timestamp}.{body}"), where the
  key is the base64 part of a `whsec_…` secret, or the secret's UTF-8 bytes otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from serve.config import WebhooksConfig

SIGNATURE_VERSION = "v1"
# How old a delivery's timestamp may be before `verify` refuses it (replay protection).
DEFAULT_TOLERANCE_S = 300.0


class CallbackRefused(ValueError):
    """A callback URL this server will not call; the message says why and what to do."""


def check_callback_url(url: str, config: WebhooksConfig) -> tuple[str, int]:
    """The (host, port) of an acceptable callback URL, from its text alone; CallbackRefused
    otherwise. (`check_callback_addresses` looks at where the host resolves.)"""
    if not config.enabled:
        raise CallbackRefused(
            "this server sends no webhooks (webhooks.allowed_hosts is empty); leave out "
            "callback_url and follow the song's events instead"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise CallbackRefused(f"callback_url is not a URL: {error}") from None
    schemes = ("https", "http") if config.allow_http else ("https",)
    if parts.scheme not in schemes:
        raise CallbackRefused(f"callback_url must be an {' or '.join(schemes)} URL")
    if parts.username or parts.password:
        raise CallbackRefused("callback_url must not carry credentials; verify the signature")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise CallbackRefused("callback_url has no host")
    if not host_allowed(host, config.allowed_hosts):
        raise CallbackRefused(
            f"callback_url host {host!r} is not allowed here; allowed: "
            f"{', '.join(config.allowed_hosts)} (webhooks.allowed_hosts)"
        )
    return host, port or (443 if parts.scheme == "https" else 80)


def host_allowed(host: str, patterns: list[str]) -> bool:
    """`host` equals a pattern, or is a subdomain of a `*.domain` pattern."""
    host = host.lower()
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


async def check_callback_addresses(host: str, port: int, config: WebhooksConfig) -> None:
    """CallbackRefused when `host` does not resolve, or resolves to an address that is not
    public (loopback, private, link-local, …) and `webhooks.allow_private_addresses` is off."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise CallbackRefused(f"callback_url host {host!r} does not resolve ({error})") from None
    if config.allow_private_addresses:
        return
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise CallbackRefused(
                f"callback_url host {host!r} resolves to {address}, which is not a public "
                "address; a receiver inside your network needs "
                "webhooks.allow_private_addresses: true"
            )


def signing_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def signature(secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value of one delivery."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signed_headers(secret: str, delivery_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, delivery_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """What a receiver does with a delivery: ValueError unless one of its signatures is ours
    and its timestamp is recent. (`headers` with lower-case names.)"""
    delivery_id = headers.get("webhook-id", "")
    raw_timestamp = headers.get("webhook-timestamp", "")
    if not delivery_id or not raw_timestamp.isdigit():
        raise ValueError("webhook-id and webhook-timestamp are required")
    timestamp = int(raw_timestamp)
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        raise ValueError("the delivery's timestamp is too old or in the future")
    expected = signature(secret, delivery_id, timestamp, body)
    offered = headers.get("webhook-signature", "").split()
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        raise ValueError("no valid signature")
