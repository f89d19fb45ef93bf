"""Lyrics as data: section parsing/formatting, syllables, and the weight-free `template` writer.

Pure: no Ray, no network, no mutable module state (randomness comes from a local
`random.Random` seeded from the request).
"""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata
from dataclasses import dataclass, field
from itertools import pairwise
from types import MappingProxyType

from pipeline.vocabulary import GENRES, INSTRUMENTS, MOODS, TEMPO_WORDS, VOCAL_TYPES

# Section tags every engine and model understands, in the order a song usually uses them.
SECTION_TAGS = ("intro", "verse", "pre-chorus", "chorus", "bridge", "outro")


@dataclass(frozen=True)
class LyricSection:
    """One section of a song: a canonical tag from SECTION_TAGS and its sung lines (may be empty
    for instrumental sections such as an intro)."""

    tag: str
    lines: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Syllables
# ---------------------------------------------------------------------------------------------

_VOWELS = "aeiouyàáâãäåæèéêëìíîïòóôõöøœùúûüýÿ"
_VOWEL_GROUP = re.compile(rf"[{_VOWELS}]+", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)
# Consonant pairs that start syllables together ("mo-ther", "a-gree"), so a cut goes before them.
_ONSETS = frozenset(
    ("bl", "br", "ch", "cl", "cr", "dr", "fl", "fr", "gl", "gr", "kn", "ph", "pl", "pr", "qu",
     "sc", "sh", "sk", "sl", "sm", "sn", "sp", "st", "sw", "th", "tr", "tw", "wh", "wr")
)  # fmt: skip
# Vowel pairs sung as two syllables ("pi-a-no", "ra-di-o", "vi-de-o"; "ea" only word-final:
# "i-de-a", but "heart", "dream").
_HIATUS = ("ia", "io", "eo", "iu", "ea")


def _nuclei(word: str) -> list[tuple[int, int]]:
    """Spans of the vowel nuclei of a word (one per syllable), by English-leaning heuristics."""
    lower = word.lower()
    spans: list[tuple[int, int]] = []
    for group in _VOWEL_GROUP.finditer(lower):
        start, end = group.span()
        if start == 0 and lower[0] == "y" and end > 1:
            start = 1  # a leading "y" is a consonant ("you", "yellow")
        text = lower[start:end]
        # After c/t/s/g/x the pair is one syllable ("nation", "special", "region"); after other
        # consonants it is two ("piano", "radio", "video").
        after_softener = start > 0 and lower[start - 1] in "ctsgx"
        split_at = next(
            (i for i in range(len(text) - 1) if text[i : i + 2] in _HIATUS),
            None,
        )
        if after_softener:
            split_at = None
        if split_at is not None and not (
            text[split_at : split_at + 2] == "ea" and end < len(lower)
        ):
            spans += [(start, start + split_at + 1), (start + split_at + 1, end)]
        else:
            spans.append((start, end))
    if len(spans) > 1:
        tail = lower[spans[-1][0] :]
        # Silent endings: "home", "times", "walked" (but "little", "wanted", "roses" keep theirs).
        silent_e = tail == "e" and not (
            lower.endswith("le") and len(lower) > 2 and lower[-3] not in _VOWELS
        )
        silent_es = tail == "es" and not lower.endswith(
            ("ses", "xes", "zes", "ches", "shes", "ges", "ces")
        )
        silent_ed = tail == "ed" and not lower.endswith(("ted", "ded"))
        if silent_e or silent_es or silent_ed:
            spans.pop()
    return spans


def split_syllables(line: str) -> list[str]:
    """Split a sung line into approximate syllables (an English-leaning vowel-group heuristic).

    Every word yields at least one syllable, so the count is ≥ the word count, and a word's
    syllables concatenate back to the word. Consonants between two vowels go to the next syllable
    ("mu-sic"), a cluster is split before its last consonant unless the last two start syllables
    together ("gar-den", "bro-ther"). Silent final "e", "es", "ed" are dropped ("home", "walked"),
    and "ia"/"io"/"eo" are two syllables ("pi-a-no"). Used to give a melody one note per syllable;
    it does not need to be linguistically exact (other languages are approximated the same way,
    so e.g. Spanish "noche" loses its final syllable).
    """
    syllables: list[str] = []
    for word in _WORD.findall(line):
        nuclei = _nuclei(word)
        if len(nuclei) <= 1:
            syllables.append(word)
            continue
        cuts = [0]
        for (_, prev_end), (next_start, _) in pairwise(nuclei):
            cluster = word[prev_end:next_start].lower()
            if len(cluster) <= 1:
                cuts.append(prev_end)
            elif next_start == len(word) - 1 and word.lower().endswith("le"):
                cuts.append(next_start - 2)  # "lit-tle", "ta-ble": the "-Cle" stays whole
            elif cluster[-2:] in _ONSETS:
                cuts.append(next_start - 2)
            else:
                cuts.append(next_start - 1)
        cuts.append(len(word))
        syllables.extend(word[a:b] for a, b in pairwise(cuts) if word[a:b])
    return syllables


