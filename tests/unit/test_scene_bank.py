"""The scene bank and its vote: a text that names no genre is placed by the scenes nearest it.

The bank's labels are checked against the vocabulary. The vote and how `semantic_style` uses it
run on the stand-in embedder of test_tags_conventional_moods (every distinct text its own
orthogonal unit vector), so a text embedded as a scene is exactly that scene and nothing else;
the real MiniLM places described scenes in tests/unit/test_semantic_tags.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.scene_bank import SCENES, Scene
from pipeline.semantic_tags import (
    MAX_SEMANTIC_MOODS,
    NO_SCENE_VOTE,
    SCENE_NEIGHBOURS,
    VocabularyIndex,
    build_vocabulary_index,
    lexical_evidence,
    mood_texts,
    normalize_style_semantic,
    scene_vote,
    semantic_style,
)
from pipeline.tags import normalize_style, style_for
from pipeline.vocabulary import GENRE_TYPICAL_MOODS, GENRES, MOODS
from tests.unit.test_tags_conventional_moods import OrthogonalEmbedder

GENRE_NAMES = {genre.name for genre in GENRES}
MOOD_NAMES = {mood.name for mood in MOODS}

# A bank of our own, so the vote's arithmetic is checked on labels chosen here.
HARBOUR = Scene(
    "fishing boats coming home to the harbour", ("folk", "country"), ("warm", "peaceful")
)
ALLEY = Scene("a chase through a rain-soaked alley", ("cinematic",), ("intense", "dark"))
BANK = (HARBOUR, ALLEY)


@pytest.fixture(scope="module")
def small_bank() -> tuple[OrthogonalEmbedder, VocabularyIndex]:
    embedder = OrthogonalEmbedder()
    return embedder, build_vocabulary_index(embedder, scenes=BANK)


def test_every_scene_is_labelled_with_the_vocabularys_names() -> None:
    assert len(SCENES) >= 300
    assert len({scene.text.lower() for scene in SCENES}) == len(SCENES)
    for scene in SCENES:
        assert 1 <= len(scene.genres) <= 3 and set(scene.genres) <= GENRE_NAMES, scene
        assert 1 <= len(scene.moods) <= 3 and set(scene.moods) <= MOOD_NAMES, scene
    # Every genre is some scene's first choice, so the vote can reach each of them.
    assert {scene.genres[0] for scene in SCENES} == GENRE_NAMES


def test_the_index_embeds_the_bank_after_the_vocabulary(
    small_bank: tuple[OrthogonalEmbedder, VocabularyIndex],
) -> None:
    embedder, index = small_bank
    assert index.scenes == BANK
    assert index.scene_vectors.shape == (2, embedder.dimensions)
    assert embedder.texts[-2:] == [HARBOUR.text, ALLEY.text]
    assert index.mood_vectors.shape[0] == len(mood_texts())


def test_the_nearest_scenes_vote_by_similarity_and_rank() -> None:
    # Three scenes along two axes: the query sits nearer the harbour than the alley.
    index = build_vocabulary_index(OrthogonalEmbedder(), scenes=BANK)
    harbour, alley = index.scene_vectors
    query = 0.8 * harbour + 0.6 * alley
    vote = scene_vote(query, index)
    assert vote.nearest == pytest.approx(0.8)
    # harbour weighs 0.8**4 = 0.41 for folk and 0.41 * 0.7 for country; alley 0.6**4 = 0.13.
    assert vote.genres == ("folk", "country", "cinematic")
    assert vote.moods == ("warm", "peaceful", "intense", "dark")
    assert scene_vote(0.6 * harbour + 0.8 * alley, index).genres[0] == "cinematic"
    # No bank, no vote.
    assert scene_vote(query, build_vocabulary_index(OrthogonalEmbedder(), scenes=())) == (
        NO_SCENE_VOTE
    )


def test_only_the_nearest_scenes_vote() -> None:
    many = tuple(Scene(f"scene {i}", ("techno",), ("dark",)) for i in range(SCENE_NEIGHBOURS))
    index = build_vocabulary_index(OrthogonalEmbedder(), scenes=(*many, HARBOUR))
    # The harbour is the least similar of eleven: it is left out of the vote.
    query = index.scene_vectors[:-1].sum(axis=0) + 0.5 * index.scene_vectors[-1]
    query /= np.linalg.norm(query)
    assert scene_vote(query, index).genres == ("techno",)


def test_a_text_that_reads_as_a_scene_takes_its_genre_and_moods(
    small_bank: tuple[OrthogonalEmbedder, VocabularyIndex],
) -> None:
    embedder, index = small_bank
    text = HARBOUR.text
    assert lexical_evidence(text).genre_source == "default"
    tags = normalize_style_semantic(text, embedder, index)
    assert tags.genre == "folk"
    assert tags.moods == list(HARBOUR.moods[:MAX_SEMANTIC_MOODS])
    assert tags == style_for(text, GENRES[[g.name for g in GENRES].index("folk")], None,
                             list(HARBOUR.moods), genre_from_text=True)  # fmt: skip
    # A minimum similarity above the scene's turns the vote off, as it turns off the glosses.
    assert semantic_style(text, index.scene_vectors[0], index, min_similarity=1.01) == (
        normalize_style(text)
    )


def test_a_named_genre_keeps_its_conventions_whatever_the_scenes_say(
    small_bank: tuple[OrthogonalEmbedder, VocabularyIndex],
) -> None:
    _, index = small_bank
    text = f"techno for {ALLEY.text}"
    assert lexical_evidence(text).scene_text == ""
    tags = semantic_style(text, index.scene_vectors[1], index, scene_vector=index.scene_vectors[1])
    assert tags.genre == "techno"
    assert tags.moods == list(GENRE_TYPICAL_MOODS["techno"])


def test_the_scene_vote_reads_the_scene_without_the_named_things(
    small_bank: tuple[OrthogonalEmbedder, VocabularyIndex],
) -> None:
    embedder, index = small_bank
    # Instruments, vocals and music words are not the scene: they are left out of what the vote
    # embeds, so a guitar in the text does not pull it toward scenes that have a guitar.
    evidence = lexical_evidence("a rooftop wedding song with violins")
    assert evidence.scene_text == "a rooftop wedding with"
    assert lexical_evidence("a boxing gym at 6am").scene_text == "a boxing gym at 6am"
    assert lexical_evidence("a sad song").scene_text == ""  # nothing unexplained
    before = len(embedder.texts)
    text = f"piano for {HARBOUR.text}"
    tags = normalize_style_semantic(text, embedder, index)
    # One encoder call for both texts; the vote used the scene text, which is the harbour's.
    assert embedder.texts[before:] == [text, f"for {HARBOUR.text}"]
    assert tags.genre != "folk"  # "for fishing boats…" is a new text: no scene near it
    embedder.rows[f"for {HARBOUR.text}"] = embedder.rows[HARBOUR.text]
    assert normalize_style_semantic(text, embedder, index).genre == "folk"
    assert "piano" in normalize_style_semantic(text, embedder, index).instruments
