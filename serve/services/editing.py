"""Song edits (extend, repaint, cover) and reference audio, checked and resolved when a song is
accepted: every rule is a 422 naming its field before any work, and what the render needs
(the source's object key and length, the window) is fixed in the stored request, so a retry or
another conductor renders exactly the same edit.

Sources are the caller's own: a succeeded variation of one of their songs, or one of their
uploads. What a model can do is read from its declared capabilities (`pipeline.song_contracts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.song_contracts import COVER, EXTEND, REPAINT, TEXT2MUSIC, capabilities_of
from serve.http.errors import ApiError
from serve.store import VARIATION_AUDIO_PREFERENCE

if TYPE_CHECKING:
    from serve.config import AppConfig
    from serve.schemas import AudioSource, SongRequest
    from serve.services.uploads import UploadSource
    from serve.store import JobStore

MAX_SONG_S = 600.0
MIN_WINDOW_S = 1.0
# The file named as the C2PA ingredient of an edit: a delivered, signed one.
_INGREDIENT_OBJECTS = ("m4a", "flac", "wav", "mp3")


@dataclass(frozen=True)
class ResolvedAudio:
    """A source or reference as the render and the signer need it."""

    ref: dict[str, Any]  # what the caller named: {"song", "variation"} or {"upload"}
    key: str  # the object the decoder reads the audio from
    duration_s: float
    ingredient_key: str | None  # a signed file of it, for the C2PA manifest (None: none kept)
    title: str


class UploadLookup(Protocol):
    """What editing needs of the upload service (serve.services.uploads)."""

    async def source(self, owner: str, upload_id: str, field: str) -> UploadSource: ...


class EditResolver:
    def __init__(self, config: AppConfig, jobs: JobStore, uploads: UploadLookup | None) -> None:
        self._config = config
        self._jobs = jobs
        self._uploads = uploads

    def models_for(self, body: SongRequest) -> list[str]:
        """The served models that can do what `body` asks (its task, reference audio)."""
        return self._able(body.task, body.reference_audio is not None)

    async def resolve(self, body: SongRequest, owner: str) -> tuple[SongRequest, dict[str, Any]]:
        """The request with its duration fixed by the edit, and what to store beside it (the
        resolved `edit` and `reference`); ApiError 422 naming the field otherwise."""
        self._check_model(body)
        stored: dict[str, Any] = {}
        if body.reference_audio is not None:
            reference = await self._audio(body.reference_audio, owner, "reference_audio")
            stored["reference"] = {"key": reference.key}
            stored["reference_audio"] = reference.ref  # as resolved: the variation made explicit
        if body.task == TEXT2MUSIC:
            for name in ("source", "extend_s", "window", "cover_strength"):
                if getattr(body, name) is not None:
                    raise _invalid(f"{name} applies only to edits: set task too", name)
            return body, stored
        if body.source is None:
            raise _invalid(
                f"task {body.task} needs a source: {{song, variation}} or {{upload}}", "source"
            )
        if "duration_s" in body.model_fields_set:
            raise _invalid(
                "an edit's length comes from its source (and extend_s); drop duration_s",
                "duration_s",
            )
        source = await self._audio(body.source, owner, "source")
        stored["source"] = source.ref  # the song's parent, as resolved
        duration = source.duration_s
        edit: dict[str, Any] = {
            "task": body.task,
            "source_key": source.key,
            "source_duration_s": round(source.duration_s, 6),
            "source": source.ref,
            "source_title": source.title,
            "ingredient_key": source.ingredient_key,
        }
        if body.task == EXTEND:
            if body.extend_s is None:
                raise _invalid("extend needs extend_s: the seconds of new music", "extend_s")
            duration = source.duration_s + body.extend_s
            if duration > MAX_SONG_S:
                raise _invalid(
                    f"the source is {source.duration_s:.1f} s: extend_s may add at most "
                    f"{MAX_SONG_S - source.duration_s:.1f} s (songs are at most {MAX_SONG_S:g} s)",
                    "extend_s",
                )
            edit |= {"start_s": edit["source_duration_s"], "end_s": round(duration, 6)}
        elif body.task == REPAINT:
            window = body.window
            if window is None:
                raise _invalid("repaint needs window: {start_s, end_s}", "window")
            if (
                window.end_s > source.duration_s + 1e-6
                or window.end_s - window.start_s < MIN_WINDOW_S
            ):
                raise _invalid(
                    f"window must lie within the source's {source.duration_s:.2f} s and span at "
                    f"least {MIN_WINDOW_S:g} s, start_s < end_s",
                    "window",
                )
            edit |= {"start_s": window.start_s, "end_s": window.end_s}
        elif body.task == COVER:
            edit["strength"] = 1.0 if body.cover_strength is None else body.cover_strength
        for name, applies in (("extend_s", EXTEND), ("window", REPAINT), ("cover_strength", COVER)):
            if getattr(body, name) is not None and body.task != applies:
                raise _invalid(f"{name} applies only to task {applies}", name)
        stored["edit"] = edit
        return body.model_copy(update={"duration_s": round(duration, 3)}), stored

    def _check_model(self, body: SongRequest) -> None:
        wants_reference = body.reference_audio is not None
        if body.model != "auto":
            capabilities = capabilities_of(body.model)
            if not self._config.models.serves(body.model, body.task):
                able = self._able(body.task, False)
                raise _invalid(
                    f"model {body.model!r} cannot {body.task}"
                    + (f"; use one of: {', '.join(able)}" if able else ""),
                    "task",
                )
            if wants_reference and not capabilities.reference_audio:
                able = self._able(body.task, True)
                raise _invalid(
                    f"model {body.model!r} takes no reference audio"
                    + (f"; use one of: {', '.join(able)}" if able else ""),
                    "reference_audio",
                )
        elif not self.models_for(body):
            what = f"can {body.task}" + (" with reference audio" if wants_reference else "")
            field = "reference_audio" if self._able(body.task, False) else "task"
            raise _invalid(f"no model this server offers {what}", field)

    def _able(self, task: str, reference: bool) -> list[str]:
        """Served models with a pool that serves `task` (and that take a reference, if asked)."""
        models = self._config.models
        return [
            m
            for m in models.served_models
            if models.serves(m, task) and (capabilities_of(m).reference_audio or not reference)
        ]

    async def _audio(self, spec: AudioSource, owner: str, field: str) -> ResolvedAudio:
        if (spec.upload is None) == (spec.song is None):
            raise _invalid("name either {song, variation} or {upload}", field)
        if spec.upload is not None:
            if spec.variation is not None:
                raise _invalid("variation applies to a song, not an upload", f"{field}.variation")
            if self._uploads is None:
                raise _invalid("this server takes no uploads", f"{field}.upload")
            upload = await self._uploads.source(owner, spec.upload, f"{field}.upload")
            return ResolvedAudio(
                ref={"upload": upload.id},
                key=upload.key,
                duration_s=float(upload.duration_s),
                ingredient_key=upload.original_key,  # the file as sent, its own manifest intact
                title=upload.filename or f"upload {upload.id}",
            )
        assert spec.song is not None
        index = 0 if spec.variation is None else spec.variation
        job = await self._jobs.get_job(spec.song)
        if job is None or job.owner != owner:
            raise _invalid(f"no song with id {spec.song!r}", f"{field}.song")
        variation = next((v for v in job.variations if v.index == index), None)
        if variation is None or variation.status != "succeeded" or variation.duration_s is None:
            raise _invalid(
                f"variation {index} of song {spec.song} has not succeeded; edit a finished one",
                f"{field}.variation",
            )
        objects = variation.objects
        # The model's own render, before mastering and watermarking: an edit is mastered and
        # marked once, as a whole, and keeps the source's rendered samples outside its window.
        raw_key = (variation.render.get("raw") or {}).get("render_key")
        # Without a raw render: the delivered audio (serve.store.VARIATION_AUDIO_PREFERENCE).
        name = next((n for n in VARIATION_AUDIO_PREFERENCE if n in objects), None)
        if raw_key is None and name is None:
            raise _invalid(f"song {spec.song} keeps no audio to edit", f"{field}.song")
        ingredient = next((n for n in _INGREDIENT_OBJECTS if n in objects), None)
        title = job.request.get("title") or f"song {job.id} variation {index}"
        return ResolvedAudio(
            ref={"song": job.id, "variation": index},
            key=raw_key or objects[str(name)],
            duration_s=float(variation.duration_s),
            ingredient_key=objects[ingredient] if ingredient else None,
            title=str(title),
        )


def _invalid(message: str, field: str) -> ApiError:
    return ApiError(422, "invalid_request", message, field)
