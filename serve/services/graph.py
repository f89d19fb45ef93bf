"""`Graph`: what the HTTP services ask of the other deployments, as plain async calls.

The services hold no Ray handle. In the cluster, `deployments.api.HandleGraph` makes these calls
through Serve handles (and turns back-pressure into 503 + Retry-After); tests pass any object with
these methods, so routes run under FastAPI's TestClient with no Ray at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pipeline.tags import StyleTags


class WrittenLyricsLike(Protocol):
    text: str
    sections: Any
    engine: str
    model: str | None
    fallback_reason: str | None
    repairs: list[str]


class Graph(Protocol):
    async def wake_conductor(self) -> None:
        """A new song or stems job is in the store (polling finds it anyway: best effort)."""

    async def stop_job(self, job_id: str) -> None:
        """A running job was canceled in the store: stop driving it now (best effort; its
        driver also notices at its next lease renewal)."""

    async def check_health(self) -> None:
        """Raises unless the conductor, tags and lyrics replicas answer."""

    async def write_lyrics(
        self, prompt: str, duration_s: float, *, style: str | None, language: str, seed: int
    ) -> WrittenLyricsLike: ...

    async def normalize_tags(
        self, text: str, *, language: str, instrumental: bool
    ) -> StyleTags: ...

    async def pools(self) -> list[dict[str, Any]]:
        """The router's view of each decoder pool (`GET /v1/pools`)."""
        ...

    async def verify(self, data: bytes, fmt: str, max_seconds: float) -> dict[str, Any]:
        """C2PA and watermark report of an audio file."""
        ...

    async def deliver(self, job_id: str, index: int, fmt: str, token: str) -> str:
        """Have a lazy format made from the kept master under the delivery claim `token`;
        returns its object key."""
        ...
