"""Records as clients see them: songs, variations, stems and events, with links to their files.

Links are absolute when `api.public_base_url` is set, and media links are signed when the API
takes keys (see serve.media_urls). Stored records were written by whatever version of songserve
was running then; they are read leniently (`SongRequestOut`), so a schema change never turns an
old song into a 500.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from serve.schemas import (
    QueueOut,
    SongOut,
    SongRequestOut,
    StemOut,
    StemsOut,
    TagsOut,
    VariationOut,
    WebhookOut,
)
from serve.store import EventRecord, JobRecord, StemsRecord, VariationRecord, WebhookRecord

if TYPE_CHECKING:
    from serve.config import AppConfig
    from serve.http.auth import Authenticator


def iso(timestamp: float) -> str:
    return (
        datetime.fromtimestamp(timestamp, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def tags_out(tags: dict[str, Any]) -> TagsOut:
    """The HTTP shape of StyleTags (`family` is internal to the song models), with the forms
    each song model takes."""
    from pipeline.semantic_tags import ace_step_metadata, yue_genre_tags
    from pipeline.tags import StyleTags

    style = StyleTags.from_dict(tags)
    yue = yue_genre_tags(style)
    models = {
        "ace_step": {"caption": style.caption, **ace_step_metadata(style)},
        "yue": {"tags": yue, "prompt": " ".join(yue)},
    }
    fields = {k: v for k, v in tags.items() if k != "family"}
    return TagsOut.model_validate({**fields, "models": models})


class Views:
    def __init__(self, config: AppConfig, auth: Authenticator) -> None:
        """`auth.signer` signs media links (None: the API takes no keys, links are plain)."""
        self._config = config
        self._auth = auth

    def url(self, path: str) -> str:
        base = self._config.api.public_base_url
        return f"{base.rstrip('/')}{path}" if base else path

    def media_url(self, path: str, owner: str) -> str:
        """A link to a file of `owner`'s, signed when the API needs keys."""
        url = self.url(path)
        query = self.signed_query(path, owner)
        return url if query is None else f"{url}?{query}"

    def signed_query(self, path: str, owner: str) -> str | None:
        signer = self._auth.signer
        return None if signer is None else signer.query(path, owner)

    def variation(self, job_id: str, owner: str, variation: VariationRecord) -> VariationOut:
        prefix = f"/v1/songs/{job_id}/variations/{variation.index}"
        # A lazy format is linked once the master it is made from is kept.
        audio: dict[str, str] = {
            fmt: self.media_url(f"{prefix}/audio.{fmt}", owner)
            for fmt in self._config.postprocess.formats
            if fmt in variation.objects or "master" in variation.objects
        }
        has = variation.objects.__contains__
        return VariationOut(
            index=variation.index,
            status=variation.status,  # type: ignore[arg-type]
            model=variation.model,
            model_version=variation.model_version,
            seed=variation.seed,
            duration_s=variation.duration_s,
            sample_rate=variation.sample_rate,
            loudness_lufs=variation.loudness_lufs,
            true_peak_dbtp=variation.true_peak_dbtp,
            audio=audio,
            peaks=self.media_url(f"{prefix}/peaks", owner) if has("peaks") else None,
            hls=self.media_url(f"{prefix}/hls/index.m3u8", owner) if has("hls") else None,
            provenance=variation.render.get("provenance"),
            model_details=variation.render.get("model_details") or None,
            error=variation.error,
        )

    def song(
        self, job: JobRecord, queue: QueueOut | None = None, webhook: WebhookRecord | None = None
    ) -> SongOut:
        return SongOut(
            id=job.id,
            status=job.status,  # type: ignore[arg-type]
            stage=job.stage,
            progress=round(job.progress, 4),
            created_at=iso(job.created_at),
            updated_at=iso(job.updated_at),
            request=SongRequestOut.model_validate(job.request),
            lyrics=job.lyrics,
            lyrics_source=job.lyrics_source,  # type: ignore[arg-type]
            tags=tags_out(job.tags) if job.tags is not None else None,
            error=job.error,  # type: ignore[arg-type]
            variations=[self.variation(job.id, job.owner, v) for v in job.variations],
            queue=queue,
            webhook=None if webhook is None else self.webhook(webhook),
        )

    @staticmethod
    def webhook(record: WebhookRecord) -> WebhookOut:
        return WebhookOut(
            url=record.url,
            status=record.status,  # type: ignore[arg-type]
            attempts=record.attempts,
            last_error=record.last_error,
            last_status_code=record.last_status_code,
            delivered_at=iso(record.delivered_at) if record.delivered_at else None,
        )

    def stem_urls(
        self, job_id: str, owner: str, index: int, name: str, formats: Iterable[str]
    ) -> dict[str, str]:
        prefix = f"/v1/songs/{job_id}/variations/{index}/stems"
        return {fmt: self.media_url(f"{prefix}/{name}.{fmt}", owner) for fmt in formats}

    def stems(self, record: StemsRecord, owner: str) -> StemsOut:
        loudness = record.info.get("loudness_lufs", {})
        return StemsOut(
            song_id=record.job_id,
            variation=record.index,
            status=record.status,  # type: ignore[arg-type]
            progress=round(record.progress, 4),
            method=record.info.get("method"),
            stems=[
                StemOut(
                    name=name,
                    audio=self.stem_urls(record.job_id, owner, record.index, name, files),
                    loudness_lufs=loudness.get(name),
                )
                for name, files in record.objects.items()
            ],
            provenance=record.info.get("provenance"),
            error=record.error,
            events=self.url(f"/v1/songs/{record.job_id}/events"),
        )

    def event(self, job_id: str, owner: str, event: EventRecord) -> dict[str, Any]:
        """An event's data as clients see it: object keys become URLs."""
        data: dict[str, Any] = event.data
        if event.type == "variation":
            variation = VariationRecord.from_dict(data)
            return self.variation(job_id, owner, variation).model_dump(mode="json")
        if event.type == "stems" and "stems" in data:
            index = data["variation"]
            return {
                **data,
                "stems": [
                    {"name": name, "audio": self.stem_urls(job_id, owner, index, name, formats)}
                    for name, formats in data["stems"].items()
                ],
            }
        return data