# ---------------------------------------------------------------------------------------------
# Parsing and formatting
# ---------------------------------------------------------------------------------------------

_TAG_LINE = re.compile(r"^\s*\[([^\]]*)\]\s*$|^\s*\(([^)]*)\)\s*$|^\s*([A-Za-z][\w -]*):\s*$")
_TAG_ALIASES = MappingProxyType(
    {
        "intro": "intro",
        "verse": "verse",
        "pre-chorus": "pre-chorus",
        "prechorus": "pre-chorus",
        "pre chorus": "pre-chorus",
        "pre": "pre-chorus",
        "build": "pre-chorus",
        "lift": "pre-chorus",
        "chorus": "chorus",
        "hook": "chorus",
        "refrain": "chorus",
        "post-chorus": "chorus",
        "bridge": "bridge",
        "middle 8": "bridge",
        "middle eight": "bridge",
        "outro": "outro",
        "ending": "outro",
        "end": "outro",
        "coda": "outro",
        "fade out": "outro",
    }
)
_INSTRUMENTAL_TAGS = ("intro", "outro")


def _section_tag(label: str) -> str:
    """Canonical tag of a section label: "Verse 2: Jay" → verse, "HOOK x2" → chorus; unknown
    labels ("Solo", "Interlude") → verse."""
    words = re.sub(r"[^a-z -]+", " ", label.lower().split(":")[0]).split()
    words = [w for w in words if not re.fullmatch(r"x?\d*|x", w)]
    text = " ".join(words)
    if text in _TAG_ALIASES:
        return _TAG_ALIASES[text]
    for size in (2, 1):
        for i in range(len(words) - size + 1):
            candidate = " ".join(words[i : i + size])
            if candidate in _TAG_ALIASES:
                return _TAG_ALIASES[candidate]
    return "verse"


def known_section_tag(label: str) -> str | None:
    """The canonical tag of a section label when it names a known section ("Verse 2" → verse,
    "HOOK x2" → chorus), else None ("Guitar Solo", "Spoken word")."""
    tag = _section_tag(label)
    return tag if tag != "verse" or "verse" in label.lower() else None


def _tag_of_line(line: str) -> str | None:
    """The canonical tag if the line is a section header, else None. "[...]" is always a header;
    "(...)" and "Label:" only when the label is a known section word, since "(ooh, ooh)" is a
    sung backing line."""
    match = _TAG_LINE.match(line)
    if not match:
        return None
    bracketed, parenthesised, colon = match.groups()
    if bracketed is not None:
        return _section_tag(bracketed)
    label = parenthesised if parenthesised is not None else colon
    tag = _section_tag(label)
    known = tag != "verse" or "verse" in label.lower()
    return tag if known else None


def parse_lyrics(text: str) -> list[LyricSection]:
    """Parse user lyrics into sections.

    Headers: "[verse]", "[Verse 1]", "[CHORUS]", "[pre-chorus]", "[Bridge]", "[intro]", "[outro]",
    "[hook]"/"[refrain]" → chorus, any other "[label]" → verse; "(Chorus)" and "Chorus:" lines
    count when the label is a known section word. Lines before any header form a verse. Lines are
    whitespace-stripped (inner runs collapsed), blank lines are ignored. Sections without lines are
    dropped, except intro/outro (kept empty: instrumental) and a bare "[chorus]" after an earlier
    chorus, which repeats that chorus, as in printed lyrics.
    """
    sections: list[LyricSection] = []
    tag: str | None = None
    lines: list[str] = []
    last_chorus: list[str] = []

    def close() -> None:
        nonlocal last_chorus
        if tag is None:
            return
        if lines:
            sections.append(LyricSection(tag, list(lines)))
            if tag == "chorus":
                last_chorus = list(lines)
        elif tag == "chorus" and last_chorus:
            sections.append(LyricSection("chorus", list(last_chorus)))
        elif tag in _INSTRUMENTAL_TAGS:
            sections.append(LyricSection(tag, []))

    for raw_line in (text or "").splitlines():
        line = " ".join(raw_line.split())
        if not line:
            continue
        header = _tag_of_line(line)
        if header is not None:
            close()
            tag, lines = header, []
            continue
        if tag is None:
            tag = "verse"
        lines.append(line)
    close()
    return sections


