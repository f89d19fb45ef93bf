"""Who is calling: one dependency every route gets by default, and the short list of routes that
are public.

- With API keys (from the environment, or managed in the job store with `songserve keys`), a
  caller sends `Authorization: Bearer <key>`; each key is its own owner (songs, LoRAs and quotas
  are per owner). Keys are compared and stored by hash; a managed key's owner id is random, so
  nothing stored with jobs reveals a key.
- With no keys, only clients on the server's own machine are served (owner `local`).
- Media files may instead be fetched through a signed link (`?exp&sig`, see serve.media_urls):
  the signature covers the owner of the song named in the path, so the link itself names no
  owner.

The caller is checked by `serve.http.guard` before any body is read; the dependency reads what the
guard found. `tests/unit/test_http_routes.py` fails for a route with neither the dependency nor a
place in `PUBLIC_ROUTES`.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

from serve.store.tenancy import ApiKeyRecord, hash_api_key

from .errors import ApiError

if TYPE_CHECKING:
    from serve.media_urls import MediaUrlSigner
    from serve.store import JobStore

LOCAL_OWNER = "local"
CALLER_STATE = "songserve_caller"  # where the guard leaves the caller in the ASGI scope's state

# (method, path) of the routes that take no API key: health, the API's own documentation,
# Replicate's webhook (its Standard Webhooks signature authenticates it: routes/replicate.py), and
# the studio page (routes/studio.py: static files; the calls it makes carry the user's key).
PUBLIC_ROUTES = frozenset(
    {
        ("GET", "/"),
        ("HEAD", "/"),
        ("GET", "/healthz"),
        ("POST", "/v1/replicate/webhook"),
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


# Paths under which every GET and HEAD is public: the studio page's assets (a static mount, so
# not a route of its own in PUBLIC_ROUTES).
PUBLIC_PREFIXES = ("/studio/",)


def is_public(method: str, path: str) -> bool:
    method = method.upper()
    if (method, path) in PUBLIC_ROUTES:
        return True
    return method in ("GET", "HEAD") and path.startswith(PUBLIC_PREFIXES)


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


@dataclass(frozen=True)
class Caller:
    """Who a request acts for: the owner its songs are stored under, the managed key's name
    (None for environment keys and loopback), and that key's own quotas."""

    owner: str
    key_name: str | None = None
    quotas: dict[str, Any] = field(default_factory=dict)


# How long what the job store says about keys is reused: a revoked key stops working within it
# on every replica, and a busy API asks the store at most this often per key.
KEY_CACHE_S = 2.0
# `last_used_at` is written at most this often per key.
_TOUCH_EVERY_S = 60.0


