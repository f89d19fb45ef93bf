"""What a load run records about each song, and the run as a whole."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .arrivals import Step

Admission = Literal["accepted", "throttled", "overloaded", "other"]
"""`POST /v1/songs` answered 202, 429, 503, or anything else (incl. no answer at all)."""

Result = Literal["done", "failed", "unfinished", "refused"]
"""done: the `done` event came; failed: an `error` event, or the stream broke for good;
unfinished: still going when the drain ended; refused: not admitted."""


def admission_of(status: int | None) -> Admission:
    if status == 202:
        return "accepted"
    if status == 429:
        return "throttled"
    if status == 503:
        return "overloaded"
    return "other"


@dataclass
class SongRecord:
    """One submitted song. Times in seconds: `*_at_s` from the start of the run, the others
    from the start of its `POST /v1/songs`."""

    index: int
    step: int
    scheduled_at_s: float
    body: dict[str, Any]
    submitted_at_s: float | None = None  # when the POST started (scheduled_at_s + lag)
    http_status: int | None = None
    admission: Admission = "other"
    reason: str | None = None  # the error body's code (429/503/…), or why there was no answer
    song_id: str | None = None
    first_progress_s: float | None = None  # POST → first `progress` event
    done_s: float | None = None  # POST → `done` event
    ended_s: float | None = None  # POST → done, error, or giving up
    result: Result = "unfinished"
    events: int = 0

    @property
    def finished_at_s(self) -> float | None:
        """When the `done` event came, from the start of the run."""
        if self.done_s is None or self.submitted_at_s is None:
            return None
        return self.submitted_at_s + self.done_s

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadRun:
    """A finished run: its schedule, the songs it submitted and how long it lasted."""

    url: str
    seed: int
    steps: list[Step]
    records: list[SongRecord]
    started_at: str  # ISO 8601, UTC
    submit_s: float  # the submission phase (the schedule's length, or less at --max-songs)
    wall_s: float  # submission + drain
    profile: dict[str, Any] = field(default_factory=dict)


def write_records(records: list[SongRecord], path: Path) -> None:
    """Every record as one JSON object per line."""
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record.to_json(), separators=(",", ":")) + "\n")


def read_records(path: Path) -> list[SongRecord]:
    """Records written by `write_records`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [SongRecord(**json.loads(line)) for line in lines if line.strip()]