def format_lyrics(sections: list[LyricSection]) -> str:
    """The canonical text form: "[tag]" then one line per sung line, sections separated by a blank
    line, no trailing newline. `parse_lyrics(format_lyrics(s)) == s` for canonical sections."""
    return "\n\n".join("\n".join([f"[{section.tag}]", *section.lines]) for section in sections)


# ---------------------------------------------------------------------------------------------
# Section planning
# ---------------------------------------------------------------------------------------------

# A sung line is about two bars (3.5–4.5 s at common tempos); about a fifth of a song is intro,
# instrumental breaks and breaths, so lines ≈ 0.8 · duration / 3.8 s.
SECONDS_PER_LINE = 3.8
SUNG_FRACTION = 0.8
MIN_DURATION_S, MAX_DURATION_S = 5.0, 600.0


def _even(value: float) -> int:
    return 2 * round(value / 2)


def plan_sections(duration_s: float) -> list[tuple[str, int]]:
    """The (tag, line count) plan for a song of `duration_s` seconds (clamped to 5–600 s).

    The line budget is ≈ 0.8 · duration / 3.8 s (≥ 4), so total lines grow linearly with duration.
    Forms: < 24 s verse + chorus of 2 lines each; < 50 s verse + chorus; < 90 s verse, chorus,
    verse, chorus; from 90 s an instrumental intro (0 lines), N × (verse, [pre-chorus from
    150 s], chorus), a bridge every third block, then bridge, final chorus and a 2-line outro,
    with N and the verse length (2–8 lines) chosen to fit the budget. Every plan has at least one
    verse and one chorus; sections have even line counts so couplets can rhyme.
    """
    duration = min(MAX_DURATION_S, max(MIN_DURATION_S, float(duration_s)))
    budget = max(4, round(duration * SUNG_FRACTION / SECONDS_PER_LINE))
    if budget <= 5:
        return [("verse", 2), ("chorus", 2)]
    if duration < 50:
        chorus = 4 if budget >= 7 else 2
        return [("verse", min(8, max(2, _even(budget - chorus)))), ("chorus", chorus)]
    if duration < 90:
        verse = min(8, max(2, _even((budget - 8) / 2)))
        return [("verse", verse), ("chorus", 4), ("verse", verse), ("chorus", 4)]

    pre = 2 if duration >= 150 else 0
    bridge = 4 if duration >= 150 else 2
    candidates = []
    for verse in (2, 4, 6, 8):
        for blocks in range(2, 16):
            total = blocks * (verse + pre + 4) + (blocks - 1) // 3 * bridge + bridge + 4 + 2
            # Prefer 4–6-line verses (2 is thin, 8 is long); on a tie, the fuller song, which
            # keeps the total non-decreasing where the form changes.
            cost = abs(total - budget) + {2: 2.0, 4: 0.0, 6: 0.0, 8: 0.5}[verse]
            candidates.append((cost, -total, verse, blocks))
    _, _, verse, blocks = min(candidates)
    plan: list[tuple[str, int]] = [("intro", 0)]
    for block in range(blocks):
        plan.append(("verse", verse))
        if pre:
            plan.append(("pre-chorus", pre))
        plan.append(("chorus", 4))
        if block % 3 == 2 and block != blocks - 1:
            plan.append(("bridge", bridge))
    plan += [("bridge", bridge), ("chorus", 4), ("outro", 2)]
    return plan


# ---------------------------------------------------------------------------------------------
# Template lyrics writer
# ---------------------------------------------------------------------------------------------

MAX_LINE_CHARS = 60


