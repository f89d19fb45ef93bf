"""HTTP API v1 without Ray: `api_client(config)` is a TestClient over `serve.http.create_app` with
the real services, stores and a `Graph` that calls the real deployment classes in this process
(lyrics, tags, verifier, on-demand encoder). Nothing is faked but the conductor's wake-up call,
which is counted (no conductor runs here: songs stay queued)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi.testclient import TestClient

from serve.config import AppConfig
from serve.http.app import create_app
from serve.services import ApiServices, build_services

LOOPBACK_CLIENT = ("127.0.0.1", 50000)
REMOTE_CLIENT = ("192.0.2.10", 50000)


class InProcessGraph:
    """`serve.services.graph.Graph` over the deployment classes themselves, built on first use."""

    def __init__(self, config: AppConfig) -> None:
        self._config = config
        self._instances: dict[str, Any] = {}
        self.wakes = 0
        self.stopped: list[str] = []  # jobs the services asked the conductor to stop

    def _instance(self, name: str) -> Any:
        if name not in self._instances:
            config = self._config
            if name == "lyrics":
                from deployments.lyrics_llm import LyricsLLM

                self._instances[name] = LyricsLLM(config.lyrics, config.storage)
            elif name == "tags":
                from deployments.tag_normalizer import TagNormalizer

                self._instances[name] = TagNormalizer(config.tags)
            elif name == "verifier":
                from deployments.verifier import Verifier

                self._instances[name] = Verifier(config.postprocess.watermark)
            elif name == "encoder":
                from deployments.encoder import OnDemandEncoder

                self._instances[name] = OnDemandEncoder(config.postprocess, config.storage)
        return self._instances[name]

    async def wake_conductor(self) -> None:
        self.wakes += 1

    async def stop_job(self, job_id: str) -> None:
        self.stopped.append(job_id)

    def deploy(self) -> None:
        """Build the replicas health checks ask, as `serve.run` does before the app answers (the
        semantic tag engine's first load in a process takes seconds; later ones are cached)."""
        self._instance("lyrics")
        self._instance("tags")

    async def check_health(self) -> None:
        await asyncio.gather(
            self._instance("lyrics").check_health(), self._instance("tags").check_health()
        )

    async def write_lyrics(
        self, prompt: str, duration_s: float, *, style: str | None, language: str, seed: int
    ) -> Any:
        return await self._instance("lyrics").write(
            prompt, duration_s, style=style, language=language, seed=seed
        )

    async def normalize_tags(self, text: str, *, language: str, instrumental: bool) -> Any:
        return await self._instance("tags").normalize(
            text, language=language, instrumental=instrumental
        )

    async def pools(self) -> list[dict[str, Any]]:
        """The configured figures, as the router reports them before it has measured any."""
        return [
            {
                "name": pool.name,
                "model": pool.model,
                "placeable": True,
                "reason": None,
                "replicas": pool.deployment.num_replicas,
                "capacity": pool.deployment.num_replicas * pool.deployment.max_ongoing_requests,
                "in_flight": 0,
                "seconds_per_audio_second": pool.expected_render_s_per_audio_s,
                "expected_wait_s": 0.0,
            }
            for pool in self._config.models.pools
        ]

    async def verify(self, data: bytes, fmt: str, max_seconds: float) -> dict[str, Any]:
        result: dict[str, Any] = await self._instance("verifier").verify(data, fmt, max_seconds)
        return result

    async def deliver(self, job_id: str, index: int, fmt: str, token: str) -> str:
        key: str = await self._instance("encoder").deliver(job_id, index, fmt, token)
        return key


def api_services(config: AppConfig, graph: Any = None) -> ApiServices:
    if graph is None:
        graph = InProcessGraph(config)
    if isinstance(graph, InProcessGraph):
        graph.deploy()
    return build_services(config, graph)


def api_client(
    config: AppConfig, *, graph: Any = None, client: tuple[str, int] = LOOPBACK_CLIENT
) -> tuple[TestClient, ApiServices]:
    """A TestClient of the API (as a client on `client`'s address) and the services behind it."""
    services = api_services(config, graph)
    app = create_app(lambda: services)
    return TestClient(app, client=client, raise_server_exceptions=False), services
