"""pipeline.editing: the sample arithmetic of extend and repaint (pure numpy, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.editing import (
    EDIT_CROSSFADE_S,
    LEVEL_MATCH_MAX_DB,
    fitted_source,
    match_level,
    splice_edit,
    splice_window,
    window_samples,
)

SR = 48_000
FADE = round(EDIT_CROSSFADE_S * SR)


def noise(seconds: float, seed: int) -> np.ndarray:
    return (
        np.random.default_rng(seed).uniform(-0.5, 0.5, (2, round(seconds * SR))).astype(np.float32)
    )


def test_window_samples_rounds_and_clips() -> None:
    assert window_samples(1.0, 2.5, SR, 4 * SR) == (SR, round(2.5 * SR))
    assert window_samples(-1.0, 9.0, SR, 4 * SR) == (0, 4 * SR)
    assert window_samples(3.0, 1.0, SR, 4 * SR) == (3 * SR, 3 * SR)  # empty, never reversed
    assert window_samples(5.0, 6.0, SR, 4 * SR) == (4 * SR, 4 * SR)


def test_fitted_source_pads_with_silence_or_cuts() -> None:
    source = noise(1.0, 0)
    padded = fitted_source(source, 3 * SR)
    assert padded.shape == (2, 3 * SR) and padded.dtype == np.float32
    assert np.array_equal(padded[:, :SR], source)
    assert not padded[:, SR:].any()
    cut = fitted_source(source, SR // 2)
    assert np.array_equal(cut, source[:, : SR // 2]) and cut.flags.c_contiguous


def test_repaint_keeps_the_source_outside_the_window_exactly() -> None:
    source, rendered = noise(4.0, 1), noise(4.0, 2)
    start, end = SR, 3 * SR
    out = splice_window(source, rendered, start, end, SR)
    assert np.array_equal(out[:, :start], source[:, :start])
    assert np.array_equal(out[:, end:], source[:, end:])
    # Inside, past the crossfades, the new audio.
    assert np.array_equal(out[:, start + FADE : end - FADE], rendered[:, start + FADE : end - FADE])
    # The crossfades mix both: equal power, so neither side alone.
    fade_in = out[:, start : start + FADE]
    assert not np.array_equal(fade_in, source[:, start : start + FADE])
    assert not np.array_equal(fade_in, rendered[:, start : start + FADE])
    # The first crossfade sample is almost all source, the last almost all new audio.
    assert np.allclose(out[:, start], source[:, start], atol=1e-3)
    assert np.allclose(out[:, end - 1], source[:, end - 1], atol=1e-3)


def test_a_window_from_the_start_has_no_join_there() -> None:
    """Repainting from sample 0: no old audio before the window, so no crossfade from it."""
    source, rendered = noise(4.0, 3), noise(4.0, 4)
    out = splice_window(source, rendered, 0, 2 * SR, SR)
    assert np.array_equal(out[:, : 2 * SR - FADE], rendered[:, : 2 * SR - FADE])
    assert np.array_equal(out[:, 2 * SR :], source[:, 2 * SR :])


def test_a_window_to_the_end_has_no_join_there() -> None:
    source, rendered = noise(4.0, 5), noise(4.0, 6)
    out = splice_window(source, rendered, 2 * SR, 4 * SR, SR)
    assert np.array_equal(out[:, : 2 * SR], source[:, : 2 * SR])
    assert np.array_equal(out[:, 2 * SR + FADE :], rendered[:, 2 * SR + FADE :])


def test_extension_keeps_the_source_and_joins_continuously() -> None:
    source, rendered = noise(2.0, 7), noise(5.0, 8)
    start = source.shape[-1]
    out = splice_window(source, rendered, start, rendered.shape[-1], SR)
    assert out.shape == rendered.shape
    assert np.array_equal(out[:, :start], source)
    # No fade-in from silence: the new audio carries an offset that closes the gap at the join
    # and decays over the crossfade.
    step = np.abs(out[:, start] - out[:, start - 1])
    assert (step < np.abs(rendered[:, start] - source[:, -1]) + 1e-6).all()
    assert (step <= np.abs(rendered[:, start] - rendered[:, start - 1]) + 1e-3).all()
    assert np.array_equal(out[:, start + FADE :], rendered[:, start + FADE :])


def test_a_source_shorter_than_the_start_keeps_what_it_has() -> None:
    """Past the source's end the result is the rendered audio (no broadcast error)."""
    source, rendered = noise(1.0, 9), noise(4.0, 10)
    out = splice_window(source, rendered, 2 * SR, 3 * SR, SR)
    assert np.array_equal(out[:, :SR], source)
    assert np.array_equal(out[:, SR : 2 * SR], rendered[:, SR : 2 * SR])
    assert np.array_equal(out[:, 3 * SR :], rendered[:, 3 * SR :])


