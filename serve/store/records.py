"""What the job store holds: jobs, their variations, stems jobs and events, as plain records.

Records are what every store backend returns and what the API and the conductor read; they carry
no connection and no behaviour beyond small derived properties.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.song_contracts import TEXT2MUSIC

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})
VARIATION_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
ACTIVE_STATUSES = frozenset({"queued", "running"})  # of a job or a variation: still to finish
# The event that ends a song's log, one per terminal status (stems events may still follow).
TERMINAL_EVENTS = {"succeeded": "done", "failed": "error", "canceled": "canceled"}
ACTIVE_STEMS_STATUSES = frozenset({"queued", "running"})
FINISHED_STEMS_STATUSES = frozenset({"succeeded", "failed"})


SEARCHED_REQUEST_FIELDS = ("prompt", "title", "style", "lyrics")
"""What `list_jobs(search=…)` looks in: the song's own words, as the request gave them."""
MAX_SEARCH_WORDS = 8


def search_words(search: str | None) -> list[str]:
    """The lower-cased words a song must all contain (at most MAX_SEARCH_WORDS)."""
    return (search or "").lower().split()[:MAX_SEARCH_WORDS]


class LeaseLost(RuntimeError):
    """The caller's claim token no longer holds the lease: the work was taken over (or ended)."""


class StoreUnavailable(RuntimeError):
    """The job store cannot be reached right now (a database outage, a restart). Callers that
    face a client answer 503 with Retry-After; workers retry."""


@dataclass(frozen=True)
class VariationRecord:
    index: int
    status: str = "queued"
    model: str | None = None
    model_version: str | None = None
    seed: int | None = None
    duration_s: float | None = None
    sample_rate: int | None = None
    loudness_lufs: float | None = None
    true_peak_dbtp: float | None = None
    objects: dict[str, str] = field(default_factory=dict)  # "m4a"/"mp3"/…/"peaks" → object key
    render: dict[str, Any] = field(default_factory=dict)  # replica, timings (diagnostics)
    error: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VariationRecord:
        """From a stored dict (a `variation` event's data), written by any version: fields this
        version does not know are dropped, so an older or newer record still reads."""
        known = cls.__dataclass_fields__
        return cls(**{name: value for name, value in data.items() if name in known})


@dataclass(frozen=True)
class JobRecord:
    id: str
    owner: str
    status: str
    stage: str | None
    progress: float
    request: dict[str, Any]
    seed: int
    created_at: float
    updated_at: float
    attempts: int = 0
    lease_owner: str | None = None  # who holds the lease (diagnostics)
    lease_token: str | None = None  # the claim's fence: set on a record `claim_next` returned
    lease_expires_at: float | None = None
    idempotency_key: str | None = None
    lyrics: str | None = None
    lyrics_source: dict[str, Any] | None = None
    tags: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    variations: list[VariationRecord] = field(default_factory=list)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class StemsRecord:
    """The stems job of one variation."""

    job_id: str
    index: int  # the variation's
    status: str
    progress: float
    created_at: float
    updated_at: float
    attempts: int = 0
    lease_owner: str | None = None
    lease_token: str | None = None
    lease_expires_at: float | None = None
    objects: dict[str, dict[str, str]] = field(default_factory=dict)  # stem → format → key
    info: dict[str, Any] = field(default_factory=dict)  # method, separator, provenance, timings
    error: dict[str, Any] | None = None

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STEMS_STATUSES