class Authenticator:
    """Decides who a request acts for from its `Authorization` header and client address.

    Keys come from the environment (`auth.api_keys`) or from the job store (`songserve keys`);
    either kind makes keys required. The store is asked through a short cache (KEY_CACHE_S).
    """

    def __init__(
        self,
        api_keys: list[str],
        jobs: JobStore | None,
        *,
        media_url_secret: str | None = None,
        media_url_ttl_s: float = 6 * 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._env_keys = list(api_keys)
        self._env_hashes = frozenset(hash_api_key(key) for key in api_keys)
        self._jobs = jobs
        self._media_url_secret = media_url_secret
        self._media_url_ttl_s = media_url_ttl_s
        self._clock = clock
        self._managed_keys = 0
        self._checked_at = -float("inf")
        self._found: dict[str, tuple[float, ApiKeyRecord | None]] = {}
        self._touched: dict[str, float] = {}
        self.signer: MediaUrlSigner | None = self._static_signer()

    def _static_signer(self) -> MediaUrlSigner | None:
        from serve.media_urls import MediaUrlSigner

        if self._media_url_secret is not None:
            return MediaUrlSigner(self._media_url_secret.encode(), self._media_url_ttl_s)
        if self._env_keys:
            return MediaUrlSigner.derived_from_keys(self._env_keys, self._media_url_ttl_s)
        return None

    @property
    def requires_keys(self) -> bool:
        return bool(self._env_hashes) or self._managed_keys > 0

    async def refresh(self) -> None:
        """Learn whether managed keys exist (at most every KEY_CACHE_S), and with them the
        media-link secret kept in the store when nothing else provides one."""
        if self._jobs is None or self._clock() - self._checked_at < KEY_CACHE_S:
            return
        self._checked_at = self._clock()
        self._managed_keys = await self._jobs.count_api_keys()
        if self.signer is None and self._managed_keys:
            from serve.media_urls import MediaUrlSigner

            secret = await self._jobs.shared_secret("media_urls")
            self.signer = MediaUrlSigner(bytes.fromhex(secret), self._media_url_ttl_s)

    async def caller(self, authorization: str | None, client_host: str | None) -> Caller:
        """Who the request acts for; ApiError 401 when the caller may not use the API."""
        await self.refresh()
        if not self.requires_keys:
            if is_loopback(client_host):
                return Caller(LOCAL_OWNER)
            raise ApiError(
                401,
                "unauthorized",
                "this server has no API keys, so it serves only clients on its own machine; "
                "create one (`songserve keys create --name NAME`) or set SONGSERVE_API_KEYS to "
                "accept remote clients",
                "Authorization",
            )
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            digest = hash_api_key(token.strip())
            if any(hmac.compare_digest(digest, known) for known in self._env_hashes):
                return Caller(key_owner(digest))
            record = await self._managed(digest)
            if record is not None:
                await self._touch(record.name)
                return Caller(record.owner, record.name, dict(record.quotas))
        raise ApiError(
            401,
            "unauthorized",
            "missing or unknown API key: send `Authorization: Bearer <api key>`",
            "Authorization",
            {"WWW-Authenticate": "Bearer"},
        )

    async def _managed(self, digest: str) -> ApiKeyRecord | None:
        if self._jobs is None:
            return None
        now = self._clock()
        cached = self._found.get(digest)
        if cached is not None and now - cached[0] < KEY_CACHE_S:
            return cached[1]
        record = await self._jobs.find_api_key(digest)
        if len(self._found) > 10_000:  # bounded: unknown keys sent at random cannot grow it
            self._found.clear()
        self._found[digest] = (now, record)
        return record

    async def _touch(self, name: str) -> None:
        now = self._clock()
        if now - self._touched.get(name, -float("inf")) >= _TOUCH_EVERY_S:
            self._touched[name] = now
            assert self._jobs is not None
            await self._jobs.touch_api_key(name)

    async def caller_of_request(self, request: Request) -> Caller:
        client = request.client.host if request.client else None
        return await self.caller(request.headers.get("authorization"), client)

    async def media_owner(self, request: Request, jobs: JobStore) -> str:
        """The owner of a request for a media file: by a signed link, or as `caller` decides."""
        await self.refresh()
        signer = self.signer
        if signer is None or "sig" not in request.query_params:
            return (await self.caller_of_request(request)).owner
        root = request.scope.get("root_path", "")
        path = request.url.path.removeprefix(root) if root else request.url.path
        song_id = str(request.path_params.get("song_id", ""))
        job = await jobs.get_job(song_id) if song_id else None
        if job is not None and signer.is_valid(path, request.query_params, job.owner):
            return job.owner
        if request.headers.get("authorization"):  # an expired link, but the caller has a key
            return (await self.caller_of_request(request)).owner
        raise ApiError(
            403,
            "invalid_signature",
            "this link has expired or was altered: get fresh links from the song (or send "
            "`Authorization: Bearer <api key>`)",
            "sig",
        )


async def require_caller(request: Request) -> Caller:
    """Who the request acts for, as the guard found it (checked again when it did not run)."""
    caller = request.scope.get("state", {}).get(CALLER_STATE)
    if isinstance(caller, Caller):
        return caller
    from .deps import services_of

    return await services_of(request).auth.caller_of_request(request)


async def require_owner(request: Request) -> str:
    """The caller's owner id (the default dependency of every non-public route)."""
    return (await require_caller(request)).owner


async def require_media_owner(request: Request) -> str:
    """For media routes: the owner by a signed link, else as `require_owner`."""
    from .deps import services_of

    services = services_of(request)
    if "sig" not in request.query_params:
        return await require_owner(request)
    return await services.auth.media_owner(request, services.jobs)


AUTH_DEPENDENCIES = (require_caller, require_owner, require_media_owner)
Owner = Annotated[str, Depends(require_owner)]
CallerOf = Annotated[Caller, Depends(require_caller)]
MediaOwner = Annotated[str, Depends(require_media_owner)]
