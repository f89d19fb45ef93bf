"""Free-text style → a controlled vocabulary of tags, and the caption string song models take.

Pure: no Ray, no network, no mutable module state. The lexical matcher is the weight-free default:
`normalize_style` maps a free-text description onto the vocabulary in `pipeline.vocabulary`.

How text is matched (see `normalize_style` for the output contract):
1. Normalise: lowercase, strip accents and apostrophes, split on anything but letters, digits and
   "&" ("Hip-Hop!" → hip hop; "R&B" → r&b). Chinese, Japanese and Korean script is cut into words
   against a glossary of music words in those languages (`CJK_MUSIC_WORDS`), each read as its
   English words: "朋克摇滚" → punk rock, "ロックバラード" → rock ballad (see `cjk_words`).
2. Correct spelling per word: a plural of a known word loses its "s"; an unknown word one typing
   slip (a letter added, dropped, changed, or two swapped) from a single-word genre or sub-genre
   name with the same first letter becomes that name ("raggae" → reggae, "punck" → punk,
   "dupstep" → dubstep), when exactly one name is that near (a genre's own name before a
   sub-genre's, before a synonym: "raggae" is reggae, not ragga; "fonk" is left alone); a word of
   four letters only by a swap ("pink" is no "punk", "disc" no "disco"), and never by dropping
   the name's last letter ("rancher" is no "ranchera"). Otherwise an unknown word of ≥ 5 letters
   is replaced by a vocabulary word with the same first letter when it is one adjacent
   transposition away ("reggea", "dubstpe"), or, from 8 letters on, when rapidfuzz's ratio is
   ≥ 88 ("eletronic", "psychadelic"); shorter words get no edit distance beyond that: at 5–7
   letters one edit turns real words into vocabulary words ("better" → "bitter", "stone" →
   "stoner"). Real words that still sit near vocabulary words ("county", "phone") are
   blocklisted.
3. Match phrases longest first (up to four words), never reusing a word: "drum and bass" beats
   "bass", "dream pop" beats "pop".
"""

from __future__ import annotations

import hashlib
import re
import statistics
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Literal

from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from pipeline.vocabulary import (
    CJK_MUSIC_WORDS,
    COMMON_TONICS,
    ELECTRIC_GUITAR_FAMILIES,
    FAMILY_DEFAULT_VOCAL,
    FUZZY_BLOCKLIST,
    GENERIC_GUITAR_WORDS,
    GENRE_TYPICAL_MOODS,
    GENRES,
    HANGUL_ENDINGS,
    INSTRUMENTS,
    MOODS,
    SOLO_WORDS,
    SONG_FORMS,
    TEMPO_WORDS,
    TONIC_SPELLINGS,
    VOCAL_CUES,
    VOCAL_TYPES,
    Genre,
    SubGenre,
)

# Coarse families the vocabulary groups genres into. Song models (the `sketch` arranger in
# particular) pick grooves and timbres by family, so every genre in the vocabulary names one.
GENRE_FAMILIES = (
    "pop", "rock", "metal", "punk", "electronic", "dance", "hiphop", "rnb", "soul", "funk",
    "jazz", "blues", "country", "folk", "latin", "reggae", "classical", "ambient", "world",
    "soundtrack", "gospel", "experimental",
)  # fmt: skip

KEY_TONICS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


@dataclass(frozen=True)
class StyleTags:
    """A normalised style. Field names match `POST /v1/tags/normalize` (plus `family`).

    genre / subgenre: canonical vocabulary names ("indie pop" / "dream pop"); subgenre may be None.
    family: one of GENRE_FAMILIES.
    moods: canonical mood words, most salient first ("happy", "melancholic", ...).
    bpm: integer tempo in beats per minute (40–220).
    key: "<tonic> <major|minor>" with the tonic from KEY_TONICS, e.g. "F# minor".
    instruments: canonical instrument names ("acoustic guitar", "piano", "808", ...).
    vocal: "male", "female", "duet", "choir" or "instrumental".
    language: ISO 639-1 code of the vocals.
    caption: the comma-separated tag string song models are conditioned on.
    """

    genre: str
    subgenre: str | None
    family: str
    moods: list[str] = field(default_factory=list)
    bpm: int = 120
    key: str = "C major"
    instruments: list[str] = field(default_factory=list)
    vocal: str = "female"
    language: str = "en"
    caption: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> StyleTags:
        return cls(**data)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Lexical normaliser
# ---------------------------------------------------------------------------------------------

DEFAULT_GENRE = "pop"
# Empty text carries no signal at all, so it gets the most neutral song there is.
DEFAULT_BPM = 120
DEFAULT_KEY = "C major"
MAX_MOODS = 4
MAX_INSTRUMENTS = 5
MIN_BPM, MAX_BPM = 40, 220

