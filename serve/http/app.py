"""`create_app`: the FastAPI app of HTTP API v1 over the services `services_of()` returns.

Every router but `system` gets the caller check as its default dependency (media routes accept a
signed link instead of a key); `RequestGuard` runs the same check before any body is read and caps
bodies as they stream. All errors have the one shape of `serve.http.errors`.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, FastAPI

from serve.services import ApiServices

from .auth import require_media_owner, require_owner
from .errors import install_error_handlers
from .guard import RequestGuard
from .routes import loras, media, songs, stems, suno, system, tools


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
    app.include_router(system.router)
    app.include_router(songs.router, dependencies=caller)
    app.include_router(media.router, dependencies=[Depends(require_media_owner)])
    app.include_router(stems.router, dependencies=caller)
    app.include_router(tools.router, dependencies=caller)
    app.include_router(loras.router, dependencies=caller)
    app.include_router(suno.router, dependencies=caller)
    return app
