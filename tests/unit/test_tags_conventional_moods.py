"""A style that names a genre but no mood gets the genre's conventional moods, in both tag engines.

No model here: the semantic engine's pure functions run on a stand-in embedder that gives every
distinct text its own orthogonal unit vector, so a text the embedding has never seen finds no
genre and no mood, and a text embedded as a vocabulary row finds exactly that row. The real
MiniLM checks the same behaviour in tests/unit/test_semantic_tags.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from pipeline.semantic_tags import (
    VocabularyIndex,
    build_vocabulary_index,
    genre_entries,
    lexical_evidence,
    normalize_style_semantic,
    semantic_style,
)
from pipeline.tags import MAX_MOODS, normalize_style, style_for
from pipeline.vocabulary import GENRE_TYPICAL_MOODS, GENRES

AGGRESSIVE = {"aggressive", "intense", "energetic"}


class OrthogonalEmbedder:
    """Each distinct text → its own basis vector (L2-normalised, float32), in order of first
    sight; `texts` records every text embedded."""

    def __init__(self, dimensions: int = 2048) -> None:
        self.dimensions = dimensions
        self.rows: dict[str, int] = {}
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += list(texts)
        vectors = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for i, text in enumerate(texts):
            vectors[i, self.rows.setdefault(text, len(self.rows))] = 1.0
        return vectors


@pytest.fixture(scope="module")
def embedder_and_index() -> tuple[OrthogonalEmbedder, VocabularyIndex]:
    embedder = OrthogonalEmbedder()
    return embedder, build_vocabulary_index(embedder)


def _both_engines(
    text: str, embedder_and_index: tuple[OrthogonalEmbedder, VocabularyIndex]
) -> list[list[str]]:
    embedder, index = embedder_and_index
    return [
        normalize_style(text).moods,
        normalize_style_semantic(text, embedder, index).moods,
    ]


@pytest.mark.parametrize(
    ("text", "genre"),
    [
        ("thrash metal with fast palm-muted riffs", "thrash metal"),
        ("techno", "techno"),
        ("deep house with a rolling bassline", "house"),
        ("bossa nova for two guitars and a flute", "bossa nova"),
        ("a jazzy tune", "jazz"),  # a hint adjective names the genre too
    ],
)
def test_a_named_genre_without_a_mood_gets_its_conventional_moods(
    text: str, genre: str, embedder_and_index: tuple[OrthogonalEmbedder, VocabularyIndex]
) -> None:
    assert not lexical_evidence(text).moods_named
    tags = normalize_style(text)
    assert tags.genre == genre
    conventional = list(GENRE_TYPICAL_MOODS[genre][:MAX_MOODS])
    assert _both_engines(text, embedder_and_index) == [conventional, conventional]
    assert tags.caption.startswith(", ".join([genre, *([tags.subgenre] if tags.subgenre else [])]))
    assert all(mood in tags.caption for mood in conventional)


def test_thrash_metal_sounds_aggressive_in_both_engines(
    embedder_and_index: tuple[OrthogonalEmbedder, VocabularyIndex],
) -> None:
    for moods in _both_engines("thrash metal with fast palm-muted riffs", embedder_and_index):
        assert set(moods) & AGGRESSIVE, moods


@pytest.mark.parametrize(
    ("text", "moods"),
    [
        ("happy thrash metal with fast palm-muted riffs", ["happy"]),
        ("sad techno", ["sad"]),
        ("a dark and dreamy deep house track", ["dark", "dreamy"]),
    ],
)
def test_an_explicit_mood_wins(
    text: str,
    moods: list[str],
    embedder_and_index: tuple[OrthogonalEmbedder, VocabularyIndex],
) -> None:
    assert _both_engines(text, embedder_and_index) == [moods, moods]


@pytest.mark.parametrize("text", [None, "", "a song", "a yellow submarine", "zxqv blorp"])
def test_no_genre_named_no_conventional_moods(
    text: str | None, embedder_and_index: tuple[OrthogonalEmbedder, VocabularyIndex]
) -> None:
    # The lexicon's default genre is no evidence of a mood; nor is an embedding that found none.
    assert _both_engines(text or "", embedder_and_index) == [[], []]


def test_conventional_moods_leave_tempo_key_instruments_and_vocal_alone() -> None:
    # The genre's range and mode already hold its convention: only moods and caption change.
    for genre in GENRES:
        text = f"{genre.name} with a long intro"
        conventional = style_for(text, genre, None, [], genre_from_text=True)
        without = style_for(text, genre, None, [], genre_from_text=False)
        assert conventional.moods == list(GENRE_TYPICAL_MOODS[genre.name][:MAX_MOODS])
        assert without.moods == []
        same = ("bpm", "key", "instruments", "vocal", "genre", "subgenre", "family")
        assert [getattr(conventional, f) for f in same] == [getattr(without, f) for f in same]
    assert normalize_style("techno", instrumental=True).moods == normalize_style("techno").moods


def test_a_scene_whose_genre_the_embedding_picked_gets_that_genres_moods(
    embedder_and_index: tuple[OrthogonalEmbedder, VocabularyIndex],
) -> None:
    _, index = embedder_and_index
    text = "a warehouse at five in the morning"
    assert normalize_style(text).genre == "pop" and normalize_style(text).moods == []
    techno_row = next(i for i, entry in enumerate(genre_entries()) if entry.genre == "techno")
    tags = semantic_style(text, index.genre_vectors[techno_row], index)
    assert tags.genre == "techno"
    assert tags.moods == list(GENRE_TYPICAL_MOODS["techno"][:MAX_MOODS])


def test_the_embedding_is_not_asked_when_only_named_things_remain(
    embedder_and_index: tuple[OrthogonalEmbedder, VocabularyIndex],
) -> None:
    embedder, index = embedder_and_index
    before = len(embedder.texts)
    assert normalize_style_semantic("heavy metal with piano at 120 bpm", embedder, index).moods
    assert len(embedder.texts) == before


def test_a_named_genres_conventions_lead_the_moods_the_embedding_found(
    embedder_and_index: tuple[OrthogonalEmbedder, VocabularyIndex],
) -> None:
    _, index = embedder_and_index
    text = "thrash metal with fast palm-muted riffs"
    assert lexical_evidence(text).genre_source == "phrase"
    nostalgic_row = next(i for i, mood in enumerate(index.moods) if mood == "nostalgic")
    tags = semantic_style(text, index.mood_vectors[nostalgic_row], index)
    conventions = list(GENRE_TYPICAL_MOODS["thrash metal"])
    assert "nostalgic" not in conventions
    assert tags.moods == [*conventions, "nostalgic"][:MAX_MOODS]
    # Tempo and key follow the mood the text gave (found), not the conventions.
    genre = next(genre for genre in GENRES if genre.name == "thrash metal")
    found = style_for(text, genre, None, ["nostalgic"])
    assert (tags.bpm, tags.key) == (found.bpm, found.key)