@dataclass(frozen=True)
class _LanguageTemplates:
    """Line material for one language. Heads carry the content: "{w}" a content phrase, "{hook}"
    the key phrase ("{Hook}" capitalised); every head is completed by an adverbial tail ("into the
    night") from a rhyme group, and the two lines of a couplet take tails from the same group."""

    verse: tuple[str, ...]
    chorus_hook: tuple[str, ...]
    chorus_answer: tuple[str, ...]
    pre_chorus: tuple[str, ...]
    bridge: tuple[str, ...]
    outro: tuple[str, ...]
    rhymes: tuple[tuple[str, ...], ...]
    themes: tuple[str, ...]
    stopwords: frozenset[str]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_EN = _LanguageTemplates(
    verse=(
        "I still remember {w}", "We were dreaming of {w}", "Talking about {w}",
        "You and me and {w}", "Every road leads back to {w}", "Woke up thinking of {w}",
        "Chasing after {w}", "Holding on to {w}", "Nothing else but {w}",
    ),
    chorus_hook=(
        "{Hook}, {hook}", "Oh, {hook}", "Take me back to {hook}", "All I want is {hook}",
        "We keep on singing {hook}",
    ),
    chorus_answer=("Sing it out", "Don't let go", "Feel the heartbeat", "Hold me close",
                   "Never gonna fade"),
    pre_chorus=("I can feel it rising", "Here it comes", "My heart is racing",
                "Something's changing"),
    bridge=("But maybe {w}", "And if {w} should fade", "Tell me what is {w}", "When {w} is gone"),
    outro=("So we come back to {hook}", "{Hook}, {hook}", "Now I know, {hook}",
           "Let it fade, {hook}"),
    rhymes=(
        ("into the night", "in the morning light", "holding on tight", "burning so bright",
         "out of sight"),
        ("far away", "every day", "come what may", "along the way", "night and day"),
        ("wild and free", "by the sea", "you and me", "meant to be"),
        ("in the rain", "again and again", "down the lane", "through the pain"),
        ("from the start", "in my heart", "worlds apart", "work of art"),
        ("under the sky", "way up high", "passing by", "you and I"),
        ("one more time", "all the time", "right on time", "in my mind"),
    ),
    themes=("the night", "city lights", "summer rain", "the open road", "your heart",
            "the morning sun"),
    stopwords=_words(
        "a an the and or but if then so of to in on at by for with about from into over under "
        "up down out off as is are was were be been being am do does did have has had i me my "
        "mine you your yours he him his she her hers it its we us our they them their this that "
        "these those there here what which who whom whose when where why how all any some no "
        "not only very just more most much many few such than too can could will would shall "
        "should may might must let lets make makes made like want wants need needs please give "
        "write create generate compose produce sing play something someone thing things one two "
        "three four five kind sort type lot bit really also yet still ever never again every "
        "each both either neither through during before after while until because since though "
        "although whether per via around across along toward towards against between among "
        "within without upon onto"
    ),
)  # fmt: skip

_ES = _LanguageTemplates(
    verse=("Todavía recuerdo {w}", "Soñábamos con {w}", "Hablando de {w}", "Tú y yo y {w}",
           "Cada camino lleva a {w}", "Desperté pensando en {w}"),
    chorus_hook=("{Hook}, {hook}", "Oh, {hook}", "Llévame a {hook}", "Solo quiero {hook}"),
    chorus_answer=("Canta conmigo", "No me sueltes", "Siente el latido", "Nunca se apaga"),
    pre_chorus=("Lo siento subir", "Ya viene", "Mi corazón late"),
    bridge=("Pero quizás {w}", "Y si {w} se va", "Dime qué es {w}"),
    outro=("Y volvemos a {hook}", "{Hook}, {hook}", "Ahora sé, {hook}"),
    rhymes=(
        ("en mi corazón", "sin razón", "con esta canción", "en cada rincón"),
        ("junto al mar", "sin parar", "hasta soñar", "en cualquier lugar"),
        ("cada día", "noche y día", "con alegría", "en la lejanía"),
        ("con todo mi amor", "sin temor", "con calor", "sin dolor"),
    ),
    themes=("la noche", "el mar", "tu mirada", "la ciudad"),
    stopwords=_words(
        "el la los las un una unos unas y o pero de del a al en con sin por para sobre entre "
        "que qué es son era ser estar está mi mis tu tus su sus yo tú él ella nosotros ellos "
        "me te se lo le muy más como cuando donde este esta estos estas ese esa canción "
        "música tema sobre"
    ),
)  # fmt: skip

