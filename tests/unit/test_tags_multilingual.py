"""Chinese, Japanese and Korean styles, misspelt short genre names and song forms, in the lexicon.

Text in CJK script is cut into words against the glossary (`CJK_MUSIC_WORDS`) and read as its
English words, so the English phrases and rules apply; the semantic engine reads the same English
(`translate_music_words`). No model here: the real MiniLM runs in tests/unit/test_semantic_tags.py.
"""

from __future__ import annotations

import pytest

from pipeline.semantic_tags import lexical_evidence, translate_music_words
from pipeline.tags import (
    KNOWN_WORDS,
    cjk_words,
    correct_word,
    english_rendering,
    find_matches,
    normalize_style,
    phrase_tokens,
)
from pipeline.vocabulary import CJK_MUSIC_WORDS, FUZZY_BLOCKLIST, HANGUL_ENDINGS

# --- tokenising CJK script ---------------------------------------------------------------------


def test_latin_text_tokenises_as_before() -> None:
    assert phrase_tokens("Hip-Hop! café, R&B") == ("hip", "hop", "cafe", "r&b")
    assert english_rendering("Hip-Hop! café") == "Hip-Hop! café"
    assert translate_music_words("a sad song") == "a sad song"


@pytest.mark.parametrize(
    ("run", "words"),
    [
        # Han: forward maximum matching, unknown characters kept together
        ("伤感的中文流行歌", ["伤感", "的", "中文", "流行", "歌"]),
        ("朋克摇滚", ["朋克", "摇滚"]),
        ("电子琴", ["电子琴"]),  # a keyboard, not "electronic" + an instrument
        # Katakana: whole words, compounds of glossary words, or a modifier + glossary words
        ("ロックバラード", ["ロック", "バラード"]),
        ("アイドルポップ", ["アイドルポップ"]),
        ("ガールズポップ", ["ガールズ", "ポップ"]),
        ("ブロック", ["ブロック"]),  # block: a one-letter modifier is part of another word
        ("サイバーパンク", ["サイバーパンク"]),  # cyberpunk, no punk
        # Hangul: stems with particles and endings
        ("몽환적인", ["몽환", "적인"]),
        ("록을", ["록", "을"]),
        ("케이팝댄스곡", ["케이팝", "댄스", "곡"]),
        ("기록", ["기록"]),  # a record: "록" inside another word is no rock
        ("팝콘", ["팝콘"]),
    ],
)
def test_cjk_words(run: str, words: list[str]) -> None:
    assert cjk_words(run) == words


def test_cjk_words_are_read_in_english_in_text_order() -> None:
    assert phrase_tokens("伤感的中文流行歌") == ("sad", "的", "chinese", "pop", "song")
    assert phrase_tokens("Kポップ") == ("k", "pop")  # the vocabulary's "k-pop"
    assert phrase_tokens("ﾛｯｸ") == ("rock",)  # half-width Katakana is folded first
    assert phrase_tokens("잔잔한 어쿠스틱 발라드") == ("calm", "acoustic", "ballad")


def test_english_rendering_keeps_the_rest_and_drops_unknown_cjk() -> None:
    rendered = english_rendering("切ないピアノバラード, 80 bpm")
    assert rendered.split() == ["wistful", "piano", "ballad", ",", "80", "bpm"]
    assert "的" not in english_rendering("伤感的中文流行歌")
    assert translate_music_words("雨の日のローファイ").split() == ["lo-fi"]


# --- CJK styles in the lexicon -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "genre", "moods"),
    [
        ("轻快的流行歌曲", "pop", {"upbeat"}),
        ("伤感的中文流行歌", "pop", {"sad"}),
        ("愤怒的朋克摇滚", "punk rock", {"aggressive"}),
        ("深夜的爵士钢琴", "jazz", {"night"}),
        ("嘻哈说唱", "hip hop", None),
        ("民谣", "folk", None),
        ("适合跳舞的电子音乐", "electronic", None),
        ("重金属", "heavy metal", None),
        ("後搖", "post-rock", None),  # traditional characters
        ("ジャズ", "jazz", None),
        ("懐かしい演歌", "j-pop", {"nostalgic"}),  # enka: the vocabulary's nearest genre
        ("激しいメタルコア", "metalcore", {"intense"}),
        ("ヘヴィメタル", "heavy metal", None),
        ("夏のシティポップ", "j-pop", {"summer"}),
        ("록", "rock", None),
        ("힙합", "hip hop", None),
        ("신나는 케이팝 댄스곡", "k-pop", {"upbeat"}),
        ("몽환적인 일렉트로닉", "electronic", {"dreamy"}),
        ("슬픈 피아노 발라드", "pop", {"sad"}),
    ],
)
def test_cjk_styles_name_genre_and_mood(text: str, genre: str, moods: set[str] | None) -> None:
    tags = normalize_style(text)
    assert tags.genre == genre, (text, tags)
    if moods is not None:
        assert moods <= set(tags.moods), (text, tags.moods)