_VOCAL_CAPTIONS = MappingProxyType(
    {
        "male": "male vocals",
        "female": "female vocals",
        "duet": "duet",
        "choir": "choir",
        "instrumental": "instrumental",
    }
)

_TOKEN = re.compile(r"[a-z0-9&]+")
_LANGUAGE = re.compile(r"[a-z]{2}")

_PhraseKind = Literal["genre", "subgenre", "mood", "instrument", "vocal", "cued_vocal", "guitar"]
# Where a text's genre came from: a genre or sub-genre phrase, only a hint adjective ("jazzy"),
# or nothing (the genre is DEFAULT_GENRE).
GenreSource = Literal["phrase", "hint", "default"]


@dataclass(frozen=True)
class _Target:
    """What a vocabulary phrase means. `name` is the canonical name of the entry (for a subgenre,
    the subgenre's name) and `genre` the owning genre for genre/subgenre phrases."""

    kind: _PhraseKind
    name: str
    genre: str | None = None


@dataclass(frozen=True)
class PhraseMatch:
    """Vocabulary phrase `target` found at words[start:end] of a text (see `find_matches`)."""

    start: int
    end: int
    target: _Target


def phrase_tokens(text: str) -> tuple[str, ...]:
    """The normalised word sequence of a text: lowercase, accents and apostrophes dropped, split on
    every character but letters, digits and "&". Vocabulary phrases and user text both go through
    this, so spelling variants of punctuation ("hip-hop", "hip hop") meet.

    Text in Chinese, Japanese or Korean script is cut into words by `cjk_words`, and each word of
    the glossary (`CJK_MUSIC_WORDS`) becomes its English words: "伤感的流行歌" → ("sad", "的",
    "pop", "song"); the words it does not know stay as they are."""
    if not _CJK_OR_HALFWIDTH.search(text):
        return tuple(_latin_tokens(text))
    text = unicodedata.normalize("NFKC", text)
    tokens: list[str] = []
    position = 0
    for run in _CJK_RUN.finditer(text):
        tokens += _latin_tokens(text[position : run.start()])
        for word in cjk_words(run.group()):
            tokens += _CJK_ENGLISH.get(word, (word,))
        position = run.end()
    tokens += _latin_tokens(text[position:])
    return tuple(tokens)


def _latin_tokens(text: str) -> list[str]:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    plain = plain.replace("'", "").replace("\u2019", "")
    return _TOKEN.findall(plain)


# --- Chinese, Japanese and Korean script ---------------------------------------------------------

# Han (with 々), Hiragana, Katakana (with ー, without the ・ that separates words) and Hangul
# syllables. Half-width Katakana is folded to full width (NFKC) before runs are found.
_CJK_RUN = re.compile(
    "[\u3005\u3041-\u3096\u309d\u309e\u30a1-\u30fa\u30fc-\u30fe\u3400-\u4dbf"
    "\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7a3]+"
)
_CJK_OR_HALFWIDTH = re.compile(f"{_CJK_RUN.pattern[:-2]}\\uff65-\\uff9f]")
_KATAKANA, _HANGUL, _HAN = "katakana", "hangul", "han"  # script classes; Hiragana counts as Han
_CJK_ENGLISH: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {word: tuple(_latin_tokens(english)) for word, english in CJK_MUSIC_WORDS.items()}
)
_CJK_LONGEST = max(map(len, CJK_MUSIC_WORDS))
_HANGUL_ENDINGS = frozenset(HANGUL_ENDINGS)


def _script(char: str) -> str:
    if "\u30a1" <= char <= "\u30fe":
        return _KATAKANA
    if "\uac00" <= char <= "\ud7a3":
        return _HANGUL
    return _HAN


def cjk_words(run: str) -> list[str]:
    """A run of Chinese, Japanese or Korean script cut into words, in order.

    The run is first cut where the script class changes (Han with Hiragana, Katakana, Hangul),
    as Japanese text changes script at most word boundaries. Han and Hiragana, written without
    spaces, are cut by forward maximum matching against the glossary (`CJK_MUSIC_WORDS`): the
    longest glossary word at each position, the characters between glossary words kept together
    as one unknown word ("伤感的中文流行歌" → 伤感 / 的 / 中文 / 流行 / 歌). Katakana and Hangul
    words are read whole, because a glossary word inside a longer one is seldom that word
    ("ブロック" is no "ロック", "기록" no "록"): as glossary words, as an unknown modifier of two
    characters or more followed by glossary words ("アイドル" + "ポップ"), or in Hangul as
    glossary words followed by a particle or ending ("몽환" + "적인", `HANGUL_ENDINGS`); anything
    else stays one unknown word."""
    words: list[str] = []
    start = 0
    for end in range(1, len(run) + 1):
        if end == len(run) or _script(run[end]) != _script(run[start]):
            piece = run[start:end]
            if _script(piece[0]) == _HAN:
                words += _forward_maximum_match(piece)
            else:
                words += _compound(piece, particles=_script(piece[0]) == _HANGUL)
            start = end
    return words


