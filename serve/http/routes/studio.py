"""The studio: a web page at `/` that makes, plays and keeps songs through the public API.

It is static files under `serve/http/static/studio/` (HTML, CSS and JavaScript modules, no build
step, nothing fetched from elsewhere): `/` answers the page and `/studio/…` its assets. Both are
public (`serve.http.auth`), so a browser can load the page before it knows a key; every call
the page makes carries the key the user gave it, like any other client's. None of it is in the
OpenAPI schema.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STUDIO_DIR = Path(__file__).resolve().parent.parent / "static" / "studio"
ASSETS_PATH = "/studio"  # serve.http.auth.PUBLIC_PREFIXES lists it
# Revalidated on every load (an ETag round trip), so an upgraded server is never paired with
# a cached page of the version before.
_REVALIDATE = {"Cache-Control": "no-cache"}

router = APIRouter(tags=["studio"])


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def studio_page() -> FileResponse:
    return FileResponse(STUDIO_DIR / "index.html", media_type="text/html", headers=_REVALIDATE)


class _StudioAssets(StaticFiles):
    """The page's own files, revalidated like the page."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.setdefault("Cache-Control", "no-cache")
        return response


def mount_studio(app: FastAPI) -> None:
    """Serve the page at `/` and its assets under `/studio/`."""
    app.include_router(router)
    app.mount(ASSETS_PATH, _StudioAssets(directory=STUDIO_DIR), name="studio")