def test_a_source_ending_inside_the_first_crossfade_fades_over_what_it_has() -> None:
    source, rendered = noise(2.1, 11), noise(4.0, 12)
    start, kept = 2 * SR, source.shape[-1]
    out = splice_window(source, rendered, start, 4 * SR, SR)
    assert np.array_equal(out[:, :start], source[:, :start])
    assert not np.array_equal(out[:, start:kept], rendered[:, start:kept])
    assert np.array_equal(out[:, kept:], rendered[:, kept:])


def test_short_windows_shorten_the_crossfades() -> None:
    source, rendered = noise(1.0, 13), noise(1.0, 14)
    start, end = SR // 4, SR // 4 + 100
    out = splice_window(source, rendered, start, end, SR)
    assert np.array_equal(out[:, :start], source[:, :start])
    assert np.array_equal(out[:, end:], source[:, end:])
    # Fades of 50 samples each: the middle of the window is the seam between them.
    assert np.allclose(out[:, start + 49], rendered[:, start + 49], atol=0.05)


def test_an_empty_window_is_the_source() -> None:
    source, rendered = noise(1.0, 15), noise(1.0, 16)
    assert np.array_equal(splice_window(source, rendered, SR // 2, SR // 2, SR), source)


@pytest.mark.parametrize("window", [(-1, 10), (10, 5), (0, SR + 1)])
def test_windows_outside_the_song_are_refused(window: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="outside the song"):
        splice_window(noise(1.0, 17), noise(1.0, 18), *window, SR)


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


def test_an_edit_is_brought_to_the_sources_level() -> None:
    """A mastered source and a model's quieter render of the same song: the new window comes in
    at the source's level, and the source's samples outside it stay exact."""
    source, rendered = 0.6 * noise(4.0, 19), 0.2 * noise(4.0, 20)  # 9.5 dB apart
    start, end = SR, 3 * SR
    out = splice_edit(source, rendered, start, end, SR)
    assert np.array_equal(out[:, :start], source[:, :start])
    assert np.array_equal(out[:, end:], source[:, end:])
    inside = out[:, start + FADE : end - FADE]
    assert _rms(inside) == pytest.approx(_rms(source[:, start:end]), rel=0.05)
    # The gain is the level difference measured where both have the same stretch of song.
    gain = _rms(np.concatenate([source[:, :start], source[:, end:]], axis=1)) / _rms(
        np.concatenate([rendered[:, :start], rendered[:, end:]], axis=1)
    )
    assert np.allclose(match_level(source, rendered, start, end, SR), rendered * gain, rtol=1e-5)


def test_level_matching_is_bounded_and_needs_something_to_compare() -> None:
    source = noise(4.0, 21)
    whisper = 1e-3 * noise(4.0, 22)
    limit = 10 ** (LEVEL_MATCH_MAX_DB / 20)
    matched = match_level(source, whisper, SR, 2 * SR, SR)
    assert _rms(matched) == pytest.approx(_rms(whisper) * limit, rel=1e-4)
    # Silence, or too little kept source to measure, leaves the render as it is.
    silent = np.zeros_like(source)
    assert np.array_equal(match_level(silent, whisper, SR, 2 * SR, SR), whisper)
    rendered = noise(4.0, 23)
    short = source[:, : SR // 4]
    assert np.array_equal(match_level(short, rendered, SR // 4, 4 * SR, SR), rendered)
    # An extension compares the whole source with the render's same stretch.
    extended = match_level(source, 0.5 * noise(6.0, 24), 4 * SR, 6 * SR, SR)
    assert _rms(extended[:, : 4 * SR]) == pytest.approx(_rms(source), rel=1e-4)
