"""Replicate's webhook: where predictions of pools with `replicate.delivery: webhook` report
their result. Public (listed in `serve.http.auth.PUBLIC_ROUTES`): the Standard Webhooks signature
with `replicate.webhook_secret_env`'s secret is the authentication. Bodies are capped by
`serve.http.guard` before anything is read."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from ..deps import Services

router = APIRouter(prefix="/v1/replicate", tags=["replicate"])


@router.post("/webhook", status_code=204, response_class=Response)
async def replicate_webhook(request: Request, services: Services) -> Response:
    """A prediction's `completed` event from Replicate: verified, kept for the decoder that
    waits for it, answered 204. 401 for a missing, wrong or stale signature."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    await services.replicate_webhooks.receive(headers, await request.body())
    return Response(status_code=204)
