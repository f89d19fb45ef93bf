"""Signed media URLs: links an `<audio>` element or an HLS player can fetch without a header.

With API keys configured every call needs `Authorization: Bearer …`, which a browser's media
element, a native HLS player or a download link cannot send. So the audio, peaks, HLS and stem
URLs the API hands out carry a short-lived signature instead: `?exp=…&sig=…`, an HMAC over the
owner, the path and the expiry time. The owner is not in the link: the API checks the signature
against the owner of the song the path names, so a link reveals nothing about the key it was made
for. Anyone holding the URL may fetch that one file until it expires — the usual contract of a
presigned S3 URL.

An HLS rendition is signed once for its whole directory (the playlist and its segments), because
players resolve the playlist's relative segment URIs without its query string; the API writes the
signature into each segment URI as it serves the playlist.

Expiry times are rounded up to `_EXPIRY_STEP_S`, so links stay identical for a while and browsers
can cache what they fetched.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

_EXPIRY_STEP_S = 600
_HLS_DIR = "/hls/"
SIGNATURE_PARAMS = ("exp", "sig")


def signing_scope(path: str) -> str:
    """What a signature covers: the path itself, or for a file of an HLS rendition the whole
    rendition directory (`…/hls/`)."""
    head, marker, _ = path.partition(_HLS_DIR)
    return head + marker if marker else path


class MediaUrlSigner:
    """Signs and checks media URLs with one secret shared by every API replica."""

    def __init__(self, secret: bytes, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        if not secret:
            raise ValueError("the media URL secret is empty")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self._secret = secret
        self._ttl_s = ttl_s
        self._clock = clock

    @classmethod
    def derived_from_keys(
        cls, api_keys: list[str], ttl_s: float, clock: Callable[[], float] = time.time
    ) -> MediaUrlSigner:
        """A signer whose secret is derived from the API keys (all replicas share them, so they
        agree; rotating the keys revokes every link handed out)."""
        material = b"\0".join(key.encode() for key in sorted(api_keys))
        return cls(hashlib.sha256(b"songserve media urls\0" + material).digest(), ttl_s, clock)

    def _signature(self, owner: str, scope: str, expires: int) -> str:
        message = f"{owner}\n{scope}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]

    def query(self, path: str, owner: str) -> str:
        """The query string (no `?`) that lets `owner`'s file at `path` be fetched."""
        expires = math.ceil((self._clock() + self._ttl_s) / _EXPIRY_STEP_S) * _EXPIRY_STEP_S
        signature = self._signature(owner, signing_scope(path), expires)
        return urlencode({"exp": expires, "sig": signature})

    def is_valid(self, path: str, params: Mapping[str, str], owner: str) -> bool:
        """Whether `params` carry a valid, unexpired signature of `owner`'s file at `path`."""
        try:
            expires = int(params["exp"])
            signature = params["sig"]
        except (KeyError, ValueError):
            return False
        if expires < self._clock() or not signature.isascii():  # compare_digest takes ASCII
            return False
            return False
        expected = self._signature(owner, signing_scope(path), expires)
        return hmac.compare_digest(expected, signature)


def sign_playlist(playlist: bytes, query: str) -> bytes:
    """An HLS playlist whose URI lines carry `query` (the playlist's own signature)."""
    lines = []
    for line in playlist.decode("utf-8").splitlines():
        if line and not line.startswith("#"):
            line = f"{line}{'&' if '?' in line else '?'}{query}"
        lines.append(line)
    return ("\n".join(lines) + "\n").encode("utf-8")
