"""The `sketch` song model: format contract, determinism, and audio checks of the music itself.

The audio assertions are the objective half of listening to it: the drum stem's onsets repeat
at the tagged tempo, the bass plays the planned chord roots, the chorus is louder than the verse,
the lead sings one note per syllable, notes start and end at silence, and the song fades out.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy import signal

from pipeline.lyrics import LyricSection, split_syllables
from pipeline.sketch import SKETCH_VERSION, STEM_NAMES, SketchRender, render_sketch
from pipeline.sketch.arrangement import SongPlan, plan_song
from pipeline.sketch.comping import write_harmony
from pipeline.sketch.drums import write_drums
from pipeline.sketch.melody import write_lead
from pipeline.sketch.style import style_for_tags
from pipeline.sketch.voices import TIMBRES, NoteSynth
from pipeline.tags import GENRE_FAMILIES, StyleTags

SAMPLE_RATE = 48_000

LYRICS = [
    LyricSection("verse", [
        "I walked along the river in the morning light",
        "every shadow whispered that you'd be alright",
        "city lights are fading as the night comes down",
        "I can hear you calling from the other side of town",
    ]),
    LyricSection("chorus", [
        "Hold on, hold on to me",
        "we are the fire in the sea",
        "hold on, hold on tonight",
        "we will be shining so bright",
    ]),
]  # fmt: skip


def _tags(family: str = "pop", bpm: int = 110, key: str = "C major", **extra: object) -> StyleTags:
    return StyleTags(genre=family, subgenre=None, family=family, bpm=bpm, key=key, **extra)  # type: ignore[arg-type]


_CACHE: dict[tuple[object, ...], tuple[SketchRender, SongPlan]] = {}


def _render(
    tags: StyleTags,
    duration_s: float = 30.0,
    seed: int = 1,
    *,
    sections: list[LyricSection] | None = None,
    instrumental: bool = False,
) -> tuple[SketchRender, SongPlan]:
    sections = LYRICS if sections is None else sections
    key = (repr(tags), duration_s, seed, repr(sections), instrumental)
    if key not in _CACHE:
        render = render_sketch(tags, sections, duration_s, seed, instrumental=instrumental)
        plan = plan_song(tags, sections, duration_s, seed, instrumental=instrumental)
        _CACHE[key] = (render, plan)
    return _CACHE[key]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _beat_period_s(drums: np.ndarray, bpm: float) -> float:
    """Tempo from the drum stem: onset-strength autocorrelation, scored over 4 multiples.

    The onset strength is the positive log-energy flux of 20 ms frames every 5 ms; the period
    is searched between 0.6 and 1.6 beats, so an eighth-note hat or a bar-long pattern cannot
    win by itself.
    """
    hop_s = 0.005
    hop = int(hop_s * SAMPLE_RATE)
    frames = np.lib.stride_tricks.sliding_window_view(drums, 4 * hop)[::hop]
    energy = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    flux = np.maximum(0.0, np.diff(np.log10(energy + 1e-5)))
    flux = np.convolve(flux, np.ones(3) / 3, "same")
    flux -= flux.mean()
    autocorrelation = signal.correlate(flux, flux, "full", method="fft")[len(flux) - 1 :]
    beat_s = 60.0 / bpm
    lags = np.arange(0.6 * beat_s, 1.6 * beat_s, 0.001) / hop_s
    positions = np.arange(len(autocorrelation))
    score = sum(np.interp(k * lags, positions, autocorrelation) for k in range(1, 5))
    return float(lags[int(np.argmax(score))] * hop_s)


def _dominant_pitch_class(segment: np.ndarray, low_hz: float, high_hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment)), 1 << 18))
    frequencies = np.fft.rfftfreq(1 << 18, 1.0 / SAMPLE_RATE)
    band = (frequencies > low_hz) & (frequencies < high_hz)
    peak_hz = float(frequencies[band][np.argmax(spectrum[band])])
    return (69.0 + 12.0 * np.log2(peak_hz / 440.0)) % 12.0


def _pitch_class_distance(a: float, b: float) -> float:
    d = (a - b) % 12.0
    return min(d, 12.0 - d)


def _onset_count(x: np.ndarray) -> int:
    """Spectral-flux onsets (2048-point STFT, 256 hop) above a moving threshold, ≥ 60 ms apart."""
    _, _, stft = signal.stft(x, SAMPLE_RATE, nperseg=2048, noverlap=2048 - 256)
    magnitude = np.log1p(100.0 * np.abs(stft))
    flux = np.maximum(0.0, np.diff(magnitude, axis=1)).sum(axis=0)
    threshold = np.convolve(flux, np.ones(15) / 15, "same") + 0.5 * flux.std()
    peaks, _ = signal.find_peaks(flux, height=threshold, distance=int(0.06 * SAMPLE_RATE / 256))
    return len(peaks)


def _section_slice(plan: SongPlan, tag: str) -> slice:
    section = next(s for s in plan.sections if s.tag == tag)
    return slice(
        int(section.start_bar * plan.bar_s * SAMPLE_RATE),
        int(section.end_bar * plan.bar_s * SAMPLE_RATE),
    )


# -- format contract ---------------------------------------------------------------------------


def test_public_api() -> None:
    assert STEM_NAMES == ("drums", "bass", "harmony", "lead")
    assert isinstance(SKETCH_VERSION, str) and SKETCH_VERSION


def test_shape_dtype_and_headroom() -> None:
    render, _ = _render(_tags())
    n = round(30.0 * SAMPLE_RATE)
    assert render.sample_rate == SAMPLE_RATE
    assert tuple(render.stems) == STEM_NAMES
    for audio in (render.mix, *render.stems.values()):
        assert audio.shape == (2, n)
        assert audio.dtype == np.float32
        assert np.isfinite(audio).all()
    peak = float(np.max(np.abs(render.mix)))
    assert 10 ** (-4 / 20) < peak < 10 ** (-2.5 / 20)  # about -3 dBFS, never clipping
    assert np.all(np.abs(render.mix.mean(axis=1)) < 1e-3)  # no DC offset
    assert not np.allclose(render.mix[0], render.mix[1])  # really stereo


def test_mix_is_sum_of_stems() -> None:
    render, _ = _render(_tags())
    total = np.sum([render.stems[name] for name in STEM_NAMES], axis=0)
    np.testing.assert_allclose(render.mix, total, atol=1e-5)


def test_every_stem_is_audible() -> None:
    render, _ = _render(_tags())
    for name in STEM_NAMES:
        assert _rms(render.stems[name]) > 0.01 * _rms(render.mix), name


@pytest.mark.parametrize("duration_s", [5.0, 7.3333, 120.0])
def test_exact_length_for_short_odd_and_long_durations(duration_s: float) -> None:
    render, plan = _render(_tags("rock", 128), duration_s, seed=4)
    assert render.mix.shape == (2, round(duration_s * SAMPLE_RATE))
    assert np.isfinite(render.mix).all()
    assert float(np.max(np.abs(render.mix))) < 1.0
    assert plan.n_bars * plan.bar_s >= duration_s


def test_rejects_out_of_range_duration() -> None:
    with pytest.raises(ValueError):
        render_sketch(_tags(), LYRICS, 0.5, 1)
    with pytest.raises(ValueError):
        render_sketch(_tags(), LYRICS, 601.0, 1)


def test_ends_with_a_fade_and_starts_without_a_click() -> None:
    render, plan = _render(_tags())
    mix = render.mix
    body_rms = _rms(mix[:, SAMPLE_RATE * 10 : SAMPLE_RATE * 20])
    assert _rms(mix[:, -SAMPLE_RATE // 20 :]) < 0.02 * body_rms
    assert np.all(np.abs(mix[:, -1]) < 1e-4)
    assert np.all(np.abs(mix[:, 0]) < 1e-4)
    # The fade covers the last bar or two, not just a few milliseconds.
    fade_window = mix[:, -int(plan.bar_s * SAMPLE_RATE) : -int(plan.bar_s * SAMPLE_RATE * 0.5)]
    assert _rms(fade_window) < 0.7 * body_rms


# -- determinism and variety -------------------------------------------------------------------


def test_same_seed_is_bit_identical() -> None:
    first, _ = _render(_tags())
    second = render_sketch(_tags(), LYRICS, 30.0, 1)
    assert np.array_equal(first.mix, second.mix)
    for name in STEM_NAMES:
        assert np.array_equal(first.stems[name], second.stems[name])


def test_different_seeds_differ_substantially() -> None:
    one, plan_one = _render(_tags(), seed=1)
    two, plan_two = _render(_tags(), seed=2)
    for name in ("lead", "harmony", "drums"):
        difference = _rms(one.stems[name] - two.stems[name])
        assert difference > 0.5 * _rms(one.stems[name]), name
    melody_one = [e.midi for e in write_lead(plan_one, 1)]
    melody_two = [e.midi for e in write_lead(plan_two, 2)]
    assert melody_one != melody_two
    # Same style though: tempo, key and form are the tags', not the seed's.
    assert plan_one.bpm == plan_two.bpm and plan_one.key == plan_two.key
    assert [s.tag for s in plan_one.sections] == [s.tag for s in plan_two.sections]


# -- the music ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "bpm"),
    [("pop", 110), ("rock", 132), ("dance", 124), ("hiphop", 90), ("jazz", 140), ("folk", 96)],
)
def test_drum_onsets_repeat_at_the_tagged_tempo(family: str, bpm: int) -> None:
    render, _ = _render(_tags(family, bpm), 24.0, seed=3)
    period_s = _beat_period_s(render.stems["drums"].mean(axis=0), bpm)
    assert period_s == pytest.approx(60.0 / bpm, rel=0.03)


@pytest.mark.parametrize(("family", "key"), [("pop", "C major"), ("rock", "F# minor")])
def test_bass_plays_the_chord_roots(family: str, key: str) -> None:
    render, plan = _render(_tags(family, 110, key), seed=5)
    bass = render.stems["bass"].mean(axis=0)
    matches = []
    for bar in range(plan.n_bars - 1):
        # Every groove plays the root on the downbeat; analyse just that note (the first
        # eighth), since repeated notes in a longer window comb the spectrum off-pitch.
        start = int(bar * plan.bar_s * SAMPLE_RATE)
        segment = bass[start : start + int(0.45 * plan.beat_s * SAMPLE_RATE)]
        pitch_class = _dominant_pitch_class(segment, 30.0, 200.0)
        matches.append(_pitch_class_distance(pitch_class, plan.chord_at_bar(bar).root_pc) < 0.5)
    assert matches[0], "first bar's bass is not the first chord's root"
    assert np.mean(matches) >= 0.9


def test_bass_lives_below_200_hz_and_lead_above_it() -> None:
    render, _ = _render(_tags())
    for name, low_share in (("bass", True), ("lead", False)):
        x = render.stems[name].mean(axis=0)
        spectrum = np.abs(np.fft.rfft(x)) ** 2
        frequencies = np.fft.rfftfreq(len(x), 1.0 / SAMPLE_RATE)
        share_below = spectrum[frequencies < 200].sum() / spectrum.sum()
        assert (share_below > 0.6) if low_share else (share_below < 0.1), name


def test_harmony_and_melody_are_diatonic_to_the_key() -> None:
    _, plan = _render(_tags(key="E minor"))
    scale = {(4 + step) % 12 for step in (0, 2, 3, 5, 7, 8, 10)}
    assert {int(e.midi) % 12 for e in write_harmony(plan, 1)} <= scale
    assert {int(e.midi) % 12 for e in write_lead(plan, 1)} <= scale


def test_chorus_is_louder_than_verse() -> None:
    render, plan = _render(_tags())
    verse, chorus = _section_slice(plan, "verse"), _section_slice(plan, "chorus")
    assert _rms(render.mix[:, chorus]) > 1.1 * _rms(render.mix[:, verse])
    assert _rms(render.stems["drums"][:, chorus]) > _rms(render.stems["drums"][:, verse])


def test_lead_sings_one_note_per_syllable() -> None:
    render, plan = _render(_tags())
    syllables = sum(len(split_syllables(line)) for s in plan.sections for line in s.lines)
    assert syllables >= 30
    notes = write_lead(plan, 1)
    sung = [note for note in notes if note.syllable is not None]
    assert len(sung) == syllables
    # In the audio, the lead's onsets (spectral flux) account for most syllables; legato
    # glides between same-vowel syllables are the ones an onset detector can merge.
    assert _onset_count(render.stems["lead"].mean(axis=0)) >= 0.75 * syllables


def test_chorus_hook_repeats() -> None:
    plan = plan_song(_tags(), LYRICS, 60.0, 1)
    choruses = [s for s in plan.sections if s.tag == "chorus" and s.lines]
    assert len(choruses) >= 2
    notes = write_lead(plan, 1)

    def melody(section_start_s: float, section_end_s: float) -> list[float]:
        return [n.midi for n in notes if section_start_s <= n.start_s < section_end_s]

    first, second = ((s.start_bar * plan.bar_s, s.end_bar * plan.bar_s) for s in choruses[:2])
    shared = min(len(choruses[0].lines), len(choruses[1].lines))
    syllables = sum(len(split_syllables(line)) for line in choruses[0].lines[:shared])
    assert melody(*first)[:syllables] == melody(*second)[:syllables]


def test_instrumental_still_has_a_lead_melody() -> None:
    render, plan = _render(_tags("dance", 124), instrumental=True)
    assert all(not section.lines for section in plan.sections)
    notes = write_lead(plan, 1)
    assert len(notes) >= 16 and len({n.midi for n in notes}) >= 5
    assert all(note.syllable is None for note in notes)
    assert _rms(render.stems["lead"]) > 0.1 * _rms(render.mix)
    assert _onset_count(render.stems["lead"].mean(axis=0)) >= 0.6 * len(notes)


def test_empty_lyrics_invent_a_form_with_verse_and_chorus() -> None:
    render, plan = _render(_tags("ambient", 70), 90.0, sections=[])
    tags = [section.tag for section in plan.sections]
    assert tags[0] == "intro" and tags[-1] == "outro"
    assert "verse" in tags and "chorus" in tags
    assert _rms(render.stems["lead"]) > 0


def test_form_truncates_long_lyrics_and_reaches_the_chorus() -> None:
    long_lyrics = [
        LyricSection("verse", LYRICS[0].lines * 3),
        LyricSection("chorus", LYRICS[1].lines),
    ]
    plan = plan_song(_tags(), long_lyrics, 30.0, 1)
    assert [s.tag for s in plan.sections] == ["intro", "verse", "chorus", "outro"]
    assert 2 <= plan.sections[0].n_bars <= 4
    assert plan.sections[1].n_bars * plan.bar_s < 20
    assert plan.n_bars == int(np.ceil(30.0 / plan.bar_s))


def test_form_repeats_the_chorus_when_lyrics_are_short() -> None:
    plan = plan_song(_tags(), LYRICS, 180.0, 1)
    choruses = [s for s in plan.sections if s.tag == "chorus"]
    assert len(choruses) >= 3 and all(s.lines for s in choruses)
    assert plan.n_bars == int(np.ceil(180.0 / plan.bar_s))


def test_chorus_progression_differs_from_verse() -> None:
    for seed in range(6):
        plan = plan_song(_tags(), LYRICS, 60.0, seed)
        verse = next(s for s in plan.sections if s.tag == "verse")
        chorus = next(s for s in plan.sections if s.tag == "chorus")
        assert [c.root_pc for c in verse.chords[:4]] != [c.root_pc for c in chorus.chords[:4]]
        assert plan.sections[-1].chords[-1].root_pc == plan.key.tonic_pc  # ends home


def test_families_get_their_own_grooves() -> None:
    def kicks_per_bar(family: str) -> float:
        plan = plan_song(_tags(family, 120), [], 60.0, 1)
        chorus = next(s for s in plan.sections if s.tag == "chorus")
        hits = [
            h
            for h in write_drums(plan, 1)
            if h.instrument == "kick"
            and chorus.start_bar * plan.bar_s <= h.start_s < chorus.end_bar * plan.bar_s
        ]
        return len(hits) / chorus.n_bars

    assert kicks_per_bar("dance") == pytest.approx(4.0, abs=0.3)  # four on the floor
    plan = plan_song(_tags("jazz", 140), [], 60.0, 1)
    assert any(h.instrument == "ride" for h in write_drums(plan, 1))
    plan = plan_song(_tags("classical", 80), [], 60.0, 1)
    assert not any(h.instrument in ("snare", "hat", "clap") for h in write_drums(plan, 1))
    assert style_for_tags(_tags("not-a-family")).groove == "pop"
    assert all(style_for_tags(_tags(family)).family == family for family in GENRE_FAMILIES)
    assert style_for_tags(_tags("hiphop")).bass_timbre == "808"


def test_moods_and_instruments_shape_the_style() -> None:
    sad = style_for_tags(_tags(moods=["sad", "melancholic"]))
    happy = style_for_tags(_tags(moods=["energetic", "happy"]))
    assert sad.energy < happy.energy and sad.brightness < happy.brightness
    assert style_for_tags(_tags("rock", instruments=["piano"])).harmony_timbre == "keys"
    assert style_for_tags(_tags(instruments=["strings"])).harmony_timbre == "strings"


def test_on_progress_is_called_monotonically_to_the_end() -> None:
    calls: list[tuple[int, int]] = []
    callback: Callable[[int, int], None] = lambda step, steps: calls.append((step, steps))  # noqa: E731
    render_sketch(_tags(), LYRICS, 8.0, 1, on_progress=callback)
    steps = calls[0][1]
    assert steps >= 4 and all(total == steps for _, total in calls)
    assert [step for step, _ in calls] == list(range(1, steps + 1))


@pytest.mark.parametrize("timbre", sorted(TIMBRES))
def test_notes_start_and_end_in_silence(timbre: str) -> None:
    note = NoteSynth(SAMPLE_RATE).note(timbre, 57.0, 0.3, 0.7)
    peak = float(np.max(np.abs(note)))
    assert peak > 0.05
    assert np.all(np.abs(note[:, 0]) < 1e-3 * peak)
    assert np.all(np.abs(note[:, -1]) < 1e-3 * peak)
    # The release is smooth: no sample-to-sample step near the end bigger than mid-note ones.
    tail_steps = np.abs(np.diff(note[:, -int(0.01 * SAMPLE_RATE) :], axis=1)).max()
    body_steps = np.abs(np.diff(note[:, : int(0.2 * SAMPLE_RATE)], axis=1)).max()
    assert tail_steps <= body_steps


def test_held_syllables_longer_than_the_breath_noise_bed() -> None:
    # Regression: a line of one or two syllables stretched over bars made the sung voice ask for
    # more breath noise than its 2 s bed, which crashed the render.
    from pipeline.lyrics import parse_lyrics
    from pipeline.tags import normalize_style

    tags = normalize_style("acoustic folk, warm")
    sections = parse_lyrics("[verse]\nfields of gold\n[chorus]\nhome")
    for seed in (42, 43):
        rendered = render_sketch(tags, sections, 6.0, seed)
        assert rendered.mix.shape == (2, 6 * 48_000)
        assert np.isfinite(rendered.mix).all()
