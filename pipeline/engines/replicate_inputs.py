"""The inputs each Replicate-hosted song model takes, built from a render request.

Each model gets its own tag form and lyric form: YuE a space-separated genre prompt in its five
tag groups (`pipeline.semantic_tags.yue_genre_prompt`) and lowercase section tags; HeartMuLa a
comma-separated tag list in the order its training sampled tag groups (genre first) and
bracketed section names. Operators add or override fixed inputs in `replicate.input`; a song's
lyrics, style, length and seed always come from the song.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pipeline.lyrics import LyricSection

if TYPE_CHECKING:
    from pipeline.song_models import RenderRequest
    from pipeline.tags import StyleTags

# YuE's stage 1 emits about 100 tokens per second of song (xcodec at 50 Hz, vocal and
# accompaniment interleaved); fofr/yue defaults to 3000 tokens (~30 s) per lyric segment.
YUE_TOKENS_PER_SECOND = 100
YUE_MAX_TOKENS_PER_SEGMENT = 3000
YUE_MIN_TOKENS_PER_SEGMENT = 500

HEARTMULA_DEFAULTS: Mapping[str, Any] = {"topk": 50, "temperature": 1.0, "cfg_scale": 1.5}
HEARTMULA_MAX_TAGS = 8


def _sung(sections: list[LyricSection]) -> list[LyricSection]:
    return [section for section in sections if section.lines]


def yue_lyrics(sections: list[LyricSection]) -> str:
    """YuE's lyrics: "[verse]" / "[chorus]" / … (lowercase), lines, a blank line between
    sections; only sections with sung lines (YuE renders one segment per section)."""
    return "\n\n".join(
        "\n".join([f"[{section.tag.split()[0].lower()}]", *section.lines])
        for section in _sung(sections)
    )


def yue_input(request: RenderRequest) -> dict[str, Any]:
    from pipeline.semantic_tags import yue_genre_prompt

    segments = max(1, len(_sung(request.sections)))
    per_segment = math.ceil(request.duration_s * YUE_TOKENS_PER_SECOND / segments)
    return {
        "genre_description": yue_genre_prompt(request.tags),
        "lyrics": "" if request.instrumental else yue_lyrics(request.sections),
        "num_segments": segments,
        "max_new_tokens": min(
            YUE_MAX_TOKENS_PER_SEGMENT, max(YUE_MIN_TOKENS_PER_SEGMENT, per_segment)
        ),
        "seed": request.seed,
    }


def heartmula_tags(tags: StyleTags) -> str:
    """HeartMuLa's tags: lowercase, comma-separated, no spaces after commas, genre first, then
    moods, instruments and the voice (its training always sampled genre; instruments rarely),
    e.g. "indie pop,dream pop,happy,piano,female vocal"."""
    names = [tags.genre, *([tags.subgenre] if tags.subgenre else []), *tags.moods]
    names += tags.instruments
    if tags.vocal == "instrumental":
        names.append("instrumental")
    elif tags.vocal in ("male", "female"):
        names.append(f"{tags.vocal} vocal")
    elif tags.vocal in ("duet", "choir"):
        names.append(tags.vocal)
    unique = list(dict.fromkeys(name.strip().lower() for name in names if name and name.strip()))
    return ",".join(unique[:HEARTMULA_MAX_TAGS])


def heartmula_lyrics(sections: list[LyricSection]) -> str:
    """HeartMuLa's lyrics: "[Verse]" / "[Chorus]" section names, lines, blank lines between."""
    return "\n\n".join(
        "\n".join([f"[{section.tag.title()}]", *section.lines]) for section in sections
    )


def heartmula_input(request: RenderRequest) -> dict[str, Any]:
    return {
        **HEARTMULA_DEFAULTS,
        "lyrics": "" if request.instrumental else heartmula_lyrics(request.sections),
        "tags": heartmula_tags(request.tags),
        # No seed: the model takes none, so its songs are not reproducible by seed.
        "max_audio_length_ms": round(request.duration_s * 1000),
    }


REPLICATE_INPUTS: Mapping[str, Callable[[RenderRequest], dict[str, Any]]] = {
    "yue": yue_input,
    "heartmula": heartmula_input,
}
"""The input builder of each song model served through Replicate (`SONG_MODELS[m].remote`)."""


def prediction_input(
    model: str, request: RenderRequest, fixed: Mapping[str, Any]
) -> dict[str, Any]:
    """The prediction input for `request`: the operator's fixed inputs, then the song's."""
    built = REPLICATE_INPUTS[model](request)
    song_owned = {"lyrics", "genre_description", "tags", "max_audio_length_ms", "seed"}
    return {**built, **{k: v for k, v in fixed.items() if k not in song_owned}}