def _forward_maximum_match(text: str) -> list[str]:
    words: list[str] = []
    unknown = 0
    position = 0
    while position < len(text):
        size = next(
            (
                size
                for size in range(min(_CJK_LONGEST, len(text) - position), 0, -1)
                if text[position : position + size] in CJK_MUSIC_WORDS
            ),
            0,
        )
        if not size:
            position += 1
            continue
        if unknown < position:
            words.append(text[unknown:position])
        words.append(text[position : position + size])
        position += size
        unknown = position
    if unknown < len(text):
        words.append(text[unknown:])
    return words


def _glossary_split(text: str) -> list[str] | None:
    """`text` as a sequence of glossary words (longest first), or None."""
    if not text:
        return []
    for size in range(min(_CJK_LONGEST, len(text)), 0, -1):
        if text[:size] in CJK_MUSIC_WORDS:
            rest = _glossary_split(text[size:])
            if rest is not None:
                return [text[:size], *rest]
    return None


def _compound(word: str, *, particles: bool) -> list[str]:
    whole = _glossary_split(word)
    if whole is not None:
        return whole
    for cut in range(2, len(word) - 1):
        tail = _glossary_split(word[cut:])
        if tail is not None:
            return [word[:cut], *tail]
    if particles:
        for cut in range(len(word) - 1, 0, -1):
            head = _glossary_split(word[:cut])
            if head is not None and word[cut:] in _HANGUL_ENDINGS:
                return [*head, word[cut:]]
    return [word]


def english_rendering(text: str) -> str:
    """`text` with every run of Chinese, Japanese or Korean script replaced by the English words of
    the glossary words in it, and its unknown words dropped: what an English-only reader of the
    text (such as an English sentence encoder) can use. "切ないピアノバラード, 80 bpm" →
    " wistful piano ballad , 80 bpm". Text without such script comes back unchanged."""
    if not _CJK_OR_HALFWIDTH.search(text):
        return text
    text = unicodedata.normalize("NFKC", text)
    pieces: list[str] = []
    position = 0
    for run in _CJK_RUN.finditer(text):
        english = [CJK_MUSIC_WORDS[word] for word in cjk_words(run.group()) if word in _CJK_ENGLISH]
        pieces += [text[position : run.start()], " ", " ".join(english), " "]
        position = run.end()
    return "".join([*pieces, text[position:]])


def _vocabulary_phrases() -> Iterable[tuple[tuple[str, ...], _Target]]:
    """Every (phrase, meaning) pair of the vocabulary, canonical names included."""
    for genre in GENRES:
        for phrase in (genre.name, *genre.synonyms):
            yield phrase_tokens(phrase), _Target("genre", genre.name, genre.name)
        for sub in genre.subgenres:
            for phrase in (sub.name, *sub.synonyms):
                yield phrase_tokens(phrase), _Target("subgenre", sub.name, genre.name)
    for mood in MOODS:
        for phrase in (mood.name, *mood.synonyms):
            yield phrase_tokens(phrase), _Target("mood", mood.name)
    for instrument in INSTRUMENTS:
        for phrase in (instrument.name, *instrument.synonyms):
            yield phrase_tokens(phrase), _Target("instrument", instrument.name)
    for vocal in VOCAL_TYPES:
        for phrase in (vocal.name, *vocal.synonyms):
            yield phrase_tokens(phrase), _Target("vocal", vocal.name)
        for phrase in vocal.cued_synonyms:
            yield phrase_tokens(phrase), _Target("cued_vocal", vocal.name)
    for phrase in GENERIC_GUITAR_WORDS:
        yield phrase_tokens(phrase), _Target("guitar", "guitar")


def _phrase_owners() -> dict[tuple[str, ...], set[_Target]]:
    """Phrase → every meaning the vocabulary gives it (more than one is a vocabulary bug)."""
    owners: dict[tuple[str, ...], set[_Target]] = {}
    for phrase, target in _vocabulary_phrases():
        owners.setdefault(phrase, set()).add(target)
    return owners


def _build_phrase_table() -> Mapping[tuple[str, ...], _Target]:
    table: dict[tuple[str, ...], _Target] = {}
    for phrase, targets in _phrase_owners().items():
        if len(targets) > 1:
            raise ValueError(f"vocabulary phrase {' '.join(phrase)!r} has several meanings")
        (table[phrase],) = targets
    return MappingProxyType(table)


