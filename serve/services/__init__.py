"""What the HTTP API does, as services over the job and object stores and a `Graph` of calls into
the other deployments. They hold no Ray handle: `build_services(config, graph)` with any `Graph`
gives routes that run under FastAPI's TestClient.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serve.config import AppConfig
    from serve.http.auth import Authenticator
    from serve.http.events import EventStreams
    from serve.store import JobRecord, JobStore, ObjectStore
    from serve.workflow.webhooks import SongDescriber

    from .graph import Graph
    from .loras import LoraService
    from .media import MediaService
    from .quotas import Quotas
    from .replicate_webhooks import ReplicateWebhookService
    from .songs import SongService
    from .stems import StemsService
    from .suno import SunoService
    from .tools import ToolService
    from .uploads import UploadService
    from .views import Views


@dataclass
class ApiServices:
    config: AppConfig
    jobs: JobStore
    objects: ObjectStore
    auth: Authenticator
    views: Views
    songs: SongService
    media: MediaService
    stems: StemsService
    loras: LoraService
    tools: ToolService
    quotas: Quotas
    suno: SunoService
    uploads: UploadService
    replicate_webhooks: ReplicateWebhookService

    @property
    def retry_after_s(self) -> int:
        return self.config.api.overload_retry_after_s

    @cached_property
    def events(self) -> EventStreams:
        from serve.http.events import EventStreams

        return EventStreams(self)


def _authenticator(config: AppConfig, jobs: JobStore) -> Authenticator:
    from serve.http.auth import Authenticator

    auth = config.auth
    return Authenticator(
        [key.get_secret_value() for key in auth.api_keys],
        jobs,
        media_url_secret=(
            auth.media_url_secret.get_secret_value() if auth.media_url_secret else None
        ),
        media_url_ttl_s=auth.media_url_ttl_s,
    )


def song_describer(config: AppConfig, jobs: JobStore) -> SongDescriber:
    """The song as `GET /v1/songs/{id}` shows it, for webhooks sent from outside the API (its
    media links signed as the API signs them)."""
    from .views import Views

    authenticator = _authenticator(config, jobs)
    views = Views(config, authenticator)

    async def describe(job: JobRecord) -> dict[str, Any]:
        await authenticator.refresh()  # managed keys: the media-link secret is in the store
        return views.song(job).model_dump(mode="json")

    return describe


def build_services(config: AppConfig, graph: Graph) -> ApiServices:
    from serve.lazy_delivery import LazyDelivery
    from serve.loras import LoraRegistry
    from serve.queue_estimate import QueueEstimator
    from serve.store import open_job_store, open_object_store

    from .loras import LoraService
    from .media import MediaService
    from .quotas import Quotas
    from .replicate_webhooks import ReplicateWebhookService
    from .songs import SongService
    from .stems import StemsService
    from .suno import SunoService
    from .tools import ToolService
    from .uploads import UploadService
    from .views import Views

    jobs = open_job_store(config.storage)
    objects = open_object_store(config.storage)
    authenticator = _authenticator(config, jobs)
    views = Views(config, authenticator)
    registry = LoraRegistry(objects)
    uploads = UploadService(config, objects)
    quotas = Quotas(config, jobs)
    queue = QueueEstimator(config, jobs, graph)
    songs = SongService(config, jobs, objects, registry, graph, views, queue, quotas, uploads)
    tools = ToolService(config, jobs, graph)
    suno = SunoService(
        jobs,
        songs,
        tools,
        quotas,
        views,
        config.models.served_models,
        config.api.suno_wait_audio_s,
    )
    media = MediaService(jobs, objects, songs, LazyDelivery(config, jobs, graph), views)
    return ApiServices(
        config=config,
        jobs=jobs,
        objects=objects,
        auth=authenticator,
        views=views,
        songs=songs,
        media=media,
        stems=StemsService(config, jobs, songs, media, graph, views),
        loras=LoraService(config, registry),
        quotas=quotas,
        tools=tools,
        suno=suno,
        uploads=uploads,
        replicate_webhooks=ReplicateWebhookService(config, objects),
    )
