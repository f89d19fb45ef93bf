"""Who is calling: one dependency every route gets by default, and the short list of routes that
are public.

- With API keys configured, a caller sends `Authorization: Bearer <key>`; each key is its own
  owner (songs, LoRAs and quotas are per owner). Keys are compared by hash, so the owner id
  stored with jobs never reveals a key.
- With no keys, only clients on the server's own machine are served (owner `local`).
- Media files may instead be fetched through a signed link (`?exp&sig`, see serve.media_urls):
  the signature covers the owner of the song named in the path, so the link itself names no
  owner.

The caller is checked by `serve.http.guard` before any body is read; the dependency reads what the
guard found. `tests/unit/test_http_routes.py` fails for a route with neither the dependency nor a
place in `PUBLIC_ROUTES`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from .errors import ApiError

if TYPE_CHECKING:
    from serve.media_urls import MediaUrlSigner
    from serve.store import JobStore

LOCAL_OWNER = "local"
OWNER_STATE = "songserve_owner"  # where the guard leaves the caller in the ASGI scope's state

# (method, path) of the routes anyone may call: health, and the API's own documentation.
PUBLIC_ROUTES = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/openapi.json"),
        ("HEAD", "/openapi.json"),
        ("GET", "/docs"),
        ("HEAD", "/docs"),
        ("GET", "/docs/oauth2-redirect"),
        ("HEAD", "/docs/oauth2-redirect"),
        ("GET", "/redoc"),
        ("HEAD", "/redoc"),
    }
)


def is_public(method: str, path: str) -> bool:
    return (method.upper(), path) in PUBLIC_ROUTES


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def key_owner(digest: str) -> str:
    """The owner id of an environment key, from its sha256 (stored with jobs; never sent out)."""
    return f"key_{digest[:16]}"


class Authenticator:
    """Decides the owner of a request from its `Authorization` header and client address."""

    def __init__(self, api_keys: list[str], signer: MediaUrlSigner | None) -> None:
        self._key_hashes = frozenset(hashlib.sha256(key.encode()).hexdigest() for key in api_keys)
        self.signer = signer

    @property
    def requires_keys(self) -> bool:
        return bool(self._key_hashes)

    def owner(self, authorization: str | None, client_host: str | None) -> str:
        """The caller's owner id; ApiError 401 when the caller may not use the API."""
        if not self._key_hashes:
            if is_loopback(client_host):
                return LOCAL_OWNER
            raise ApiError(
                401,
                "unauthorized",
                "this server has no API keys configured, so it serves only clients on its own "
                "machine; set SONGSERVE_API_KEYS (or auth.api_keys) to accept remote clients",
                "Authorization",
            )
        scheme, _, token = (authorization or "").partition(" ")
        digest = hashlib.sha256(token.strip().encode()).hexdigest()
        if scheme.lower() == "bearer" and any(
            hmac.compare_digest(digest, known) for known in self._key_hashes
        ):
            return key_owner(digest)
        raise ApiError(
            401,
            "unauthorized",
            "missing or unknown API key: send `Authorization: Bearer <api key>`",
            "Authorization",
            {"WWW-Authenticate": "Bearer"},
        )

    def owner_of_request(self, request: Request) -> str:
        client = request.client.host if request.client else None
        return self.owner(request.headers.get("authorization"), client)

    async def media_owner(self, request: Request, jobs: JobStore) -> str:
        """The owner of a request for a media file: by a signed link, or as `owner` decides."""
        signer = self.signer
        if signer is None or "sig" not in request.query_params:
            return self.owner_of_request(request)
        root = request.scope.get("root_path", "")
        path = request.url.path.removeprefix(root) if root else request.url.path
        song_id = str(request.path_params.get("song_id", ""))
        job = await jobs.get_job(song_id) if song_id else None
        if job is not None and signer.is_valid(path, request.query_params, job.owner):
            return job.owner
        if request.headers.get("authorization"):
            return self.owner_of_request(request)  # an expired link, but the caller has a key
        raise ApiError(
            403,
            "invalid_signature",
            "this link has expired or was altered: get fresh links from the song (or send "
            "`Authorization: Bearer <api key>`)",
            "sig",
        )


async def require_owner(request: Request) -> str:
    """The caller's owner id (the default dependency of every non-public route)."""
    owner = request.scope.get("state", {}).get(OWNER_STATE)
    if owner is not None:
        return str(owner)
    from .deps import services_of

    return services_of(request).auth.owner_of_request(request)


async def require_media_owner(request: Request) -> str:
    """For media routes: the owner by a signed link, else as `require_owner`."""
    from .deps import services_of

    services = services_of(request)
    if "sig" not in request.query_params:
        return await require_owner(request)
    return await services.auth.media_owner(request, services.jobs)


AUTH_DEPENDENCIES = (require_owner, require_media_owner)
Owner = Annotated[str, Depends(require_owner)]
MediaOwner = Annotated[str, Depends(require_media_owner)]