_PHRASES = _build_phrase_table()
_MAX_PHRASE_WORDS = max(len(phrase) for phrase in _PHRASES)
GENRES_BY_NAME = MappingProxyType({genre.name: genre for genre in GENRES})
GENRE_HINTS = MappingProxyType({hint: genre.name for genre in GENRES for hint in genre.hints})
_MOODS_BY_NAME = MappingProxyType({mood.name: mood for mood in MOODS})
_TEMPO_WORDS = MappingProxyType({phrase_tokens(word): shift for word, shift in TEMPO_WORDS})
_FAMILY_VOCAL = MappingProxyType(dict(FAMILY_DEFAULT_VOCAL))
_TONICS = MappingProxyType(dict(TONIC_SPELLINGS))
_COMMON_TONICS = MappingProxyType(dict(COMMON_TONICS))
_VOCAL_CUES = frozenset(VOCAL_CUES)
_SOLO_WORDS = frozenset(SOLO_WORDS)
_SONG_FORMS = frozenset(map(phrase_tokens, SONG_FORMS))
KNOWN_WORDS = frozenset(
    {word for phrase in _PHRASES for word in phrase}
    | set(GENRE_HINTS)
    | {word for phrase in _TEMPO_WORDS for word in phrase}
    | _VOCAL_CUES
    | _SOLO_WORDS
)
_FUZZY_BLOCKED = frozenset(FUZZY_BLOCKLIST)
# Only longer vocabulary words are fuzzy targets: short ones ("pop", "rap", "emo") are one typo
# away from too many ordinary words.
_FUZZY_TARGETS = tuple(sorted(word for word in KNOWN_WORDS if len(word) >= 5 and word.isalpha()))


def _genre_name_words() -> dict[str, dict[str, int]]:
    """First letter → {single-word genre or sub-genre phrase of ≥ 4 letters: rank}, rank 0 for a
    genre's name, 1 for a sub-genre's, 2 for a synonym."""
    ranks: dict[str, int] = {}
    for genre in GENRES:
        named = [(genre.name, 0), *((phrase, 2) for phrase in genre.synonyms)]
        for sub in genre.subgenres:
            named += [(sub.name, 1), *((phrase, 2) for phrase in sub.synonyms)]
        for phrase, rank in named:
            words = phrase_tokens(phrase)
            if len(words) == 1 and len(words[0]) >= 4 and words[0].isalpha():
                ranks[words[0]] = min(rank, ranks.get(words[0], rank))
    by_letter: dict[str, dict[str, int]] = {}
    for word, rank in ranks.items():
        by_letter.setdefault(word[0], {})[word] = rank
    return by_letter


_GENRE_NAME_WORDS = MappingProxyType(
    {letter: MappingProxyType(words) for letter, words in _genre_name_words().items()}
)


def _genre_name_typo(word: str) -> str | None:
    """The genre word `word` is one typing slip from (see the module doc), or None when there is
    none or several equally likely ones."""
    found: list[tuple[int, str]] = []
    for target, rank in _GENRE_NAME_WORDS.get(word[0], {}).items():
        if abs(len(target) - len(word)) > 1 or OSA.distance(word, target, score_cutoff=1) > 1:
            continue
        if len(word) == 4 and not (len(target) == 4 and _is_adjacent_transposition(word, target)):
            continue  # "pink", "fund", "disc", "nose": one slip in four letters is another word
        if word == target[:-1]:
            continue  # "rancher", "american": a genre name short of its ending is another word
        found.append((rank, target))
    if not found:
        return None
    best = min(rank for rank, _ in found)
    winners = {target for rank, target in found if rank == best}
    return winners.pop() if len(winners) == 1 else None


def correct_word(word: str) -> str:
    """Map a possibly misspelt word onto a vocabulary word, conservatively (see module doc)."""
    if word in KNOWN_WORDS or not word.isalpha() or not word.isascii():
        return word
    if len(word) >= 4 and word.endswith("s") and word[:-1] in KNOWN_WORDS:
        return word[:-1]
    if len(word) < 4 or word in _FUZZY_BLOCKED:
        return word
    typo = _genre_name_typo(word)
    if typo is not None:
        return typo
    if len(word) < 5:
        return word
    candidates = [target for target in _FUZZY_TARGETS if target[0] == word[0]]
    if len(word) >= 8:
        # One edit in eight letters is still ≥ 88; "children" → "childrens" is a plural, no typo.
        best = process.extractOne(
            word, [t for t in candidates if t != word + "s"], scorer=fuzz.ratio, score_cutoff=88
        )
        if best is not None:
            return str(best[0])
    for target in candidates:
        if len(target) == len(word) and _is_adjacent_transposition(word, target):
            return target
    return word