@dataclass(frozen=True)
class DeliveryRecord:
    """The making of one file of a finished variation on its first request (a lazy format):
    claimed with a short lease so that concurrent first requests, on any API replica, make it
    once. `claims` counts how often it was claimed (1 when nothing went wrong)."""

    job_id: str
    index: int  # the variation's
    name: str  # the file: a format, e.g. "mp3"
    status: str  # "making" while claimed, "open" when handed back, "delivered"
    claims: int
    lease_owner: str | None
    lease_expires_at: float | None
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: Any) -> DeliveryRecord:
        """From a `deliveries` row of either backend (both rows are read by column name)."""
        return cls(
            job_id=row["job_id"],
            index=row["idx"],
            name=row["name"],
            status=row["status"],
            claims=row["claims"],
            lease_owner=row["lease_owner"],
            lease_expires_at=row["lease_expires_at"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@dataclass(frozen=True)
class EventRecord:
    seq: int
    type: str
    data: dict[str, Any]
    created_at: float


JOB_FIELDS = frozenset(
    {"status", "stage", "progress", "lyrics", "lyrics_source", "tags", "error", "updated_at"}
)
"""Job columns a lease holder may write (`update_job`, `append_event(job_fields=…)`)."""
JSON_JOB_FIELDS = frozenset({"request", "lyrics_source", "tags", "error"})
VARIATION_FIELDS = frozenset(
    {
        "status",
        "model",
        "model_version",
        "seed",
        "duration_s",
        "sample_rate",
        "loudness_lufs",
        "true_peak_dbtp",
        "objects",
        "render",
        "error",
    }
)
JSON_VARIATION_FIELDS = frozenset({"objects", "render", "error"})
STEMS_FIELDS = frozenset({"status", "progress", "objects", "info", "error", "updated_at"})
JSON_STEMS_FIELDS = frozenset({"objects", "info", "error"})


@dataclass(frozen=True)
class LeasedTable:
    """A table whose rows are work leased to workers: claimed with an expiry and a token,
    renewed, fenced, released, and failed once their attempts are used up. Songs and stems jobs
    share this one mechanism; each backend writes it in its own SQL."""

    name: str
    kind: str  # what its fields are called in errors: "job", "stems"
    noun: str  # how messages name a row: "job", "stems job"
    key: tuple[str, ...]  # primary key columns
    order: str  # which runnable row is claimed first
    fields: frozenset[str]  # what a lease holder may write
    json_fields: frozenset[str]
    terminal: frozenset[str]  # statuses that end the lease
    # (job id, event type, data) the song's log gets when a row's attempts run out
    exhausted_event: Callable[[Mapping[str, Any], dict[str, Any]], tuple[str, str, dict[str, Any]]]
    work: Callable[[Sequence[Any]], str]  # how a row is named when it becomes claimable

    def where(self, placeholder: str, *, qualified: bool = False) -> str:
        """`key1 = ? AND key2 = ?` in the backend's placeholder style."""
        prefix = f"{self.name}." if qualified else ""
        return " AND ".join(f"{prefix}{column} = {placeholder}" for column in self.key)


JOBS = LeasedTable(
    name="jobs",
    kind="job",
    noun="job",
    key=("id",),
    order="created_at, id",
    fields=JOB_FIELDS,
    json_fields=JSON_JOB_FIELDS,
    terminal=TERMINAL_STATUSES,
    exhausted_event=lambda row, error: (row["id"], "error", error),
    work=lambda key: f"job:{key[0]}",
)
STEMS = LeasedTable(
    name="stems",
    kind="stems",
    noun="stems job",
    key=("job_id", "idx"),
    order="created_at, job_id, idx",
    fields=STEMS_FIELDS,
    json_fields=JSON_STEMS_FIELDS,
    terminal=FINISHED_STEMS_STATUSES,
    exhausted_event=lambda row, error: (
        row["job_id"],
        "stems",
        {"variation": row["idx"], "status": "failed", "error": error},
    ),
    work=lambda key: f"stems:{key[0]}:{key[1]}",
)


def check_fields(kind: str, fields: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"not {kind} fields: {sorted(unknown)}")


def exhausted_error(noun: str, attempts: int) -> dict[str, Any]:
    """The error of work whose claims were used up by workers that died or timed out."""
    return {
        "code": "attempts_exhausted",
        "message": f"the {noun} was started {attempts} times without finishing "
        "(its workers kept dying or timing out); giving up",
    }


WEBHOOK_STATUSES = ("pending", "delivered", "failed", "skipped")


@dataclass(frozen=True)
class WebhookRecord:
    """The webhook of a song that asked for one (`callback_url`): due once the song ends, then
    claimed by one delivering worker at a time under a lease. `pending` until `delivered`,
    `failed` (attempts used up) or `skipped` (the song was canceled: no event to tell)."""

    job_id: str
    id: str  # `webhook-id`: the same on every attempt, so receivers can dedupe
    url: str
    status: str
    attempts: int  # claims so far, the one in flight included
    next_attempt_at: float
    created_at: float
    updated_at: float
    lease_token: str | None = None
    last_error: str | None = None
    last_status_code: int | None = None
    delivered_at: float | None = None

    @classmethod
    def from_row(cls, row: Any) -> WebhookRecord:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


def new_webhook_id() -> str:
    return f"msg_{secrets.token_hex(12)}"


def new_job_id() -> str:
    """Time-ordered, unguessable id: `song_` + 12 hex digits of ms + 16 random hex digits."""
    return f"song_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


def new_lease_token() -> str:
    """A claim's fence: fresh for every claim, so a worker's earlier claim of the same job can
    never write again once the job was claimed anew (by anyone, that worker included)."""
    return secrets.token_hex(16)


def encode_cursor(created_at: float, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at!r}|{job_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, job_id = raw.split("|", 1)
        return float(created_at), job_id
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError("cursor is not one this server issued") from error


@dataclass(frozen=True)
class PoolRenders:
    """Renders in flight on one decoder pool, counted across the cluster by the job store."""

    renders: int
    audio_s: float  # seconds of audio those renders make


@dataclass(frozen=True)
class QueuePlace:
    """Where a queued job stands in the claim order."""

    position: int  # runnable jobs ahead of it (0: it is claimed next)
    audio_s_ahead: float  # audio still to render before it: jobs being driven and jobs ahead


def places_in_line(live_jobs: Iterable[Any]) -> dict[str, QueuePlace]:
    """Every queued job's `QueuePlace` at once, from one row per queued or running job in claim
    order (created_at, id), each with `id`, `status`, `leased` (a live lease: being driven),
    `runnable` (claimable: no lease, or an expired one) and `audio_s` (the seconds of its
    variations not yet rendered). The same figures as `queue_place` of each, in one pass."""
    rows = list(live_jobs)
    audio_ahead = sum(float(row["audio_s"]) for row in rows if row["leased"])
    places: dict[str, QueuePlace] = {}
    position = 0
    for row in rows:
        if not row["runnable"]:
            continue
        if row["status"] == "queued":
            places[str(row["id"])] = QueuePlace(position=position, audio_s_ahead=audio_ahead)
        position += 1
        audio_ahead += float(row["audio_s"])
    return places


def requested_lora_ref(request: Mapping[str, Any]) -> str | None:
    """The LoRA a stored song request renders with: the ref it was accepted with (serve.loras);
    songs accepted before LoRAs had scopes stored only the id, which names an old-layout (shared)
    LoRA. None without a LoRA. The backlog queries of both stores read the same fields."""
    lora = request.get("lora") or {}
    return lora.get("ref") or lora.get("id") or None


def requested_reference_key(request: Mapping[str, Any]) -> str | None:
    """The object-store key of a stored song request's timbre reference; None without one."""
    return (request.get("reference") or {}).get("key") or None


@dataclass(frozen=True)
class BacklogKey:
    """What decides which pools can render a song's variations, as the router picks them: the
    requested model (`auto` included), the task (text2music unless the song is an edit), for
    `auto` the language (a model may prefer it), and whether the song brings a LoRA or a timbre
    reference (only models that take one can render it)."""

    model: str
    task: str = TEXT2MUSIC
    language: str = "en"
    lora: bool = False
    reference: bool = False

    @classmethod
    def of_request(cls, request: Mapping[str, Any]) -> BacklogKey:
        """From a stored song request, as the conductor builds its `RenderRequest` (the backlog
        queries of both backends read the same fields)."""
        return cls(
            model=str(request.get("model") or "auto"),
            task=str((request.get("edit") or {}).get("task") or TEXT2MUSIC),
            language=str(request.get("language") or "en"),
            lora=requested_lora_ref(request) is not None,
            reference=requested_reference_key(request) is not None,
        )

    @classmethod
    def from_row(cls, row: Any) -> BacklogKey:
        """From a backlog query's row of either backend (columns model, task, language, lora,
        reference; the queries fill in "auto", "text2music" and "en" for what a request leaves
        out)."""
        return cls(
            str(row["model"]),
            str(row["task"]),
            str(row["language"]),
            bool(row["lora"]),
            bool(row["reference"]),
        )


@dataclass(frozen=True)
class ModelBacklog:
    """Song work not yet rendered for one `BacklogKey`, counted across the cluster (backlog
    autoscaling). Variations count while queued or running without a stored render."""

    waiting: int  # variations not being rendered: queued songs', and not started or orphaned ones
    waiting_audio_s: float  # seconds of audio they will make
    rendering: int  # variations a live claim is rendering now (sent to a pool)
    rendering_audio_s: float

    @classmethod
    def from_row(cls, row: Any) -> ModelBacklog:
        """From a backlog query's row of either backend (read by column name)."""
        return cls(
            waiting=int(row["waiting"]),
            waiting_audio_s=float(row["waiting_audio_s"]),
            rendering=int(row["rendering"]),
            rendering_audio_s=float(row["rendering_audio_s"]),
        )