def test_cjk_phrases_compose_like_english_ones() -> None:
    assert normalize_style("ロックバラード").family == "rock"
    assert (normalize_style("ロックバラード").subgenre) == "power ballad"
    assert normalize_style("록 발라드").subgenre == "power ballad"
    assert normalize_style("流行摇滚").subgenre == "pop rock"
    assert normalize_style("シンセポップ").genre == "synthpop"
    assert normalize_style("ローファイ・ヒップホップ").genre == "lo-fi hip hop"


def test_cjk_instruments_and_vocals() -> None:
    tags = normalize_style("女声钢琴情歌")
    assert (tags.vocal, tags.instruments[0]) == ("female", "piano")
    assert "romantic" in tags.moods
    assert normalize_style("纯音乐").vocal == "instrumental"
    assert normalize_style("남성 보컬 어쿠스틱 기타").vocal == "male"
    assert normalize_style("남성 보컬 어쿠스틱 기타").instruments[0] == "acoustic guitar"
    assert normalize_style("ロックのギター").instruments[0] == "electric guitar"
    assert "koto" in normalize_style("安静的古筝音乐").instruments


def test_unknown_cjk_text_keeps_the_default_and_counts_as_unexplained() -> None:
    tags = normalize_style("今日はいい天気")
    assert (tags.genre, tags.moods) == ("pop", [])
    assert lexical_evidence("今日はいい天気").unexplained  # the embedding may still read it


def test_explicit_tempo_and_key_survive_cjk_text() -> None:
    tags = normalize_style("悲伤的钢琴曲, 70 bpm, in A minor")
    assert (tags.bpm, tags.key) == (70, "A minor")


def test_glossary_is_consistent() -> None:
    assert len(CJK_MUSIC_WORDS) >= 500
    plain = {"chinese", "cyberpunk", "steampunk", "venue", "popcorn", "laptop"}
    for word, english in CJK_MUSIC_WORDS.items():
        assert english.isascii() and english == english.lower(), word
        assert set(phrase_tokens(english)) <= KNOWN_WORDS | plain, (word, english)
        # one script class per key: the text is cut where the class changes
        classes = {"katakana" if "\u30a1" <= c <= "\u30fe" else
                   "hangul" if "\uac00" <= c <= "\ud7a3" else "han" for c in word}  # fmt: skip
        assert len(classes) == 1, word
    assert all("\uac00" <= ending[0] <= "\ud7a3" for ending in HANGUL_ENDINGS)


def test_every_glossary_genre_word_reaches_its_genre() -> None:
    words = ("摇滚", "流行", "爵士", "嘻哈", "民谣", "电子")
    for word in (*words, "ロック", "ポップ", "ジャズ", "록", "힙합", "발라드"):
        assert find_matches(phrase_tokens(word))[0], word


# --- misspelt short genre names ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "corrected"),
    [
        ("raggae", "reggae"),  # also one slip from "ragga": the genre's own name wins
        ("regae", "reggae"),
        ("punck", "punk"),
        ("soull", "soul"),
        ("funck", "funk"),
        ("rokc", "rock"),
        ("dupstep", "dubstep"),
        ("sambba", "samba"),
        ("disko", "disco"),
        ("contry", "country"),
        ("techo", "techno"),
    ],
)
def test_one_slip_from_a_genre_name_is_corrected(word: str, corrected: str) -> None:
    assert correct_word(word) == corrected


@pytest.mark.parametrize(
    "word",
    [
        "punk", "soul", "pink", "fund", "soup", "sour", "disc", "nose", "rick",  # 4 letters
        "rancher", "corrido",  # a genre name short of its ending ("ranchera", "corridos")
        "phone", "store", "range", "trash",  # real words, blocklisted
        "fonk",  # as near "funk" as "folk": left alone
    ],
)  # fmt: skip
def test_correct_and_ambiguous_words_are_left_alone(word: str) -> None:
    assert correct_word(word) == word


def test_misspelt_genre_names_in_styles() -> None:
    assert normalize_style("punck rock with shouted vocals").genre == "punk rock"
    assert normalize_style("raggae vibes").genre == "reggae"
    assert normalize_style("punk").genre == "punk rock"
    assert normalize_style("pink floyd style psychedelia").genre == "psychedelic rock"
    assert normalize_style("a phone call from an old rancher").genre == "pop"
    assert {"phone", "range", "store"} <= set(FUZZY_BLOCKLIST)


# --- song forms ----------------------------------------------------------------------------------


def test_a_song_form_gives_way_to_a_named_genre() -> None:
    assert normalize_style("a ballad in bossa nova style").genre == "bossa nova"
    assert normalize_style("a love ballad with a jazzy feel").genre == "jazz"
    rock = normalize_style("ballad with a big rock chorus")
    assert (rock.genre, rock.subgenre) == ("rock", "power ballad")
    assert normalize_style("sad piano ballad").subgenre == "ballad"  # no other genre: pop ballad
    assert normalize_style("pop ballad, bossa nova feel").genre == "pop"  # "pop ballad" names pop
    assert normalize_style(translate_music_words("uma balada romântica de bossa nova")).genre == (
        "bossa nova"
    )
    assert normalize_style(translate_music_words("una ballata pop")).subgenre == "ballad"
