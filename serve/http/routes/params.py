"""Path parameters shared by the routes, bounded so that no value reaches the store (or `int`)
unchecked: an index past the largest variation count is a 422, not a 64-bit overflow."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path

from serve.schemas import MAX_VARIATIONS

SongId = Annotated[str, Path(min_length=1, max_length=64, description="The song's id.")]
VariationIndex = Annotated[
    int,
    Path(ge=0, le=MAX_VARIATIONS - 1, description="The variation's index (0-based)."),
]
FileFormat = Literal["m4a", "mp3", "wav", "flac"]
