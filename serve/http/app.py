"""`create_app`: the FastAPI app of HTTP API v1 over the services `services_of()` returns.

Every router but `system`, `replicate` (Replicate's webhooks, authenticated by their signature) and
the studio (the web page's static files) gets the caller check as its default dependency (media
routes accept a signed link instead of a key); `RequestGuard` runs the same check before any body
is read and caps bodies as they stream.
All errors have the one shape of `serve.http.errors`.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, FastAPI

from serve.schemas import error_responses
from serve.services import ApiServices

from .auth import require_media_owner, require_owner
from .errors import install_error_handlers
from .guard import RequestGuard
from .routes import loras, media, replicate, songs, stems, suno, system, tools, uploads
from .routes.studio import mount_studio


def create_app(services_of: Callable[[], ApiServices]) -> FastAPI:
    app = FastAPI(
        title="songserve",
        version="1",
        summary="Song generation: ideas or lyrics plus a style in, finished songs out.",
    )
    app.state.services_of = services_of
    install_error_handlers(app, lambda: services_of().retry_after_s)
    app.add_middleware(RequestGuard, services_of=services_of)
    caller = [Depends(require_owner)]
    media_caller = [Depends(require_media_owner)]
    # (router, default dependencies, the error statuses its routes answer with)
    routers = [
        (system.router, [], (503,)),
        (replicate.router, [], (400, 401, 404, 413, 503)),  # signed by Replicate instead
        (songs.router, caller, (400, 401, 404, 409, 413, 422, 429, 503)),
        (media.router, media_caller, (401, 403, 404, 416, 422, 503)),
        (stems.router, caller, (400, 401, 404, 409, 413, 422, 503)),
        (tools.router, caller, (400, 401, 409, 413, 415, 422, 503)),
        (loras.router, caller, (400, 401, 403, 404, 409, 413, 422, 503)),
        (uploads.router, caller, (400, 401, 404, 413, 415, 422, 503)),
        (suno.router, caller, (400, 401, 404, 413, 422, 429, 503)),
    ]
    for router, dependencies, statuses in routers:
        app.include_router(router, dependencies=dependencies, responses=error_responses(*statuses))
    mount_studio(app)  # the web page at `/`: public static files, outside the schema
    return app