def _is_adjacent_transposition(word: str, target: str) -> bool:
    """True when swapping one pair of neighbouring letters of `word` gives `target`."""
    diffs = [i for i, (a, b) in enumerate(zip(word, target, strict=True)) if a != b]
    return (
        len(diffs) == 2
        and diffs[1] == diffs[0] + 1
        and word[diffs[0]] == target[diffs[1]]
        and word[diffs[1]] == target[diffs[0]]
    )


def _near_vocal_cue(words: tuple[str, ...], start: int, end: int) -> bool:
    window = words[max(0, start - 2) : end + 2]
    return any(word in _VOCAL_CUES for word in window)


def find_matches(words: tuple[str, ...]) -> tuple[list[PhraseMatch], list[bool]]:
    """Longest-first, non-overlapping phrase matches in text order, and which words they used."""
    used = [False] * len(words)
    matches: list[PhraseMatch] = []
    for size in range(min(_MAX_PHRASE_WORDS, len(words)), 0, -1):
        for start in range(len(words) - size + 1):
            end = start + size
            if any(used[start:end]):
                continue
            target = _PHRASES.get(words[start:end])
            if target is None:
                continue
            if target.kind == "cued_vocal" and not _near_vocal_cue(words, start, end):
                continue
            matches.append(PhraseMatch(start, end, target))
            used[start:end] = [True] * size
    matches.sort(key=lambda match: match.start)
    return matches, used


def _contains(phrase: tuple[str, ...], part: tuple[str, ...]) -> bool:
    size = len(part)
    return any(phrase[i : i + size] == part for i in range(len(phrase) - size + 1))


def _genre_phrases(genre: Genre) -> list[tuple[str, ...]]:
    return [phrase_tokens(phrase) for phrase in (genre.name, *genre.synonyms)]


@dataclass(frozen=True)
class _GenreMention:
    """A genre named in the text: by a phrase (`sub` set for a sub-genre phrase) or a hint."""

    genre: Genre
    sub: SubGenre | None
    words: tuple[str, ...]


def _combined_subgenre(first: _GenreMention, second: _GenreMention) -> _GenreMention | None:
    """A sub-genre of one mentioned genre whose own phrase contains the other mention's words:
    "hip hop … jazz" → hip hop / "jazz rap" (synonym "jazz hip hop"), "rock … pop" → rock /
    "pop rock". The first mention's genre is tried as the owner first."""
    for owner, other in ((first, second), (second, first)):
        owner_phrases = _genre_phrases(owner.genre)
        for sub in owner.genre.subgenres:
            for phrase in map(phrase_tokens, (sub.name, *sub.synonyms)):
                if _contains(phrase, other.words) and any(
                    _contains(phrase, part) for part in owner_phrases
                ):
                    return _GenreMention(owner.genre, sub, phrase)
    return None


def _resolve_genre(
    matches: list[PhraseMatch], words: tuple[str, ...]
) -> tuple[Genre, SubGenre | None]:
    """The (genre, subgenre) the text asks for.

    The first genre or sub-genre phrase in the text is the primary one (no phrase → the first hint
    adjective such as "jazzy", else DEFAULT_GENRE), unless it names a song form (`SONG_FORMS`:
    "ballad") and another genre is named by a later phrase or a hint: then that one is. A plain
    primary genre then takes the first later sub-genre of its own, else a sub-genre combining it
    with a later genre phrase or hint (the song form included: "ballad … rock" → rock / power
    ballad); any other genre is dropped.
    """
    mentions = [
        _GenreMention(
            GENRES_BY_NAME[str(m.target.genre)],
            _subgenre(GENRES_BY_NAME[str(m.target.genre)], m.target.name)
            if m.target.kind == "subgenre"
            else None,
            words[m.start : m.end],
        )
        for m in matches
        if m.target.kind in ("genre", "subgenre")
    ]
    hints = [
        _GenreMention(GENRES_BY_NAME[GENRE_HINTS[w]], None, (w,)) for w in words if w in GENRE_HINTS
    ]
    if not mentions:
        if hints:
            return hints[0].genre, None
        return GENRES_BY_NAME[DEFAULT_GENRE], None
    primary = mentions[0]
    if primary.words in _SONG_FORMS:
        style = next((m for m in [*mentions[1:], *hints] if m.genre != primary.genre), None)
        if style is not None:
            mentions = [style, *(mention for mention in mentions if mention is not style)]
            primary = style
    if primary.sub is not None:
        return primary.genre, primary.sub
    for mention in mentions[1:]:
        if mention.sub is not None and mention.genre == primary.genre:
            return primary.genre, mention.sub
    for mention in [*mentions[1:], *hints]:
        if mention.genre != primary.genre:
            combined = _combined_subgenre(primary, mention)
            if combined is not None:
                return combined.genre, combined.sub
    return primary.genre, None