_FR = _LanguageTemplates(
    verse=("Je me souviens de {w}", "On rêvait de {w}", "On parlait de {w}", "Toi et moi et {w}",
           "Chaque route mène à {w}", "Je pense encore à {w}"),
    chorus_hook=("{Hook}, {hook}", "Oh, {hook}", "Emmène-moi vers {hook}", "Je veux {hook}"),
    chorus_answer=("Chante avec moi", "Ne me lâche pas", "Sens ce battement",
                   "Ça ne s'éteint pas"),
    pre_chorus=("Je le sens monter", "Ça arrive", "Mon cœur bat"),
    bridge=("Mais peut-être {w}", "Et si {w} s'en va", "Dis-moi ce qu'est {w}"),
    outro=("Et on revient à {hook}", "{Hook}, {hook}", "Maintenant je sais, {hook}"),
    rhymes=(
        ("dans la nuit", "sous la pluie", "loin d'ici", "toute la vie"),
        ("chaque jour", "pour toujours", "mon amour", "sans détour"),
        ("sans s'arrêter", "pour s'envoler", "jusqu'à rêver", "sous le ciel d'été"),
        ("dans la lumière", "sur la rivière", "comme hier", "à la frontière"),
    ),
    themes=("la nuit", "la mer", "ton regard", "la ville"),
    stopwords=_words(
        "le la les un une des et ou mais de du à au aux en dans avec sans pour par sur sous "
        "que qui quoi est sont était être avoir mon ma mes ton ta tes son sa ses je tu il elle "
        "nous vous ils elles me te se ce cette ces très plus comme quand où chanson musique "
        "morceau sur"
    ),
)  # fmt: skip

_DE = _LanguageTemplates(
    verse=("Ich denk noch an {w}", "Wir träumten von {w}", "Wir sprachen über {w}",
           "Du und ich und {w}", "Jeder Weg führt zu {w}", "Ich wach auf und denk an {w}"),
    chorus_hook=("{Hook}, {hook}", "Oh, {hook}", "Bring mich zu {hook}", "Ich will nur {hook}"),
    chorus_answer=("Sing mit mir", "Lass nicht los", "Spür den Herzschlag", "Es hört nie auf"),
    pre_chorus=("Ich spür es steigen", "Gleich ist es so weit", "Mein Herz schlägt laut"),
    bridge=("Doch vielleicht war {w}", "Und wenn {w} vergeht", "Sag mir, was ist {w}"),
    outro=("Wir kehren heim zu {hook}", "{Hook}, {hook}", "Jetzt weiß ich, {hook}"),
    rhymes=(
        ("in der Nacht", "mit aller Macht", "leise und sacht", "bis der Morgen erwacht"),
        ("ganz allein", "im Mondenschein", "so soll es sein", "für immer dein"),
        ("für alle Zeit", "so weit, so weit", "bis in die Ewigkeit", "voller Zärtlichkeit"),
        ("über das Meer", "immer mehr", "schon so lang her", "kreuz und quer"),
    ),
    themes=("die Nacht", "das Meer", "dein Blick", "die Stadt"),
    stopwords=_words(
        "der die das den dem des ein eine einen einem einer und oder aber von zu zum zur in im "
        "an am auf mit ohne für über unter ist sind war sein haben mein meine dein deine sein "
        "seine ich du er sie es wir ihr mich dich sich sehr mehr wie wenn wo lied musik song "
        "über ein"
    ),
)  # fmt: skip

_PT = _LanguageTemplates(
    verse=("Ainda lembro de {w}", "Sonhávamos com {w}", "Falando de {w}", "Eu e você e {w}",
           "Todo caminho leva a {w}", "Acordei pensando em {w}"),
    chorus_hook=("{Hook}, {hook}", "Oh, {hook}", "Me leva para {hook}", "Eu só quero {hook}"),
    chorus_answer=("Canta comigo", "Não me solta", "Sente o coração", "Nunca vai se apagar"),
    pre_chorus=("Eu sinto subir", "Já vem chegando", "Meu peito bate"),
    bridge=("Mas talvez {w}", "E se {w} for embora", "Me diz o que é {w}"),
    outro=("E voltamos para {hook}", "{Hook}, {hook}", "Agora eu sei, {hook}"),
    rhymes=(
        ("no coração", "sem razão", "nesta canção", "na imensidão"),
        ("perto do mar", "sem parar", "até sonhar", "em qualquer lugar"),
        ("noite e dia", "com alegria", "todo dia", "em harmonia"),
        ("com todo amor", "sem temor", "ao sol se pôr", "com calor"),
    ),
    themes=("a noite", "o mar", "teu olhar", "a cidade"),
    stopwords=_words(
        "o a os as um uma uns umas e ou mas de do da dos das em no na nos nas com sem por para "
        "sobre que é são era ser estar meu minha teu tua seu sua eu tu ele ela nós eles me te "
        "se muito mais como quando onde este esta esse essa canção música"
    ),
)  # fmt: skip

