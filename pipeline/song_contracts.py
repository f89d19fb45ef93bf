"""What each song model can do, declared once, by model name: the API, the router and the stems
maker read it here instead of comparing model names, and each engine (deployments/song_models.py,
deployments/ace_step.py) declares the same object as its `capabilities`, which a test holds to
what the engine really does.

Pure data: nothing here imports a model, so the API can check a request against it before any
decoder is involved.
"""

from __future__ import annotations

from dataclasses import dataclass

TEXT2MUSIC = "text2music"


@dataclass(frozen=True)
class SongModelCapabilities:
    loras: bool = False
    """Takes a LoRA adapter per request (hot-swapped, multiplexed across a pool's replicas)."""
    exact_stems: bool = False
    """Renders each part on its own track, so a song's stems are exact and need no separator."""
    tasks: frozenset[str] = frozenset({TEXT2MUSIC})
    """What it can be asked to do: text2music; editing tasks as models gain them."""


SONG_MODELS: dict[str, SongModelCapabilities] = {
    "sketch": SongModelCapabilities(exact_stems=True),
    "ace-step": SongModelCapabilities(loras=True),
}
"""Every song model a pool may serve (`models.pools[].model`), with what it can do."""


def capabilities_of(model: str) -> SongModelCapabilities:
    """What `model` can do; a name no pool serves any more (an old record's) can do nothing
    extra."""
    return SONG_MODELS.get(model, SongModelCapabilities())