def genre_source(matches: list[PhraseMatch], words: tuple[str, ...]) -> GenreSource:
    """How `words` (with their `find_matches` result) named the genre `_resolve_genre` picks."""
    if any(match.target.kind in ("genre", "subgenre") for match in matches):
        return "phrase"
    if any(word in GENRE_HINTS for word in words):
        return "hint"
    return "default"


def _subgenre(genre: Genre, name: str) -> SubGenre:
    return next(sub for sub in genre.subgenres if sub.name == name)


def _digest(text: str, purpose: str) -> int:
    """A stable integer from the text (hashlib, not hash(): that one is salted per process)."""
    return int.from_bytes(hashlib.sha256(f"{purpose}\x00{text}".encode()).digest()[:8], "big")


# --- explicit tempo and key ----------------------------------------------------------------------

_BPM_RANGE = re.compile(r"\b(\d{2,3})\s*(?:-|–|to)\s*(\d{2,3})\s*(?:bpm|beats per minute)\b")
_BPM_AFTER = re.compile(r"\b(\d{2,3})\s*-?\s*(?:bpm|beats per minute|beats a minute)\b")
_BPM_BEFORE = re.compile(r"\b(?:bpm|tempo)\s*(?:of|is|at|around|about|:|=|~)?\s*(\d{2,3})\b")

_ACCIDENTAL = r"#|♯|b|♭|-?\s?sharp|-?\s?flat"
_KEY_CONTEXT = r"(?:\bin\s+(?:the\s+key\s+of\s+)?|\bkey\s*(?:of|:|=)?\s*)"
# "F# major", "a minor", "Bb min": any tonic case, but a lowercase one needs "in"/"key" before
# it, so that "a major influence" is not read as A major.
_KEY_WITH_MODE = re.compile(
    rf"(?P<context>{_KEY_CONTEXT})?(?<![A-Za-z#])(?P<tonic>[A-Ga-g])(?P<acc>{_ACCIDENTAL})?"
    r"\s*-?\s*(?P<mode>major|minor|maj|min)\b",
    re.IGNORECASE,
)
# "C#m", "Ebm" anywhere; a bare "Am"/"Em" only after "in"/"key" ("Am I dreaming" is no key).
_KEY_SHORT_MINOR = re.compile(
    rf"(?P<context>{_KEY_CONTEXT})?(?<![A-Za-z#])(?P<tonic>[A-G])(?P<acc>#|♯|b|♭)?m(?![A-Za-z])"
)
# "key of Bb", "in F#": a tonic with no mode reads as major, the musician's default.
_KEY_NO_MODE = re.compile(
    rf"(?:{_KEY_CONTEXT})(?P<tonic>[A-Ga-g])(?P<acc>#|♯|b|♭|\s?sharp|\s?flat)?(?![A-Za-z])",
    re.IGNORECASE,
)


def _explicit_bpm(text: str) -> int | None:
    lowered = text.lower()
    ranged = _BPM_RANGE.search(lowered)
    if ranged:
        value = (int(ranged.group(1)) + int(ranged.group(2))) / 2
    else:
        single = _BPM_AFTER.search(lowered) or _BPM_BEFORE.search(lowered)
        if single is None:
            return None
        value = int(single.group(1))
    return int(min(MAX_BPM, max(MIN_BPM, round(value))))


def _tonic(letter: str, accidental: str | None) -> str | None:
    accidental = (accidental or "").strip(" -").lower()
    sign = (
        "#"
        if accidental in ("#", "♯", "sharp")
        else "b"
        if accidental in ("b", "♭", "flat")
        else ""
    )
    return _TONICS.get(letter.upper() + sign)


def _explicit_key(text: str) -> str | None:
    for found in _KEY_WITH_MODE.finditer(text):
        if found.group("tonic").islower() and not (found.group("context") or found.group("acc")):
            continue
        tonic = _tonic(found.group("tonic"), found.group("acc"))
        if tonic is not None:
            mode = "minor" if found.group("mode").lower().startswith("mi") else "major"
            return f"{tonic} {mode}"
    for found in _KEY_SHORT_MINOR.finditer(text):
        if not (found.group("acc") or found.group("context")):
            continue
        tonic = _tonic(found.group("tonic"), found.group("acc"))
        if tonic is not None:
            return f"{tonic} minor"
    for found in _KEY_NO_MODE.finditer(text):
        bare_lowercase = found.group("tonic").islower() and not found.group("acc")
        if bare_lowercase and not re.search(r"key", found.group(0), re.IGNORECASE):
            continue  # "in a" / "in e" are words, not keys
        tonic = _tonic(found.group("tonic"), found.group("acc"))
        if tonic is not None:
            return f"{tonic} major"
    return None


