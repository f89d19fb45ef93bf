"""What each song model can do, declared once, by model name: the API, the router and the stems
maker read it here instead of comparing model names, and each engine (pipeline/engines/sketch.py,
pipeline/engines/ace_step.py) declares the same object as its `capabilities`, which a test holds to
what the engine really does.

Pure data: nothing here imports a model, so the API can check a request against it before any
decoder is involved.
"""

from __future__ import annotations

from dataclasses import dataclass

TEXT2MUSIC = "text2music"
EXTEND = "extend"  # continue a song by N seconds
REPAINT = "repaint"  # make a span of a song anew
COVER = "cover"  # re-render a song in another style
EDIT_TASKS = (EXTEND, REPAINT, COVER)


@dataclass(frozen=True)
class SongModelCapabilities:
    loras: bool = False
    """Takes a LoRA adapter per request (hot-swapped, multiplexed across a pool's replicas)."""
    exact_stems: bool = False
    """Renders each part on its own track, so a song's stems are exact and need no separator."""
    tasks: frozenset[str] = frozenset({TEXT2MUSIC})
    """What it can be asked to do: text2music; editing tasks as models gain them."""
    reference_audio: bool = False
    """Takes a timbre reference (`reference_audio`) with any task."""
    preferred_languages: frozenset[str] = frozenset()
    """Vocal languages (ISO 639-1) it sings best: `model: auto` tries it first for them."""
    remote: bool = False
    """Runs on a hosted API (Replicate), not on the cluster's own hardware."""


SONG_MODELS: dict[str, SongModelCapabilities] = {
    # Sketch edits exactly: outside the window the samples are the source's (pipeline.editing).
    "sketch": SongModelCapabilities(
        exact_stems=True, tasks=frozenset({TEXT2MUSIC, EXTEND, REPAINT})
    ),
    # ACE-Step through diffusers' AceStepPipeline tasks (repaint, cover) and reference audio.
    "ace-step": SongModelCapabilities(
        loras=True, tasks=frozenset({TEXT2MUSIC, EXTEND, REPAINT, COVER}), reference_audio=True
    ),
    # Through Replicate (pipeline/engines/replicate.py): YuE for Chinese, Japanese and Korean;
    # HeartMuLa as an alternative.
    "yue": SongModelCapabilities(preferred_languages=frozenset({"zh", "ja", "ko"}), remote=True),
    "heartmula": SongModelCapabilities(remote=True),
}
"""Every song model a pool may serve (`models.pools[].model`), with what it can do."""


def capabilities_of(model: str) -> SongModelCapabilities:
    """What `model` can do; a name no pool serves any more (an old record's) can do nothing
    extra."""
    return SONG_MODELS.get(model, SongModelCapabilities())


def auto_models(language: str, auto_order: list[str], served: set[str] | list[str]) -> list[str]:
    """The models `model: auto` tries for a song sung in `language`, best first: those served
    that prefer the language (YuE for zh/ja/ko), then `auto_order`'s served models. The one
    place this rule lives."""
    preferring = [
        m for m in SONG_MODELS if m in served and language in capabilities_of(m).preferred_languages
    ]
    ordered = preferring + [m for m in auto_order if m in served]
    return list(dict.fromkeys(ordered))


def candidate_models(
    model: str,
    *,
    language: str,
    auto_order: list[str],
    served: set[str] | list[str],
    with_lora: bool = False,
    reference: bool = False,
) -> list[str]:
    """The models a song may render on, in the order they are tried: `model` itself, or for
    `auto` the `auto_models` order; of those, only models that take a LoRA when the song brings
    one (`with_lora`) and a timbre reference when it brings one (`reference`). The router tries
    their pools in this order; queue estimates and backlog autoscaling count the song against
    the first that has a pool for its task."""
    models = auto_models(language, auto_order, served) if model == "auto" else [model]
    return [
        m
        for m in models
        if (capabilities_of(m).loras or not with_lora)
        and (capabilities_of(m).reference_audio or not reference)
    ]
