"""Rhythm patterns per groove and intensity level, as 16-step (sixteenth-note) bar strings.

Drum strings: 'X' accent, 'x' normal hit, 'o' ghost note, '.' silence.
Bass strings: a letter starts a note — R root, F fifth, O octave, T third, S sixth, B flat
seventh, W a chord tone chosen by the walker, A approach note into the next bar's root — '-'
holds the previous note, '.' is silence.
Comping strings: 'x' full chord, 'd' / 'u' down / up strum, 'a' one arpeggio note, '-' hold,
'.' silence.
Each level maps to a tuple of alternatives; the seed picks one per song so grooves vary.
"""

from __future__ import annotations

LEVELS = ("low", "mid", "high")

# Section kind → intensity level of its patterns.
SECTION_LEVEL = {
    "intro": "low", "verse": "mid", "pre-chorus": "mid", "chorus": "high", "bridge": "low",
    "outro": "low",
}  # fmt: skip

DrumPattern = dict[str, str]

DRUMS: dict[str, dict[str, tuple[DrumPattern, ...]]] = {
    "pop": {
        "low": ({"kick": "X.......x.......", "hat": "x...x...x...x..."},),
        "mid": (
            {"kick": "X.....x.x.......", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
            {"kick": "X.......X.x.....", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
        ),
        "high": (
            {"kick": "X.....x.x.x.....", "snare": "....X.......X...", "clap": "....x.......x...",
             "hat": "x.x.x.x.x.x.x...", "ohat": "..............x.", "tamb": "..x...x...x...x."},
            {"kick": "X.x.....X.x.....", "snare": "....X.......X...", "clap": "....x.......x...",
             "hat": "x.xox.xox.xox.xo", "ohat": "......x.......x."},
        ),
    },
    "rock": {
        "low": ({"kick": "X.......X.......", "hat": "x.x.x.x.x.x.x.x."},),
        "mid": (
            {"kick": "X.......X.X.....", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
            {"kick": "X.x.....X.......", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
        ),
        "high": (
            {"kick": "X.x.....X.X.....", "snare": "....X.......X...", "ride": "x.x.x.x.x.x.x.x.",
             "ohat": "..x...x...x...x."},
            {"kick": "X.......X.X...x.", "snare": "....X.......X...", "ohat": "x.x.x.x.x.x.x.x."},
        ),
    },
    "punk": {
        "low": ({"kick": "X...X...X...X...", "hat": "x.x.x.x.x.x.x.x."},),
        "mid": ({"kick": "X.x.....X.x.....", "snare": "....X.......X...",
                 "hat": "x.x.x.x.x.x.x.x."},),
        "high": ({"kick": "X...x.x.X...x.x.", "snare": "....X.......X...",
                  "ohat": "x.x.x.x.x.x.x.x."},),
    },
    "metal": {
        "low": ({"kick": "X.......X.......", "ride": "x...x...x...x..."},),
        "mid": ({"kick": "X.X.....X.X.....", "snare": "....X.......X...",
                 "hat": "x.x.x.x.x.x.x.x."},),
        "high": ({"kick": "XxXxXxXxXxXxXxXx", "snare": "....X.......X...",
                  "ride": "x...x...x...x..."},),
    },
    "four_floor": {
        "low": ({"kick": "X...X...X...X...", "hat": "..o...o...o...o."},),
        "mid": (
            {"kick": "X...X...X...X...", "clap": "....x.......x...", "ohat": "..x...x...x...x."},
            {"kick": "X...X...X...X...", "clap": "....x.......x...", "ohat": "..x...x...x...x.",
             "hat": "o.o.o.o.o.o.o.o."},
        ),
        "high": (
            {"kick": "X...X...X...X...", "clap": "....X.......X...", "ohat": "..x...x...x...x.",
             "hat": "xoxoxoxoxoxoxoxo", "shaker": "oxoxoxoxoxoxoxox"},
            {"kick": "X...X...X...X...", "clap": "....X.......X...", "snare": "....x.......x...",
             "ohat": "..x...x...x...x.", "hat": "x.xox.xox.xox.xo"},
        ),
    },
    "hiphop": {
        "low": ({"kick": "X.........x.....", "hat": "x.x.x.x.x.x.x.x."},),
        "mid": (
            {"kick": "X.....x...x.....", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
            {"kick": "X..x......x.....", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
        ),
        "high": (
            {"kick": "X.....x...x..x..", "snare": "....X.......X...", "clap": "....x.......x...",
             "hat": "x.xxx.x.x.xxx.x."},
            {"kick": "X..x......x.x...", "snare": "....X.......X..o", "hat": "x.x.xxx.x.x.xxxx"},
        ),
    },
    "halftime": {
        "low": ({"kick": "X.........x.....", "hat": "x.x.x.x.x.x.x.x."},),
        "mid": ({"kick": "X......x..x.....", "snare": "........X.......",
                 "hat": "x.x.x.x.x.x.x.x."},),
        "high": ({"kick": "X......x..x..x..", "snare": "........X.......",
                  "clap": "........x.......", "hat": "x.x.xxx.x.x.xxxx"},),
    },
    "rnb": {
        "low": ({"kick": "X.........x.....", "hat": "x.x.x.x.x.x.x.x."},),
        "mid": ({"kick": "X......x..x.....", "rim": "....x.......x...",
                 "hat": "x.x.x.x.x.x.x.x."},),
        "high": ({"kick": "X......x..x..x..", "snare": "....X.......X...",
                  "clap": "....x.......x...", "hat": "x.xox.xox.xox.xo"},),
    },
    "funk": {
        "low": ({"kick": "X.........x.....", "hat": "xoxoxoxoxoxoxoxo"},),
        "mid": (
            {"kick": "X..x..x...x..x..", "snare": "....X..o.o..X..o", "hat": "xoxoxoxoxoxoxoxo"},
            {"kick": "X.x...x...x.x...", "snare": "....X..o....X.o.", "hat": "xoxoxoxoxoxoxoxo"},
        ),
        "high": ({"kick": "X..x..x...x..x..", "snare": "....X..o.o..X..o",
                  "hat": "xoxoxoxoxoxoxo..", "ohat": "..............x.",
                  "tamb": "....x.......x..."},),
    },
    "swing": {
        "low": ({"ride": "x...x.x.x...x.x.", "hat": "....o.......o..."},),
        "mid": ({"ride": "X...x.x.X...x.x.", "hat": "....x.......x...", "kick": "o...o...o...o...",
                 "brush": "......o.......o."},),
        "high": ({"ride": "X...x.x.X...x.x.", "hat": "....x.......x...", "kick": "o...o...o..xo...",
                  "snare": "......o...o...o."},),
    },
    "shuffle": {
        "low": ({"kick": "X.......X.......", "hat": "x.x.x.x.x.x.x.x."},),
        "mid": ({"kick": "X.......X.......", "snare": "....X.......X...",
                 "hat": "x.x.x.x.x.x.x.x."},),
        "high": ({"kick": "X.....x.X.....x.", "snare": "....X.......X...",
                  "ride": "x.x.x.x.x.x.x.x.", "ohat": "....x.......x..."},),
    },
    "folk": {
        "low": ({"shaker": "x.x.x.x.x.x.x.x.", "kick": "X..............."},),
        "mid": ({"kick": "X.......X.......", "rim": "....x.......x...",
                 "shaker": "xoxoxoxoxoxoxoxo"},),
        "high": ({"kick": "X...x...X...x...", "snare": "....X.......X...",
                  "hat": "x.x.x.x.x.x.x.x.", "tamb": "....x.......x..."},),
    },
    "latin": {
        "low": ({"clave": "x..x..x...x.x...", "shaker": "x.x.x.x.x.x.x.x."},),
        "mid": ({"clave": "x..x..x...x.x...", "kick": "X.......X.......",
                 "conga": "......x.x.....xx", "shaker": "xoxoxoxoxoxoxoxo"},),
        "high": ({"clave": "x..x..x...x.x...", "kick": "X..x....X..x....",
                  "conga": "..x...x.x.x...xx", "shaker": "xoxoxoxoxoxoxoxo",
                  "rim": "....x.......x..."},),
    },
    "reggae": {
        "low": ({"hat": "x.x.x.x.x.x.x.x.", "rim": "........x......."},),
        "mid": ({"kick": "........X.......", "rim": "........X.......",
                 "hat": "x.x.x.x.x.x.x.x."},),
        "high": ({"kick": "X...X...X...X...", "snare": "........X.......",
                  "hat": "x.xox.xox.xox.xo", "rim": "....x.......x..."},),
    },
    "ambient": {
        "low": ({},),
        "mid": ({"shaker": "o.o.o.o.o.o.o.o."},),
        "high": ({"kick": "x.......x.......", "shaker": "oxoxoxoxoxoxoxox"},),
    },
    "orchestral": {
        "low": ({},),
        "mid": ({"timpani": "x..............."},),
        "high": ({"timpani": "X.......x.......", "kick": "o.......o......."},),
    },
}  # fmt: skip

BASS: dict[str, dict[str, tuple[str, ...]]] = {
    "pop": {
        "low": ("R-------R-------", "R-------R---F---"),
        "mid": ("R-----R-R-----F-", "R---.RR-R---.RF-", "R-R-R-R-R-R-R-A-"),
        "high": ("R-R-R-R-R-R-R-R-", "R-R-R-R-R-R-O-F-", "R--R--R-R--R--R-"),
    },
    "rock": {
        "low": ("R-------R-------",),
        "mid": ("R-R-R-R-R-R-R-R-", "R-R-R-R-R-R-F-A-"),
        "high": ("R-R-R-R-R-R-R-R-", "R-R-R-R-R-R-O-F-"),
    },
    "punk": {"low": ("R-R-R-R-R-R-R-R-",), "mid": ("R-R-R-R-R-R-R-R-",),
             "high": ("R-R-R-R-R-R-R-R-",)},
    "metal": {"low": ("R-------R-------",), "mid": ("R-R-R-R-R-R-R-R-",),
              "high": ("RRRRRRRRRRRRRRRR", "R-RRR-RRR-RRR-RR")},
    "four_floor": {
        "low": ("R-------........",),
        "mid": ("..R-..R-..R-..R-",),
        "high": ("..R-..R-..R-..O-", "R.R-..R-R.R-..R-"),
    },
    "hiphop": {
        "low": ("R-------........",),
        "mid": ("R-------..R-----", "R-----R---R-----"),
        "high": ("R---------R---O-", "R-----R---R-F---"),
    },
    "halftime": {
        "low": ("R-------........",),
        "mid": ("R-------..R-----",),
        "high": ("R---------R---O-",),
    },
    "rnb": {
        "low": ("R-------........",),
        "mid": ("R-----R---R---F-", "R-------..R---A-"),
        "high": ("R-----R---R-O-F-",),
    },
    "funk": {
        "low": ("R-------..R-....",),
        "mid": ("R-.R..O.R-.R.FA.", "R..R..O.R.RR..A."),
        "high": ("R.RR..O.R-.RO.A.", "R-.R..O.R-.RFOA."),
    },
    "swing": {"low": ("R-------F-------",), "mid": ("R---W---W---A---",),
              "high": ("R---W---W---A---",)},
    "shuffle": {"low": ("R-------F-------",), "mid": ("R-T-F-S-B-S-F-T-",),
                "high": ("R-T-F-S-B-S-F-T-",)},
    "folk": {
        "low": ("R-------F-------",),
        "mid": ("R---....F---....", "R-------F-------"),
        "high": ("R---..R.F---..A.", "R---R---F---F-A-"),
    },
    "latin": {"low": ("R-------F-------",), "mid": ("R-----F-----O---",),
              "high": ("R-----F-R-----F-",)},
    "reggae": {"low": ("R-------........",), "mid": ("R--.R-T.F---..O.",),
               "high": ("R--.R-T.F-..O-F.",)},
    "ambient": {"low": ("R---------------",), "mid": ("R---------------",),
                "high": ("R-------F-------",)},
    "orchestral": {"low": ("R---------------",), "mid": ("R---------------",),
                   "high": ("R-------F-------",)},
}  # fmt: skip

COMPING: dict[str, dict[str, tuple[str, ...]]] = {
    "pop": {
        "low": ("x---------------", "x-------x-------"),
        "mid": ("x-----x-----x---", "x-----x---x-----"),
        "high": ("x-x-x-x-x-x-x-x-", "x-----x-x-----x-"),
    },
    "rock": {"low": ("x---------------",), "mid": ("x.x.x.x.x.x.x.x.", "x.x.x.x.x.x.x-x-"),
             "high": ("x-x-x-x-x-x-x-x-", "x-------x---x---")},
    "punk": {"low": ("x-x-x-x-x-x-x-x-",), "mid": ("x.x.x.x.x.x.x.x.",),
             "high": ("x-x-x-x-x-x-x-x-",)},
    "metal": {"low": ("x---------------",), "mid": ("x.xxx.xxx.xxx.xx",),
              "high": ("x-------x-------",)},
    "four_floor": {"low": ("x---------------",), "mid": ("..x...x...x...x.",),
                   "high": ("..x-..x-..x-..x-", "x.x..x..x.x..x..")},
    "hiphop": {"low": ("x---------------",), "mid": ("x-------x-------", "x------x--x-----"),
               "high": ("x------x--x-----",)},
    "halftime": {"low": ("x---------------",), "mid": ("x---------------",),
                 "high": ("x-------x-------",)},
    "rnb": {"low": ("x---------------",), "mid": ("x-----x---x-----",),
            "high": ("x-----x---x---x-",)},
    "funk": {"low": ("x---------------",), "mid": ("x.xx.x.xx.x.x.xx", "..x.x..x..x.x..x"),
             "high": ("x.xx.x.xx.x.x.xx",)},
    "swing": {"low": ("x-..............",), "mid": ("x-....x-........", "..x-....x-..x..."),
              "high": ("x-....x-....x-..", "x-..x-....x-..x-")},
    "shuffle": {"low": ("x---------------",), "mid": ("..x...x...x...x.",),
                "high": ("x-x-x-x-x-x-x-x-",)},
    "folk": {"low": ("a-a-a-a-a-a-a-a-", "d-------d-------"), "mid": ("d---d-u---u-d-u-",),
             "high": ("d-u-d-u-d-u-d-u-", "d---d-u---u-d-u-")},
    "latin": {"low": ("x---------------",), "mid": ("x..x..x...x.x...",),
              "high": ("x.xx.x.xx.x.x.x.",)},
    "reggae": {"low": ("....x.......x...",), "mid": ("....x.......x...",),
               "high": ("....x.x.....x.x.",)},
    "ambient": {"low": ("x---------------",), "mid": ("x---------------",),
                "high": ("x---------------",)},
    "orchestral": {"low": ("x---------------",), "mid": ("a-a-a-a-a-a-a-a-",),
                   "high": ("a-a-a-a-a-a-a-a-",)},
}  # fmt: skip


def steps(pattern: str) -> list[tuple[int, str, int]]:
    """Onsets of a bass/comping pattern as (step, symbol, length in steps) — '-' extends."""
    onsets: list[tuple[int, str, int]] = []
    for index, symbol in enumerate(pattern):
        if symbol in ".-":
            continue
        length = 1
        while index + length < len(pattern) and pattern[index + length] == "-":
            length += 1
        onsets.append((index, symbol, length))
    return onsets


DRUM_VELOCITY = {"X": 1.0, "x": 0.75, "o": 0.38}