# --- public API ----------------------------------------------------------------------------------


def list_genres() -> list[str]:
    """Canonical genre names of the vocabulary, sorted alphabetically."""
    return sorted(genre.name for genre in GENRES)


def normalize_style(
    text: str | None, *, language: str = "en", instrumental: bool = False
) -> StyleTags:
    """Map a free-text style description onto the controlled vocabulary.

    Deterministic: the same text (after normalisation, so case and punctuation do not matter)
    always gives the same tags; nothing is random and hashing uses hashlib.

    - genre/subgenre/family: the first genre or sub-genre named wins (a sub-genre implies its
      genre; a song form, `SONG_FORMS`, gives way to a genre named later or hinted: "a ballad in
      bossa nova style" → bossa nova); a plain genre picks up a later sub-genre of its own or a
      sub-genre combining it with a later genre ("jazz … hip hop" → hip hop / jazz rap);
      otherwise later genres are dropped.
      No genre named → a hint adjective ("jazzy" → jazz) or else "pop".
    - moods: canonical moods in text order, at most MAX_MOODS. A text that names a genre (or a
      hint of one) but no mood gets the genre's conventional moods (`GENRE_TYPICAL_MOODS`:
      "thrash metal with fast palm-muted riffs" → aggressive, intense); one that names neither
      gets none.
    - bpm: an explicit tempo ("128 bpm", "90bpm", "tempo 140", "120-130 bpm" → 125) clamped to
      40–220; else a point in the (sub-)genre's range: the middle, moved up to ±40 % of the range by
      tempo words ("slow", "fast") or else the mean energy of the moods the text named (not of
      conventional moods: the genre's range already holds its convention), plus a small hash
      offset.
    - key: an explicit key ("in A minor", "F# major", "key of Bb" → Bb major, "C#m"); enharmonic
      spellings fold onto KEY_TONICS (G# → Ab). Else the mode is minor when moods are negative on
      average (valence < -0.15), major when positive (> 0.15), else the genre's mode tendency (a
      hash bit for "either"); only named moods count, as for bpm. The tonic is a hash pick among
      the keys songs are commonly in.
    - instruments: named ones in text order, then the (sub-)genre's typical instruments up to
      MAX_INSTRUMENTS, unless the text says "solo", "only" or "just". A bare "guitar" is electric
      in rock, metal, punk, blues and funk, acoustic elsewhere.
    - vocal: `instrumental=True` → "instrumental"; else vocal words in the text (male and female
      both named → "duet"); else the genre's default, else its family's (female for pop, R&B,
      soul, electronic, dance and jazz; male for rock, metal, punk, hip hop, country, folk, blues,
      funk, latin, reggae, world; instrumental for classical, ambient, soundtrack, experimental;
      choir for gospel).
    - language: lowercased and kept when it is two ASCII letters, else "en".
    - caption: "genre, subgenre, moods…, instruments…, vocal, <bpm> bpm, <key>", e.g. "indie pop,
      dream pop, happy, acoustic guitar, synth, female vocals, 96 bpm, G major"; the vocal part
      is "male vocals", "female vocals", "duet", "choir" or "instrumental".

    Empty or None text → pop, no moods, DEFAULT_BPM (120), DEFAULT_KEY ("C major"), pop's typical
    instruments, female vocals (or instrumental when asked).
    """
    raw = text or ""
    words = tuple(correct_word(word) for word in phrase_tokens(raw))
    matches, _ = find_matches(words)
    genre, subgenre = _resolve_genre(matches, words)

    moods: list[str] = []
    for match in matches:
        if match.target.kind == "mood" and match.target.name not in moods:
            moods.append(match.target.name)
    moods = moods[:MAX_MOODS]

    return style_for(
        raw,
        genre,
        subgenre,
        moods,
        genre_from_text=genre_source(matches, words) != "default",
        language=language,
        instrumental=instrumental,
    )


