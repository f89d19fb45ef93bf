"""Which stored file a media request names: a variation's audio in a format (a lazy format is made
on its first request), a file of its HLS rendition, its peaks, or a stem. The bytes themselves are
served by `serve.http.media` (Range, HEAD, presigned redirects)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from serve.http.errors import ApiError
from serve.media_urls import sign_playlist

if TYPE_CHECKING:
    from serve.lazy_delivery import LazyDelivery
    from serve.store import JobRecord, JobStore, ObjectStore, StemsRecord, VariationRecord

    from .songs import SongService
    from .views import Views

# A bare file name (no path), with an extension of pipeline.hls's renditions.
HLS_FILE = re.compile(r"[A-Za-z0-9_-]{1,64}\.(m3u8|aac)")


def finished_variation(job: JobRecord, index: int, not_ready_status: int) -> VariationRecord:
    """Variation `index` of `job`: 404 when there is none, `not_ready_status` until it has
    succeeded."""
    variation = next((v for v in job.variations if v.index == index), None)
    if variation is None:
        raise ApiError(
            404,
            "not_found",
            f"song {job.id} has variations 0-{len(job.variations) - 1}",
            "index",
        )
    if variation.status != "succeeded":
        raise ApiError(
            not_ready_status,
            "not_ready",
            f"variation {index} is {variation.status}; wait for its `variation` event",
            "index",
        )
    return variation


class MediaService:
    def __init__(
        self,
        jobs: JobStore,
        objects: ObjectStore,
        songs: SongService,
        lazy: LazyDelivery,
        views: Views,
    ) -> None:
        self._jobs = jobs
        self.objects = objects
        self._songs = songs
        self._lazy = lazy
        self._views = views

    async def audio_key(self, song_id: str, index: int, fmt: str, owner: str) -> tuple[str, str]:
        """(object key, download file name) of a variation's audio in `fmt`."""
        job = await self._songs.owned_job(song_id, owner)
        variation = finished_variation(job, index, not_ready_status=404)
        key = variation.objects.get(fmt)
        if key is None:
            key = await self._lazy.key(job, variation, fmt)
        return key, f"{job.id}-v{index}.{fmt}"

    async def hls_file(self, song_id: str, index: int, name: str, owner: str) -> tuple[bytes, bool]:
        """A file of the variation's HLS rendition, and whether it is the (signed, short-lived)
        playlist. Segment URIs in the playlist are relative, so they resolve to this route."""
        if not HLS_FILE.fullmatch(name):
            raise ApiError(404, "not_found", f"{name!r} is not part of an HLS rendition", "name")
        job = await self._songs.owned_job(song_id, owner)
        playlist_key = self._variation_object(job, index, "hls")
        try:
            data = await self.objects.get(f"{playlist_key.rsplit('/', 1)[0]}/{name}")
        except KeyError:
            raise ApiError(
                404, "not_found", f"variation {index} has no HLS file {name}", "name"
            ) from None
        if not name.endswith(".m3u8"):
            return data, False
        # Players drop the playlist's query when they resolve its segment URIs: each URI gets
        # the rendition's signature written in, and the playlist lives as long as it.
        query = self._views.signed_query(f"/v1/songs/{job.id}/variations/{index}/hls/{name}", owner)
        return (data if query is None else sign_playlist(data, query)), query is not None

    async def peaks(self, song_id: str, index: int, owner: str) -> bytes:
        job = await self._songs.owned_job(song_id, owner)
        return await self.objects.get(self._variation_object(job, index, "peaks"))

    async def stem_key(
        self, song_id: str, index: int, name: str, fmt: str, owner: str, record: StemsRecord
    ) -> tuple[str, str]:
        """(object key, download file name) of one stem of a finished stems job."""
        if record.status != "succeeded":
            raise ApiError(
                404,
                "not_ready",
                f"the stems of variation {index} are {record.status}; wait for their `stems` event",
                "index",
            )
        key = record.objects.get(name, {}).get(fmt)
        if key is None:
            raise ApiError(
                404,
                "not_found",
                f"no {fmt} file of stem {name!r}; stems: {', '.join(record.objects)}",
                "name",
            )
        return key, f"{song_id}-v{index}-{name}.{fmt}"

    @staticmethod
    def _variation_object(job: JobRecord, index: int, name: str) -> str:
        variation = finished_variation(job, index, not_ready_status=404)
        if name not in variation.objects:
            raise ApiError(
                404,
                "not_found",
                f"this server does not produce {name} files (postprocess.formats)",
                "fmt",
            )
        return variation.objects[name]
