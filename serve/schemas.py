"""HTTP API v1 request and response models — the contract clients code against.

Only data shapes live here; the routes are in `serve.http.routes`. Unknown request fields are
rejected so a typo (`durationS`) is a 422 naming it rather than a silently ignored setting.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pipeline.languages import ISO_639_1

AudioFormat = Literal["m4a", "mp3", "wav", "flac"]
MAX_VARIATIONS = 4
SongStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]


class _Request(BaseModel):
    # Strict: `"duration_s": "30"`, `variations: true` or `instrumental: 0` are mistakes to name,
    # not values to guess at (a JSON integer still fills a number field).
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)


def _printable(value: str) -> str:
    """Text fields carry words: control characters (bar line breaks and tabs) are refused, and
    so is text with nothing printable in it. An empty string stays empty (absent)."""
    if any(unicodedata.category(c) == "Cc" and c not in "\n\r\t" for c in value):
        raise ValueError("must not contain control characters (such as NUL)")
    if value and not any(c.isprintable() and not c.isspace() for c in value):
        raise ValueError("must contain printable text")
    return value


def _known_language(code: str) -> str:
    if code not in ISO_639_1:
        raise ValueError(f"{code!r} is not an ISO 639-1 language code (e.g. en, es, ja, zh)")
    return code


Printable = Annotated[str, AfterValidator(_printable)]
Language = Annotated[
    str,
    Field(pattern=r"^[a-z]{2}$", description="ISO 639-1 language code."),
    AfterValidator(_known_language),
]


class LoraSpec(_Request):
    id: str = Field(..., min_length=1, max_length=128, description="A registered LoRA id.")
    scale: float = Field(1.0, ge=0, le=2, description="Adapter strength; 0 is the base model.")


class AudioSource(_Request):
    """Audio a request starts from: a variation of one of your songs, or one of your uploads."""

    song: str | None = Field(None, min_length=1, max_length=64, description="A song id.")
    variation: int | None = Field(None, ge=0, lt=MAX_VARIATIONS, description="Its variation.")
    upload: str | None = Field(
        None, min_length=1, max_length=64, description="An upload id (POST /v1/uploads)."
    )


class EditWindow(_Request):
    start_s: float = Field(..., ge=0, le=600, description="Where the span starts, in seconds.")
    end_s: float = Field(..., gt=0, le=600, description="Where it ends (exclusive), in seconds.")


EditTask = Literal["text2music", "extend", "repaint", "cover"]


class SongRequest(_Request):
    """`POST /v1/songs`. At least one of prompt, lyrics, style. An edit (`task` extend, repaint
    or cover) starts from `source` and makes a new song that records it as its parent."""

    prompt: Printable | None = Field(
        None, max_length=500, description="Description mode: the lyrics are written for you."
    )
    lyrics: Printable | None = Field(
        None, max_length=5000, description="Custom mode: your lyrics with [verse]/[chorus] tags."
    )
    style: Printable | None = Field(None, max_length=1000, description="Free-text style.")
    negative_style: Printable | None = Field(
        None,
        max_length=1000,
        description="Styles to steer away from. Recorded with the song; no model served today "
        "takes a negative prompt, so none acts on it yet.",
    )
    title: Printable | None = Field(None, max_length=200, description="The song's title.")
    instrumental: bool = Field(False, description="No vocals; not combinable with lyrics.")
    duration_s: float = Field(30.0, ge=5, le=600, description="Song length in seconds.")
    variations: int = Field(2, ge=1, le=MAX_VARIATIONS, description="Takes generated in parallel.")
    model: str = Field("auto", min_length=1, max_length=64, description="'auto' or a model name.")
    lora: LoraSpec | None = Field(None, description="Adapter hot-swapped for this request.")
    seed: int | None = Field(
        None, ge=0, le=2**31 - 1, description="Variation k uses seed + k; chosen when null."
    )
    language: Language = Field("en", description="ISO 639-1 vocal language.")
    loudness_lufs: float = Field(-14.0, ge=-30, le=-8, description="Integrated loudness target.")
    callback_url: str | None = Field(
        None,
        min_length=1,
        max_length=2048,
        description="Where to POST `song.succeeded` or `song.failed` when the song ends, signed "
        "as Standard Webhooks specifies (README: Webhooks). Its host must be in the server's "
        "webhooks.allowed_hosts.",
    )
    task: EditTask = Field(
        "text2music",
        description="text2music: a new song. extend: the source, continued by `extend_s`. "
        "repaint: the source with `window` made anew (new lyrics or style for that span). "
        "cover: the source re-rendered in `style`, keeping `cover_strength` of it.",
    )
    source: AudioSource | None = Field(None, description="What an edit starts from.")
    extend_s: float | None = Field(
        None, ge=1, le=595, description="extend: seconds of new music after the source."
    )
    window: EditWindow | None = Field(None, description="repaint: the span to make anew.")
    cover_strength: float | None = Field(
        None, ge=0, le=1, description="cover: how much of the source's structure to keep (1.0)."
    )
    reference_audio: AudioSource | None = Field(
        None, description="A timbre reference, for models that take one (any task)."
    )


class StoredLora(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    scale: float = 1.0
    ref: str | None = Field(
        None,
        exclude=True,  # it names the owner: stored, never sent out
        description="The LoRA `id` resolved to when the song was accepted (`<scope>/<id>`, see "
        "serve.loras); None for songs accepted before LoRAs had scopes.",
    )


class SongRequestOut(BaseModel):
    """The request a song was made from, as it was stored: read leniently (unknown fields are
    dropped, missing ones take today's defaults), so songs stored by an older version, under
    other rules, still read."""

    model_config = ConfigDict(extra="ignore")
    prompt: str | None = None
    lyrics: str | None = None
    style: str | None = None
    negative_style: str | None = None
    title: str | None = None
    instrumental: bool = False
    duration_s: float = 30.0
    variations: int = 2
    model: str = "auto"
    lora: StoredLora | None = None
    seed: int | None = None
    language: str = "en"
    loudness_lufs: float = -14.0
    callback_url: str | None = None
    task: str = "text2music"
    source: dict[str, Any] | None = None
    extend_s: float | None = None
    window: dict[str, float] | None = None
    cover_strength: float | None = None
    reference_audio: dict[str, Any] | None = None


class SongLinks(BaseModel):
    self: str
    events: str


class SongAccepted(BaseModel):
    id: str
    status: SongStatus
    links: SongLinks


class VariationOut(BaseModel):
    index: int
    status: Literal["queued", "running", "succeeded", "failed", "canceled"]
    model: str | None
    model_version: str | None
    seed: int | None
    duration_s: float | None
    sample_rate: int | None
    loudness_lufs: float | None
    true_peak_dbtp: float | None
    audio: dict[str, str] = Field(
        default_factory=dict,
        description="Format → URL. Formats other than postprocess.eager_formats are encoded on "
        "their first request (which may take seconds, or answer 503 with Retry-After), then kept.",
    )
    peaks: str | None = None
    hls: str | None = Field(None, description="HLS playlist URL (AAC segments).")
    provenance: dict[str, Any] | None = Field(
        None,
        description="What every delivered file carries: `watermark` (embedded, with the model, "
        "or 'not configured') and `c2pa` (signed, with the signer).",
    )
    model_details: dict[str, Any] | None = Field(
        None,
        description="What the model reported about this render, e.g. for a model on Replicate "
        "`{provider, prediction_id, model, version, predict_time_s}`.",
    )
    error: dict[str, str | None] | None = None


class StemOut(BaseModel):
    name: str = Field(..., description="drums, bass, other or vocals.")
    audio: dict[str, str] = Field(default_factory=dict, description="Format → URL.")
    loudness_lufs: float | None = None


class StemsOut(BaseModel):
    """The stems of one variation. They sum to the variation's audio: exactly for sketch songs
    (before any watermark, which each stem carries on its own), within the separator's
    rounding for others."""

    song_id: str
    variation: int
    status: Literal["queued", "running", "succeeded", "failed"]
    progress: float = Field(..., description="0–1; live updates come as `stems_progress` events.")
    method: str | None = Field(
        None, description="`exact` (the model's own per-part renders) or the separator's name."
    )
    stems: list[StemOut] = Field(default_factory=list)
    provenance: dict[str, Any] | None = Field(
        None, description="Watermark and C2PA status, as for a variation."
    )
    error: dict[str, str | None] | None = None
    events: str = Field(..., description="The song's SSE stream, where stems report progress.")


class ApiErrorBody(BaseModel):
    code: str
    message: str


class LyricsSourceOut(BaseModel):
    engine: str = Field(..., description="Who wrote the lyrics: user, template or the LLM engine.")
    model: str | None
    fallback_reason: str | None = Field(
        None, description="Why the configured LLM's lyrics were not used (template took over)."
    )
    repairs: list[str] = Field(
        default_factory=list, description="What was fixed in the LLM's answer."
    )


class WebhookOut(BaseModel):
    """Where a song's webhook stands (`callback_url` given)."""

    url: str
    status: Literal["pending", "delivered", "failed", "skipped"] = Field(
        ...,
        description="`pending` until the song ends and the receiver answers 2xx (`delivered`); "
        "`failed` once every attempt was refused; `skipped` for a canceled song.",
    )
    attempts: int
    last_error: str | None
    last_status_code: int | None
    delivered_at: str | None


class SongOut(BaseModel):
    id: str
    status: SongStatus
    stage: str | None
    progress: float
    created_at: str
    updated_at: str
    request: SongRequestOut
    lyrics: str | None
    lyrics_source: LyricsSourceOut | None
    tags: TagsOut | None
    error: ApiErrorBody | None
    variations: list[VariationOut]
    queue: QueueOut | None = Field(
        None,
        description="While the song is queued: its place in line and expected start; "
        "absent otherwise.",
        exclude_if=lambda queue: queue is None,
    )
    webhook: WebhookOut | None = Field(
        None,
        description="The delivery of its webhook, when the request gave a callback_url "
        "(GET /v1/songs/{id} only).",
        exclude_if=lambda webhook: webhook is None,
    )


class QueueOut(BaseModel):
    """A queued song's place in line (GET /v1/songs/{id}, and the `queue` SSE event)."""

    position: int = Field(..., description="Songs ahead of it in line (0: it starts next).")
    expected_start_s: float | None = Field(
        ...,
        description="Seconds until it is expected to start: the audio still to render before it "
        "over the measured render speed of its model's pools (null: no pool to render it).",
    )


class SongList(BaseModel):
    songs: list[SongOut]
    next_cursor: str | None


class LyricsRequest(_Request):
    prompt: Printable = Field(
        ..., min_length=1, max_length=500, description="What the song is about."
    )
    duration_s: float = Field(30.0, ge=5, le=600, description="Song length the lyrics must fit.")
    style: Printable | None = Field(None, max_length=1000, description="Optional style hint.")
    language: Language = Field("en", description="ISO 639-1 language.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Varies the wording.")


class SectionOut(BaseModel):
    tag: str
    lines: list[str]


class LyricsOut(BaseModel):
    lyrics: str
    sections: list[SectionOut]
    source: LyricsSourceOut


class TagsRequest(_Request):
    text: Printable = Field(..., min_length=1, max_length=1000, description="Free-text style.")
    language: Language = Field("en", description="ISO 639-1 vocal language.")
    instrumental: bool = Field(False, description="No vocals.")


class AceStepTagsOut(BaseModel):
    caption: str
    bpm: int
    keyscale: str
    timesignature: str


class YueTagsOut(BaseModel):
    tags: list[str] = Field(..., description="genre, instruments, moods, gender, timbre.")
    prompt: str = Field(..., description="The tags as YuE's genre prompt.")


class ModelTagsOut(BaseModel):
    """The style in the form each song model was trained on."""

    ace_step: AceStepTagsOut
    yue: YueTagsOut


class TagsOut(BaseModel):
    genre: str
    subgenre: str | None
    moods: list[str]
    bpm: int
    key: str
    instruments: list[str]
    vocal: str
    language: str
    caption: str
    models: ModelTagsOut


class PeaksOut(BaseModel):
    sample_rate: int
    samples_per_peak: int
    peaks: list[list[float]]


class LoraOut(BaseModel):
    id: str
    model: str
    rank: int
    size_bytes: int
    sha256: str
    created_at: float
    scope: Literal["own", "shared"] = Field(
        description="`own`: uploaded with your key; `shared`: the operator's (loras.preload)."
    )
    read_only: bool = Field(
        description="Shared LoRAs cannot be replaced or deleted through the API."
    )


class LoraList(BaseModel):
    loras: list[LoraOut]


class PoolOut(BaseModel):
    name: str
    model: str
    tasks: list[str] = Field(
        default_factory=list,
        description="What songs sent to it may ask (text2music, extend, repaint, cover): its "
        "model's tasks, narrowed by the pool's `tasks` setting.",
    )
    loras: bool = Field(False, description="Its model takes a LoRA per request.")
    reference_audio: bool = Field(False, description="Its model takes a timbre reference.")
    placeable: bool
    reason: str | None
    replicas: int | None = Field(
        None, description="RUNNING replicas as last seen by the router (null until known)."
    )
    capacity: int = Field(
        ..., description="Renders the pool runs at once: replicas × max_ongoing_requests."
    )
    in_flight: int = Field(
        ...,
        description="Renders running or waiting there, across the cluster (see in_flight_source).",
    )
    in_flight_audio_s: float = Field(0.0, description="Seconds of audio those renders make.")
    in_flight_source: Literal["cluster", "router"] = Field(
        "cluster",
        description="cluster: counted in the job store over every replica; router: only the "
        "answering router's own (the store has not answered lately).",
    )
    seconds_per_audio_second: float = Field(
        ...,
        description="Measured speed: seconds of one replica's time per second of audio (a batch's "
        "time shared among its songs); the pool's expected_render_s_per_audio_s until measured.",
    )
    measured_renders: int = Field(
        0,
        description="Renders the answering router measured the speed on (0: the configured guess).",
    )
    expected_wait_s: float = Field(
        ..., description="Seconds a new variation would wait before it starts rendering there."
    )


class PoolList(BaseModel):
    pools: list[PoolOut]


SongOut.model_rebuild()


class C2paOut(BaseModel):
    present: bool = Field(..., description="The file carries a C2PA manifest.")
    valid: bool = Field(..., description="The manifest validates (the file was not altered).")
    trusted: bool = Field(False, description="The signer chains to a trusted root.")
    manifest: dict[str, Any] | None = Field(None, description="What the manifest says.")
    errors: list[dict[str, Any]] = Field(default_factory=list)


class WatermarkOut(BaseModel):
    detected: bool
    score: float = Field(..., description="Detector score in [0, 1].")


class VerifyOut(BaseModel):
    format: str
    c2pa: C2paOut
    watermark: WatermarkOut | Literal["not configured"]


class UsageItem(BaseModel):
    used: float
    limit: float | None = Field(None, description="null: no limit.")


class UsageOut(BaseModel):
    """`GET /v1/usage`: what the caller has used of its quotas today (UTC) and now."""

    key: str | None = Field(None, description="The managed key's name (null: another kind).")
    day_started_at: float = Field(..., description="Epoch seconds: 00:00 UTC today.")
    resets_in_s: int = Field(..., description="Seconds until the daily quotas renew.")
    concurrent_jobs: UsageItem = Field(..., description="Songs queued or running now.")
    queued_jobs: UsageItem = Field(..., description="Songs waiting to start now.")
    songs_today: UsageItem
    audio_seconds_today: UsageItem = Field(
        ..., description="Seconds of audio asked for today (duration × variations)."
    )


# -- the Suno-compatible surface (/api/*; serve.services.suno has the mapping) ---------------------


class _SunoRequest(BaseModel):
    # Suno clients send loose JSON (extra fields such as `continue_clip_id` are ignored).
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class SunoGenerate(_SunoRequest):
    """`POST /api/generate`: description mode."""

    prompt: str = Field(..., min_length=1, max_length=500, description="What the song is about.")
    make_instrumental: bool = False
    model: str | None = Field(None, max_length=64, description="chirp-… or a model name.")
    wait_audio: bool = Field(False, description="Answer once the clips are complete.")


class SunoCustomGenerate(_SunoRequest):
    """`POST /api/custom_generate`: your lyrics and style."""

    prompt: str = Field("", max_length=5000, description="The lyrics, with [Verse] tags.")
    tags: str = Field("", max_length=1000, description="The style.")
    negative_tags: str = Field("", max_length=1000, description="Styles to avoid (recorded).")
    title: str = Field("", max_length=200)
    make_instrumental: bool = False
    model: str | None = Field(None, max_length=64)
    wait_audio: bool = False


class SunoLyricsRequest(_SunoRequest):
    prompt: str = Field(..., min_length=1, max_length=500)


class SunoClip(BaseModel):
    id: str = Field(..., description="<song id>.<variation index>")
    title: str
    status: Literal["submitted", "queued", "streaming", "complete", "error"]
    audio_url: str | None = Field(None, description="The mp3, once the clip is complete.")
    lyric: str
    tags: str
    negative_tags: str
    duration: float | None
    model_name: str
    created_at: str
    error_message: str | None = None


class SunoLyrics(BaseModel):
    text: str
    title: str
    status: Literal["complete"]


class SunoLimit(BaseModel):
    credits_left: int | None = Field(
        None, description="10 per song left of auth.quotas.songs_per_day (null: no limit)."
    )
    period: Literal["day"]
    monthly_limit: int | None = None
    monthly_usage: int = Field(..., description="10 per song made today.")


class ErrorDetail(BaseModel):
    code: str = Field(..., description="What went wrong, for programs: e.g. invalid_request.")
    message: str = Field(..., description="What went wrong and what to do, for people.")
    field: str | None = Field(..., description="The request field, header or parameter at fault.")


class ErrorOut(BaseModel):
    """Every error the API answers has this one shape."""

    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error statuses, all in the one error shape."""
    reasons = {
        400: "The body does not parse (`invalid_body`).",
        401: "No key, or an unknown one (`Authorization: Bearer <key>`).",
        403: "A media link that expired or was altered.",
        404: "No such song, variation or file (or not yours).",
        409: "Not possible in the song's state.",
        413: "The body is over its limit.",
        415: "Not an audio format the API reads.",
        416: "The byte range lies outside the file.",
        422: "A field, parameter or header is invalid; `error.field` names it.",
        429: "Over a quota or limit; see Retry-After and RateLimit-* headers.",
        503: "Overloaded or a store is unavailable for a moment; see Retry-After.",
    }
    return {status: {"model": ErrorOut, "description": reasons[status]} for status in statuses}
