"""Lexical style normaliser: a labelled phrase set plus contract and vocabulary-integrity tests."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline.tags import (
    GENRE_FAMILIES,
    KEY_TONICS,
    StyleTags,
    _phrase_owners,
    list_genres,
    normalize_style,
    phrase_tokens,
)
from pipeline.vocabulary import (
    FAMILY_DEFAULT_VOCAL,
    GENRE_TYPICAL_MOODS,
    GENRES,
    INSTRUMENTS,
    MOODS,
    VOCAL_TYPES,
)

PHRASES_PATH = Path(__file__).resolve().parents[1] / "data" / "style_phrases.jsonl"
KEY_FORMAT = re.compile(r"^(C|C#|D|Eb|E|F|F#|G|Ab|A|Bb|B) (major|minor)$")
MIN_GENRE_ACCURACY = 0.90


def _load_phrases() -> list[dict[str, Any]]:
    with PHRASES_PATH.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _lexicon_phrases() -> list[dict[str, Any]]:
    """The rows written for the lexicon. Rows with a "kind" (descriptive, slang, foreign, ...)
    measure the semantic engine, and their "moods" list acceptable moods, any one of which counts
    (tests/unit/test_semantic_tags.py, scripts/eval_tags.py)."""
    return [row for row in _load_phrases() if "kind" not in row]


def _field_failures(row: dict[str, Any], tags: StyleTags) -> dict[str, str]:
    """Field name → what went wrong, for every labelled field this row gets wrong."""
    failures: dict[str, str] = {}
    if tags.genre != row["genre"]:
        failures["genre"] = f"{tags.genre!r} != {row['genre']!r}"
    if "bpm" in row and tags.bpm != row["bpm"]:
        failures["bpm"] = f"{tags.bpm} != {row['bpm']}"
    if "key" in row and tags.key != row["key"]:
        failures["key"] = f"{tags.key!r} != {row['key']!r}"
    if "vocal" in row and tags.vocal != row["vocal"]:
        failures["vocal"] = f"{tags.vocal!r} != {row['vocal']!r}"
    for field in ("moods", "instruments"):
        missing = set(row.get(field, ())) - set(getattr(tags, field))
        if missing:
            failures[field] = f"missing {sorted(missing)} in {getattr(tags, field)}"
    return failures


def test_labelled_phrase_set() -> None:
    rows = _lexicon_phrases()
    assert len(rows) >= 120
    labelled: Counter[str] = Counter()
    wrong: Counter[str] = Counter()
    report: list[str] = []
    for row in rows:
        tags = normalize_style(row["text"])
        labelled["genre"] += 1
        for field in ("bpm", "key", "vocal", "moods", "instruments"):
            labelled[field] += field in row
        failures = _field_failures(row, tags)
        wrong.update(failures.keys())
        report += [f"  {row['text']!r}: {field} {why}" for field, why in failures.items()]

    print(f"\nstyle phrase set: {len(rows)} phrases")
    for field in ("genre", "moods", "instruments", "vocal", "bpm", "key"):
        right = labelled[field] - wrong[field]
        print(f"  {field:<12} {right:>3}/{labelled[field]:<3} = {right / labelled[field]:.1%}")
    print("\n".join(report))

    assert (labelled["genre"] - wrong["genre"]) / labelled["genre"] >= MIN_GENRE_ACCURACY
    # Explicit tempo and key are parsed, not guessed: every labelled one must be exact.
    assert wrong["bpm"] == 0 and wrong["key"] == 0, report
    for field in ("moods", "instruments", "vocal"):
        assert (labelled[field] - wrong[field]) / labelled[field] >= 0.9, (field, report)


def test_same_text_same_tags_across_spelling_of_case_and_punctuation() -> None:
    first = normalize_style("Dreamy synth-pop, female vocals!")
    assert first == normalize_style("Dreamy synth-pop, female vocals!")
    assert first == normalize_style("dreamy  SYNTH pop female vocals")


def test_caption_order_and_content() -> None:
    tags = normalize_style("a happy dream pop song with acoustic guitar at 96 bpm in G major")
    assert (tags.genre, tags.subgenre) == ("indie pop", "dream pop")
    expected = [
        "indie pop",
        "dream pop",
        *tags.moods,
        *tags.instruments,
        "female vocals",
        "96 bpm",
        "G major",
    ]
    assert tags.caption == ", ".join(expected)
    assert tags.instruments[0] == "acoustic guitar"
    assert tags.moods == ["happy"]


@pytest.mark.parametrize("genre", GENRES, ids=lambda genre: genre.name)
def test_derived_bpm_within_genre_range(genre: Any) -> None:
    for text in (genre.name, f"slow {genre.name}", f"fast energetic {genre.name}"):
        tags = normalize_style(text)
        assert tags.genre == genre.name, text
        low, high = genre.bpm
        assert low <= tags.bpm <= high, (text, tags.bpm)


def test_tempo_words_and_mood_energy_move_bpm() -> None:
    assert normalize_style("slow house").bpm < normalize_style("fast house").bpm
    assert normalize_style("calm relaxing pop").bpm < normalize_style("energetic hype pop").bpm


def test_key_format_and_mode_from_mood() -> None:
    for row in _load_phrases():
        assert KEY_FORMAT.match(normalize_style(row["text"]).key), row["text"]
    assert normalize_style("sad heartbroken pop").key.endswith("minor")
    assert normalize_style("happy joyful rock").key.endswith("major")
    assert set(KEY_TONICS) == {key.split()[0] for key in ("C", "C#", "D", "Eb", "E", "F", "F#",
                                                          "G", "Ab", "A", "Bb", "B")}  # fmt: skip


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("in A minor", "A minor"),
        ("F# major", "F# major"),
        ("key of Bb", "Bb major"),
        ("C#m", "C# minor"),
        ("in the key of G# minor", "Ab minor"),
        ("in e flat major", "Eb major"),
        ("a major influence on me", None),
        ("Am I dreaming", None),
    ],
)
def test_explicit_key_parsing(text: str, key: str | None) -> None:
    tags = normalize_style(text)
    if key is None:
        assert tags.key != key and KEY_FORMAT.match(tags.key)
        assert normalize_style(text).key == tags.key
    else:
        assert tags.key == key


@pytest.mark.parametrize(
    ("text", "bpm"),
    [("at 128 bpm", 128), ("90bpm", 90), ("tempo 140", 140), ("bpm: 72", 72), ("300 bpm", 220)],
)
def test_explicit_bpm_parsing(text: str, bpm: int) -> None:
    assert normalize_style(text).bpm == bpm


def test_vocal_rules() -> None:
    assert normalize_style("rock", instrumental=True).vocal == "instrumental"
    assert normalize_style("pop").vocal == "female"
    assert normalize_style("rock").vocal == "male"
    assert normalize_style("classical").vocal == "instrumental"
    assert normalize_style("a pop song about a man I loved").vocal == "female"  # no vocal cue
    assert normalize_style("pop song sung by a man").vocal == "male"
    assert normalize_style("male and female vocals pop").vocal == "duet"
    assert normalize_style("techno instrumental only").vocal == "instrumental"


def test_instruments_explicit_first_then_genre_fill() -> None:
    tags = normalize_style("rock with harmonica")
    assert tags.instruments[0] == "harmonica"
    assert 1 < len(tags.instruments) <= 5
    assert normalize_style("piano only, sad").instruments == ["piano"]
    assert normalize_style("metal guitar").instruments[0] == "electric guitar"
    assert normalize_style("folk guitar song").instruments[0] == "acoustic guitar"


def test_fuzzy_matching_is_conservative() -> None:
    assert normalize_style("a song about a horse in the county").genre == "pop"
    assert normalize_style("a yellow submarine").moods == []
    assert normalize_style("eletronic").genre == "electronic"


def test_language_validation() -> None:
    assert normalize_style("pop", language="es").language == "es"
    assert normalize_style("pop", language="FR").language == "fr"
    for bad in ("", "eng", "e1", "english", "zh-CN"):
        assert normalize_style("pop", language=bad).language == "en"


@pytest.mark.parametrize("text", [None, "", "   ", "!!!"])
def test_empty_text_default(text: str | None) -> None:
    tags = normalize_style(text)
    assert (tags.genre, tags.subgenre, tags.family) == ("pop", None, "pop")
    assert (tags.bpm, tags.key, tags.vocal, tags.moods) == (120, "C major", "female", [])
    assert tags.caption.startswith("pop, ") and tags.caption.endswith("120 bpm, C major")


def test_to_dict_round_trip() -> None:
    tags = normalize_style("moody trip hop, 85 bpm")
    assert StyleTags.from_dict(tags.to_dict()) == tags


# --- vocabulary integrity ------------------------------------------------------------------------


def test_vocabulary_size() -> None:
    assert len(GENRES) >= 60
    assert len(MOODS) >= 30
    assert len(INSTRUMENTS) >= 40
    assert {vocal.name for vocal in VOCAL_TYPES} == {
        "male",
        "female",
        "duet",
        "choir",
        "instrumental",
    }
    assert list_genres() == sorted(genre.name for genre in GENRES)
    assert len(set(list_genres())) == len(GENRES)


def test_families_instruments_and_ranges_are_valid() -> None:
    instrument_names = {instrument.name for instrument in INSTRUMENTS}
    assert {family for family, _ in FAMILY_DEFAULT_VOCAL} == set(GENRE_FAMILIES)
    for genre in GENRES:
        assert genre.family in GENRE_FAMILIES, genre.name
        assert genre.mode in ("major", "minor", "either")
        assert 40 <= genre.bpm[0] < genre.bpm[1] <= 220, genre.name
        assert set(genre.instruments) <= instrument_names, genre.name
        assert genre.vocal in (None, "male", "female", "duet", "choir", "instrumental")
        for sub in genre.subgenres:
            assert set(sub.instruments) <= instrument_names, sub.name
            if sub.bpm:
                assert 40 <= sub.bpm[0] < sub.bpm[1] <= 220, sub.name
    for mood in MOODS:
        assert -1 <= mood.energy <= 1 and -1 <= mood.valence <= 1, mood.name


def test_every_genre_has_conventional_moods_from_the_vocabulary() -> None:
    mood_names = {mood.name for mood in MOODS}
    assert set(GENRE_TYPICAL_MOODS) == {genre.name for genre in GENRES}
    for genre, moods in GENRE_TYPICAL_MOODS.items():
        assert moods and set(moods) <= mood_names, genre
        assert len(set(moods)) == len(moods), genre


def test_no_phrase_has_two_meanings() -> None:
    conflicts = {
        " ".join(phrase): sorted(f"{t.kind}:{t.name}" for t in targets)
        for phrase, targets in _phrase_owners().items()
        if len(targets) > 1
    }
    assert conflicts == {}


def test_no_synonym_maps_to_two_genres() -> None:
    owner: dict[tuple[str, ...], str] = {}
    for genre in GENRES:
        phrases = [genre.name, *genre.synonyms]
        phrases += [p for sub in genre.subgenres for p in (sub.name, *sub.synonyms)]
        for phrase in map(phrase_tokens, phrases):
            assert owner.setdefault(phrase, genre.name) == genre.name, phrase
    hint_owner: dict[str, str] = {}
    for genre in GENRES:
        for hint in genre.hints:
            assert hint_owner.setdefault(hint, genre.name) == genre.name, hint


def test_required_aliases() -> None:
    expected = {
        "hip hop": "hip hop",
        "hip-hop": "hip hop",
        "hiphop": "hip hop",
        "rap": "hip hop",
        "edm": "edm",
        "lofi": "lo-fi hip hop",
        "lo-fi": "lo-fi hip hop",
        "r&b": "r&b",
        "rnb": "r&b",
    }
    for text, genre in expected.items():
        assert normalize_style(text).genre == genre, text
    required_instruments = [
        "808", "acoustic guitar", "electric guitar", "piano", "rhodes", "synth", "synth pad",
        "strings", "violin", "cello", "brass", "saxophone", "trumpet", "drums", "drum machine",
        "bass", "upright bass", "organ", "ukulele", "banjo", "harmonica", "flute",
    ]  # fmt: skip
    assert set(required_instruments) <= {instrument.name for instrument in INSTRUMENTS}
    for text, vocal in [
        ("girl singer", "female"),
        ("sung by a man", "male"),
        ("woman vocalist", "female"),
        ("boy band", "male"),
        ("no vocals", "instrumental"),
        ("instrumental only", "instrumental"),
    ]:
        assert normalize_style(text).vocal == vocal, text