_IT = _LanguageTemplates(
    verse=("Ricordo ancora {w}", "Sognavamo {w}", "Parlando di {w}", "Io e te e {w}",
           "Ogni strada porta a {w}", "Mi sveglio pensando a {w}"),
    chorus_hook=("{Hook}, {hook}", "Oh, {hook}", "Portami verso {hook}", "Voglio solo {hook}"),
    chorus_answer=("Canta con me", "Non lasciarmi", "Senti il battito", "Non si spegne mai"),
    pre_chorus=("Lo sento salire", "Sta arrivando", "Il cuore batte"),
    bridge=("Ma forse {w}", "E se {w} se ne va", "Dimmi cos'è {w}"),
    outro=("E torniamo a {hook}", "{Hook}, {hook}", "Adesso so, {hook}"),
    rhymes=(
        ("nel mio cuore", "con amore", "senza dolore", "a tutte le ore"),
        ("in riva al mare", "fino a volare", "senza pensare", "da ricordare"),
        ("per tutta la vita", "una storia infinita", "come una salita", "tra le dita"),
        ("sotto il sole", "senza parole", "come si vuole", "tra le viole"),
    ),
    themes=("la notte", "il mare", "il tuo sguardo", "la città"),
    stopwords=_words(
        "il lo la i gli le un uno una e o ma di del della dei a al alla in nel nella con senza "
        "per su sopra che è sono era essere avere mio mia tuo tua suo sua io tu lui lei noi "
        "loro mi ti si molto più come quando dove questo questa quello quella canzone musica"
    ),
)  # fmt: skip

# English is the fallback for any other language code.
_TEMPLATES = MappingProxyType({"en": _EN, "es": _ES, "fr": _FR, "de": _DE, "pt": _PT, "it": _IT})
TEMPLATE_LANGUAGES = tuple(_TEMPLATES)
# Prompts are often in another language than the lyrics, so every template language's stopwords
# apply, except those that are also ordinary English content words ("son", "die", "dove").
_ENGLISH_LOOKALIKES = _words("son sin era die war come dove par sea con plus mar sole")
_ANY_STOPWORD = frozenset().union(*(t.stopwords for t in _TEMPLATES.values())) - _ENGLISH_LOOKALIKES


