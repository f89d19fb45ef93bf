"""Public routes: health (the API's own documentation is FastAPI's). Listed in
`serve.http.auth.PUBLIC_ROUTES`."""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import Services

router = APIRouter(tags=["system"])


@router.get("/healthz")
async def healthz(services: Services) -> dict[str, str]:
    """`ok` once the job store and the conductor, tags and lyrics replicas answer; 503 before."""
    return await services.tools.health()