def style_for(
    text: str | None,
    genre: Genre,
    subgenre: SubGenre | None,
    moods: list[str],
    *,
    genre_from_text: bool = False,
    conventions_lead: bool = False,
    language: str = "en",
    instrumental: bool = False,
) -> StyleTags:
    """The tags of `text` once its genre, sub-genre and moods are decided (by `normalize_style`,
    or by another matcher): instruments, vocal, bpm, key and caption follow from them and from
    `text` by the lexicon's rules, with the same per-text fingerprint, so the same decision gives
    the same tags whoever made it.

    `moods` are the moods the text gave (named, or found by the matcher). When there are none
    and `genre_from_text` says the genre was read from the text rather than defaulted, the
    genre's conventional moods (`GENRE_TYPICAL_MOODS`) become the tags' moods; bpm and key are
    derived from the given moods only, so conventional moods change the moods and the caption
    and nothing else. `conventions_lead` puts the conventional moods ahead of given ones that
    were inferred rather than named (the semantic engine's, for a text that named its genre),
    up to MAX_MOODS."""
    raw = text or ""
    words = tuple(correct_word(word) for word in phrase_tokens(raw))
    language_code = (language or "").strip().lower()
    language_code = language_code if _LANGUAGE.fullmatch(language_code) else "en"
    fingerprint = " ".join(words)
    matches, used = find_matches(words)
    instruments = _instruments(matches, words, used, genre, subgenre)
    vocal = "instrumental" if instrumental else _vocal(matches, genre)

    if not words:
        bpm, key = DEFAULT_BPM, DEFAULT_KEY
    else:
        bpm = _explicit_bpm(raw) or _derived_bpm(words, moods, genre, subgenre, fingerprint)
        key = _explicit_key(raw) or _derived_key(moods, genre, fingerprint)
    if genre_from_text and (conventions_lead or not moods):
        moods = list(dict.fromkeys([*GENRE_TYPICAL_MOODS[genre.name], *moods]))[:MAX_MOODS]

    subgenre_name = subgenre.name if subgenre else None
    caption_parts = [genre.name, *([subgenre_name] if subgenre_name else []), *moods, *instruments]
    caption_parts += [_VOCAL_CAPTIONS[vocal], f"{bpm} bpm", key]
    return StyleTags(
        genre=genre.name,
        subgenre=subgenre_name,
        family=genre.family,
        moods=moods,
        bpm=bpm,
        key=key,
        instruments=instruments,
        vocal=vocal,
        language=language_code,
        caption=", ".join(caption_parts),
    )


def _instruments(
    matches: list[PhraseMatch],
    words: tuple[str, ...],
    used: list[bool],
    genre: Genre,
    subgenre: SubGenre | None,
) -> list[str]:
    generic_guitar = (
        "electric guitar" if genre.family in ELECTRIC_GUITAR_FAMILIES else "acoustic guitar"
    )
    named: list[str] = []
    for match in matches:
        if match.target.kind == "instrument":
            name = match.target.name
        elif match.target.kind == "guitar":
            name = generic_guitar
        else:
            continue
        if name not in named:
            named.append(name)
    solo = any(word in _SOLO_WORDS and not used[i] for i, word in enumerate(words))
    if solo and named:
        return named[:MAX_INSTRUMENTS]
    typical = subgenre.instruments if subgenre and subgenre.instruments else genre.instruments
    for name in typical:
        if len(named) >= MAX_INSTRUMENTS:
            break
        if name not in named:
            named.append(name)
    return named[:MAX_INSTRUMENTS]


def _vocal(matches: list[PhraseMatch], genre: Genre) -> str:
    named = [m.target.name for m in matches if m.target.kind in ("vocal", "cued_vocal")]
    if "male" in named and "female" in named:
        return "duet"
    if named:
        return named[0]
    return genre.vocal or _FAMILY_VOCAL.get(genre.family, "female")


def _derived_bpm(
    words: tuple[str, ...],
    moods: list[str],
    genre: Genre,
    subgenre: SubGenre | None,
    fingerprint: str,
) -> int:
    low, high = subgenre.bpm if subgenre and subgenre.bpm else genre.bpm
    tempo_shifts = [
        shift
        for size in (2, 1)
        for i in range(len(words) - size + 1)
        if (shift := _TEMPO_WORDS.get(words[i : i + size])) is not None
    ]
    if tempo_shifts:
        energy = statistics.fmean(tempo_shifts)
    elif moods:
        energy = statistics.fmean(_MOODS_BY_NAME[name].energy for name in moods)
    else:
        energy = 0.0
    # ±8 % of the range from the hash keeps two different texts of one genre off the same tempo.
    jitter = (_digest(fingerprint, "bpm") % 1601) / 10000 - 0.08
    position = min(1.0, max(0.0, 0.5 + 0.4 * energy + jitter))
    return int(min(MAX_BPM, max(MIN_BPM, round(low + position * (high - low)))))


def _derived_key(moods: list[str], genre: Genre, fingerprint: str) -> str:
    valence = statistics.fmean(_MOODS_BY_NAME[m].valence for m in moods) if moods else 0.0
    if valence < -0.15:
        mode = "minor"
    elif valence > 0.15:
        mode = "major"
    elif genre.mode != "either":
        mode = genre.mode
    else:
        mode = ("major", "minor")[_digest(fingerprint, "mode") % 2]
    tonics = _COMMON_TONICS[mode]
    return f"{tonics[_digest(fingerprint, 'tonic') % len(tonics)]} {mode}"