def _plain(word: str) -> str:
    decomposed = unicodedata.normalize("NFKD", word.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _style_words() -> frozenset[str]:
    """Words that describe the sound, not the story: one-word genre, instrument, vocal and tempo
    phrases of the vocabulary plus generic production words. They never become lyric content.
    Words of longer phrases are not included: "ocean" (of "ocean waves") or "love" (of "love
    ballad") are story words."""
    phrases: list[str] = []
    for genre in GENRES:
        phrases += [genre.name, *genre.synonyms, *genre.hints]
        phrases += [p for sub in genre.subgenres for p in (sub.name, *sub.synonyms)]
    phrases += [p for instrument in INSTRUMENTS for p in (instrument.name, *instrument.synonyms)]
    phrases += [p for vocal in VOCAL_TYPES for p in (vocal.name, *vocal.synonyms)]
    phrases += [word for word, _ in TEMPO_WORDS]
    single_words = {_plain(phrase) for phrase in phrases if re.fullmatch(r"[\w&]+", phrase)}
    generic = (
        "song songs track tracks tune tunes music beat beats vibe vibes vibey style genre bpm "
        "tempo key major minor vocals vocal voice voices singer singers singing sung lyrics "
        "lyric feat featuring sound sounds sounding sample samples mix remix production "
        "produced chorus verse hook bridge intro outro catchy upbeat energetic chill groovy "
        "atmospheric intense relaxing aggressive banger anthem jam number piece instrumental "
        "sharp flat hip hop guitar guitars drum synth electric acoustic "
        "canción cancion chanson lied canzone canção cancao musica música musique musik"
    )
    return frozenset(single_words | {_plain(word) for word in generic.split()})


_STYLE_WORDS = _style_words()
_MOOD_ADJECTIVES = frozenset(
    _plain(phrase) for mood in MOODS for phrase in (mood.name, *mood.synonyms) if " " not in phrase
)
_ADJECTIVE_SUFFIXES = ("y", "ful", "ous", "ive", "less", "ic", "ish", "ent", "ant")
_NOUN_FOR_ADJECTIVE = ("days", "nights", "dreams", "skies", "hearts")
_TOPIC_MARKERS = frozenset(
    ("about", "called", "titled", "named", "regarding", "sobre", "sur", "über", "uber", "su",
     "di", "de")
)  # fmt: skip
_CONSONANT_RUN = re.compile(rf"[^{_VOWELS}\W\d_]{{5,}}", re.IGNORECASE)


def _is_wordlike(word: str) -> bool:
    """Rejects keyboard mash ("qwrtz", "xkcdxkcd") so a garbage prompt falls back to a theme."""
    return (
        3 <= len(word) <= 16
        and _VOWEL_GROUP.search(word) is not None
        and _CONSONANT_RUN.search(word) is None
    )


@dataclass(frozen=True)
class _Theme:
    """What the lyrics are about: content phrases in prompt order and the chorus key phrase."""

    phrases: tuple[str, ...]
    hook: str


def _is_adjective(word: str, language: str) -> bool:
    if language != "en":
        return False
    return word in _MOOD_ADJECTIVES or (len(word) > 4 and word.endswith(_ADJECTIVE_SUFFIXES))


def _extract_theme(prompt: str, language: str, rng: random.Random) -> _Theme:
    """Content words of the prompt (stopwords of any template language, style words and
    non-words removed), in prompt order. English adjectives are joined to the noun that follows
    them in the prompt, or given a stock noun ("sunny" → "sunny days"). The hook is the first
    run of adjacent content words after a topic marker ("about", "called", …), else the first run
    in the prompt, at most three words."""
    templates = _TEMPLATES.get(language, _EN)
    stopwords = _ANY_STOPWORD | templates.stopwords
    tokens = _WORD.findall(prompt or "")
    # Each token → its content word, or None where it breaks a run (stopword, style word, …).
    content: list[str | None] = []
    after_marker: int | None = None
    for index, token in enumerate(tokens):
        plain = _plain(token)
        if plain in _TOPIC_MARKERS and after_marker is None:
            after_marker = index
        keep = plain not in stopwords and plain not in _STYLE_WORDS and _is_wordlike(plain)
        proper = token[0].isupper() and index > 0 and not token.isupper()
        content.append((token if proper else token.lower()) if keep else None)

    runs: list[tuple[int, list[str]]] = []
    for index, word in enumerate(content):
        if word is None:
            continue
        if runs and runs[-1][0] + len(runs[-1][1]) == index:
            runs[-1][1].append(word)
        else:
            runs.append((index, [word]))
    if not runs:
        hook = rng.choice(templates.themes)
        others = tuple(theme for theme in templates.themes if theme != hook)
        return _Theme((hook, *rng.sample(others, 2)), hook)

    phrases: list[str] = []
    for _, run in runs:
        for position, word in enumerate(run):
            if _is_adjective(word, language):
                if position + 1 < len(run) and not _is_adjective(run[position + 1], language):
                    continue  # joined to the noun that follows it, below
                phrases.append(f"{word} {rng.choice(_NOUN_FOR_ADJECTIVE)}")
            elif position > 0 and _is_adjective(run[position - 1], language):
                phrases.append(f"{run[position - 1]} {word}")
            else:
                phrases.append(word)
    topic_runs = [run for start, run in runs if after_marker is not None and start > after_marker]
    hook_words = (topic_runs or [runs[0][1]])[0][:3]
    hook = " ".join(hook_words)
    if len(hook_words) == 1 and _is_adjective(hook_words[0], language):
        hook = f"{hook} {_NOUN_FOR_ADJECTIVE[0]}"
    return _Theme(tuple(dict.fromkeys(phrases)), hook)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


class _LineWriter:
    """Builds rhymed couplets from heads and tails; owns the request's random stream."""

    def __init__(self, templates: _LanguageTemplates, theme: _Theme, rng: random.Random) -> None:
        self.templates = templates
        self.theme = theme
        self.rng = rng
        self.next_phrase = 0

    def phrase(self) -> str:
        """Content phrases in turn, so successive lines (and verses) walk through the prompt."""
        phrase = self.theme.phrases[self.next_phrase % len(self.theme.phrases)]
        self.next_phrase += 1
        return phrase

    def fill(self, head: str) -> str:
        hook = self.theme.hook
        text = head
        if "{w}" in text:
            text = text.replace("{w}", self.phrase())
        return text.replace("{Hook}", _capitalise(hook)).replace("{hook}", hook)

    def lines(self, heads: list[str], count: int) -> list[str]:
        """`count` lines from the heads given (cycled), each closed by a tail; lines 2k and 2k+1
        share a rhyme group. No line is longer than MAX_LINE_CHARS."""
        result: list[str] = []
        # Rhyme groups without repeats inside one section, so its couplets sound different.
        groups = list(self.templates.rhymes)
        self.rng.shuffle(groups)
        for pair_start in range(0, count, 2):
            group = list(groups[(pair_start // 2) % len(groups)])
            self.rng.shuffle(group)
            for offset in range(min(2, count - pair_start)):
                head = self.fill(heads[(pair_start + offset) % len(heads)])
                result.append(self._close(head, group[offset:] + group[:offset]))
        return result

    @staticmethod
    def _close(head: str, tails: list[str]) -> str:
        for tail in tails:
            line = f"{head}, {tail}"
            if len(line) <= MAX_LINE_CHARS:
                return _capitalise(line)
        cut = head[:MAX_LINE_CHARS].rsplit(" ", 1)[0] if len(head) > MAX_LINE_CHARS else head
        return _capitalise(cut)

    def pick(self, options: tuple[str, ...], count: int) -> list[str]:
        """`count` heads drawn without repeats while the options last."""
        order = list(options)
        self.rng.shuffle(order)
        return [order[i % len(order)] for i in range(max(1, count))]


def write_template_lyrics(
    prompt: str,
    duration_s: float,
    *,
    style: str | None = None,
    language: str = "en",
    seed: int = 0,
) -> list[LyricSection]:
    """Write lyrics for a song description without any model: the prompt's own words poured into
    line templates, sections laid out by `plan_sections(duration_s)`.

    - Content: the prompt's content words (stopwords, genre/instrument/vocal/tempo words and
      production words such as "song", "track", "upbeat" removed) in prompt order; the chorus hook
      is the phrase after "about"/"called"/… ("a sunny indie-pop song about sailing home" →
      content "sunny days", "sailing", "home", hook "sailing home"). Words are used verbatim,
      never translated. An empty or garbage prompt falls back to a stock theme of the language.
    - Sections: verses narrate (walking through the content phrases), the chorus repeats a hook
      line and is identical every time it appears (so is the pre-chorus), a bridge turns ("But
      maybe …"), the outro resolves on the hook; an intro, when planned, is instrumental (no
      lines). Couplets end on tails from one rhyme group, so lines 1–2, 3–4, … end-rhyme.
    - Lines are at most MAX_LINE_CHARS (60) characters.
    - Languages: hand-written template sets for en, es, fr, de, pt and it (short, simple lines);
      any other language code gets the English templates. The prompt's words stay in whatever
      language the prompt is in.
    - Deterministic for (prompt, duration_s, language, seed, style); other seeds choose other
      templates and rhymes. `style` only seeds variety: sound words never reach the lyrics.
    """
    code = (language or "en").strip().lower()
    templates = _TEMPLATES.get(code, _EN)
    key = f"{prompt}\x00{float(duration_s)!r}\x00{code}\x00{seed}\x00{style or ''}"
    rng = random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))
    theme = _extract_theme(prompt, code, rng)
    writer = _LineWriter(templates, theme, rng)

    plan = plan_sections(duration_s)
    chorus_size = max((n for tag, n in plan if tag == "chorus"), default=2)
    chorus_heads = [
        head
        for pair in zip(
            writer.pick(templates.chorus_hook, chorus_size),
            writer.pick(templates.chorus_answer, chorus_size),
            strict=True,
        )
        for head in pair
    ]
    chorus = writer.lines(chorus_heads, chorus_size)
    pre_chorus: list[str] | None = None
    outro: list[str] | None = None

    sections: list[LyricSection] = []
    for tag, count in plan:
        if count == 0:
            sections.append(LyricSection(tag, []))
        elif tag == "chorus":
            sections.append(LyricSection(tag, chorus[:count]))
        elif tag == "pre-chorus":
            pre_chorus = pre_chorus or writer.lines(writer.pick(templates.pre_chorus, count), count)
            sections.append(LyricSection(tag, list(pre_chorus)))
        elif tag == "outro":
            outro = outro or writer.lines(writer.pick(templates.outro, count), count)
            sections.append(LyricSection(tag, list(outro)))
        else:
            heads = templates.bridge if tag == "bridge" else templates.verse
            sections.append(LyricSection(tag, writer.lines(writer.pick(heads, count), count)))
    return sections
