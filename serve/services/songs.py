"""Songs: accept a request (checked against this server: models, LoRAs; admitted under the queue
limits and the caller's quotas in the transaction that stores it), list and read them. Accepting
persists the job and returns at once; the conductor does the rest."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from pipeline.song_contracts import capabilities_of
from serve.http.errors import ApiError
from serve.schemas import QueueOut, SongAccepted, SongLinks, SongList, SongOut, SongRequest
from serve.services.editing import EditResolver, UploadLookup
from serve.store.tenancy import AdmissionRefused
from serve.webhooks import CallbackRefused, check_callback_addresses, check_callback_url
from serve.workflow.retention import delete_song

if TYPE_CHECKING:
    from serve.config import AppConfig
    from serve.http.auth import Caller
    from serve.loras import LoraRegistry
    from serve.queue_estimate import QueueEstimator
    from serve.store import JobRecord, JobStore, ObjectStore

    from .graph import Graph
    from .quotas import Quotas
    from .views import Views


class SongService:
    def __init__(
        self,
        config: AppConfig,
        jobs: JobStore,
        objects: ObjectStore,
        loras: LoraRegistry,
        graph: Graph,
        views: Views,
        queue: QueueEstimator,
        quotas: Quotas,
        uploads: UploadLookup | None = None,
    ) -> None:
        self._quotas = quotas
        self._config = config
        self._jobs = jobs
        self._objects = objects
        self._loras = loras
        self._graph = graph
        self._views = views
        self._queue = queue
        self._models = ["auto", *config.models.served_models]
        # Edits and reference audio: sources are the caller's songs and uploads.
        self.editing = EditResolver(config, jobs, uploads)

    async def owned_job(self, song_id: str, owner: str) -> JobRecord:
        job = await self._jobs.get_job(song_id)
        if job is None or job.owner != owner:  # someone else's song is as good as absent
            raise ApiError(404, "not_found", f"no song with id {song_id!r}", "id")
        return job

    async def create(
        self, body: SongRequest, caller: Caller, idempotency_key: str | None
    ) -> SongAccepted:
        body = await self._checked(body)
        body, resolved = await self.editing.resolve(body, caller.owner)
        seed = body.seed if body.seed is not None else secrets.randbelow(2**31 - 4)
        stored_request = body.model_dump(mode="json") | {"seed": seed} | resolved
        if body.lora is not None:
            # Which LoRA the id names for this caller is fixed now: renders load exactly it.
            stored_request["lora"]["ref"] = await self._lora_ref(
                body.lora.id, body.model, caller.owner
            )
        try:
            job, created = await self._jobs.create_job(
                owner=caller.owner,
                request=stored_request,
                seed=seed,
                variations=body.variations,
                idempotency_key=idempotency_key,
                audio_s=body.duration_s * body.variations,
                admission=self._quotas.admission(caller),
                callback_url=body.callback_url,
            )
        except AdmissionRefused as refused:
            raise self._quotas.refusal(refused) from None
        # A retry without a seed matches the job whatever seed the server chose for it.
        ignore_seed = {"seed": None} if body.seed is None else {}
        if not created and job.request | ignore_seed != stored_request | ignore_seed:
            raise ApiError(
                409,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request; use a new key",
                "Idempotency-Key",
            )
        if created:
            await self._graph.wake_conductor()
        return SongAccepted(
            id=job.id,
            status=job.status,  # type: ignore[arg-type]
            links=SongLinks(
                self=self._views.url(f"/v1/songs/{job.id}"),
                events=self._views.url(f"/v1/songs/{job.id}/events"),
            ),
        )

    async def list(
        self, owner: str, limit: int, cursor: str | None, search: str | None = None
    ) -> SongList:
        try:
            jobs, next_cursor = await self._jobs.list_jobs(
                owner, limit=limit, cursor=cursor, search=search
            )
        except ValueError as error:
            raise ApiError(422, "invalid_request", str(error), "cursor") from error
        return SongList(songs=[self._views.song(job) for job in jobs], next_cursor=next_cursor)

    async def get(self, song_id: str, owner: str) -> SongOut:
        job = await self.owned_job(song_id, owner)
        queue = await self._queue.queue_out(job.id, job.request) if job.status == "queued" else None
        webhook = await self._jobs.get_webhook(job.id) if job.request.get("callback_url") else None
        return self._views.song(job, queue, webhook)

    async def delete(self, song_id: str, owner: str) -> None:
        """Delete a finished song: every file of it, then its records. 409 while it (or a stems
        job of it) is still queued or running."""
        job = await self.owned_job(song_id, owner)
        stems_active = any(stems.is_active for stems in await self._jobs.list_stems(job.id))
        if not job.is_terminal or stems_active:
            what = "its stems are" if job.is_terminal else f"it is {job.status}"
            raise ApiError(
                409,
                "not_finished",
                f"song {job.id} cannot be deleted while {what} being made; delete it once its "
                "event stream has ended",
                "id",
            )
        await delete_song(self._jobs, self._objects, job.id)

    async def cancel(self, song_id: str, owner: str) -> SongOut:
        """Stop a queued or running song: it ends `canceled` at once (its quota and queue place
        are free now), and whichever conductor drives it stops rendering within seconds. Again on
        a canceled song is a no-op; a song that already finished is a 409."""
        job = await self.owned_job(song_id, owner)
        canceled = await self._jobs.cancel_job(job.id)
        if canceled is None:  # deleted in between
            raise ApiError(404, "not_found", f"no song with id {song_id!r}", "id")
        if canceled.status != "canceled":
            raise ApiError(
                409,
                "already_finished",
                f"song {job.id} already {canceled.status}; there is nothing to cancel "
                "(DELETE /v1/songs/{id} removes it)",
                "id",
            )
        if not job.is_terminal:
            # Counted here, where every cancel happens (a queued song has no conductor to).
            from serve.metrics import song_metrics

            song_metrics().finished.inc(tags={"outcome": "canceled", "code": "canceled"})
        if job.status == "running":
            # The replica driving it stops at once; any other notices at its next lease renewal.
            await self._graph.stop_job(job.id)
        return self._views.song(canceled)

    async def _check_callback(self, url: str) -> None:
        """A callback URL this server may call (serve/webhooks.py), checked before the song is
        accepted: allowed host, and no address inside the network unless configured."""
        config = self._config.webhooks
        try:
            host, port = check_callback_url(url, config)
            await check_callback_addresses(host, port, config)
        except CallbackRefused as refused:
            raise ApiError(422, "invalid_callback_url", str(refused), "callback_url") from None

    async def queue_out(self, job_id: str, request: dict[str, Any]) -> QueueOut | None:
        """A queued song's place in line and expected start; None once it left the queue."""
        return await self._queue.queue_out(job_id, request)

    async def _checked(self, body: SongRequest) -> SongRequest:
        """Rules pydantic cannot name a field for, and what depends on this server (models;
        LoRAs are resolved by `_lora_ref`); returns the cleaned request."""
        texts = ("prompt", "lyrics", "style", "negative_style", "title")
        body = body.model_copy(update={name: getattr(body, name) or None for name in texts})
        if not (body.prompt or body.lyrics or body.style):
            raise ApiError(
                422, "invalid_request", "give at least one of prompt, lyrics or style", "prompt"
            )
        if body.lyrics and body.instrumental:
            raise ApiError(
                422,
                "invalid_request",
                "lyrics cannot be combined with instrumental: true; drop one of them",
                "lyrics",
            )
        if body.callback_url is not None:
            await self._check_callback(body.callback_url)
        if body.model not in self._models:
            raise ApiError(
                422,
                "invalid_request",
                f"unknown model {body.model!r}; this server offers: {', '.join(self._models)}",
                "model",
            )
        return body

    async def _lora_ref(self, lora_id: str, model: str, owner: str) -> str:
        """The ref of the LoRA `lora_id` names for `owner` (their own, else a shared one); 422
        unless there is one and `model` takes LoRAs. Checked here, before any decoding."""
        lora_models = [m for m in self._config.models.served_models if capabilities_of(m).loras]
        if (model != "auto" and not capabilities_of(model).loras) or not lora_models:
            raise ApiError(
                422,
                "invalid_request",
                f"model {model!r} does not take LoRAs"
                + (f"; use one of: {', '.join(lora_models)}" if lora_models else ""),
                "lora.id",
            )
        info = await self._loras.resolve(owner, lora_id)
        if info is None:
            # Only what this caller may use: another owner's LoRAs are as good as absent.
            known = [lora.id for lora in await self._loras.usable_by(owner)]
            raise ApiError(
                422,
                "invalid_request",
                f"unknown LoRA {lora_id!r}; yours and shared: {', '.join(known) or 'none'} "
                "(upload with POST /v1/loras)",
                "lora.id",
            )
        return str(info.ref)
