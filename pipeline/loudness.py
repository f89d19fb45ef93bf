"""Loudness measurement (ITU-R BS.1770), true-peak measurement and loudness normalisation.

Pure: no Ray, no network, no global state. Audio is float32 `[channels, n_samples]` (1 or 2
channels) with an explicit `sample_rate` in Hz.

`normalize_loudness` brings a song to a target integrated loudness (LUFS) and keeps its true
peak (dBTP, on 4x and on 8x oversampled audio) at or under a ceiling, with a look-ahead
true-peak limiter written here in numpy/scipy (pyloudnorm measures, it does not limit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyloudnorm
from numpy.lib.stride_tricks import sliding_window_view
from pyloudnorm.iirfilter import IIRfilter
from scipy.ndimage import maximum_filter1d, minimum_filter1d, uniform_filter1d
from scipy.signal import firwin, lfilter

from pipeline.audio import checked_audio

# Reported loudness of silence and of anything quieter: the BS.1770 absolute gate.
SILENCE_LUFS = -70.0
# Reported true peak of digital silence (below the 24-bit noise floor of -144 dBFS).
SILENCE_DBTP = -150.0
# Most gain normalisation will apply: a near-silent take must not be blown up into noise.
MAX_GAIN_DB = 40.0
# Most the limiter is pushed past the plain gain chasing a target the ceiling all but rules out.
MAX_LIMITER_PUSH_DB = 12.0
# |final loudness - target| normalisation settles for; the contract is +/- 0.5 LU.
LOUDNESS_TOLERANCE_LU = 0.1

_BLOCK_S = 0.4  # BS.1770 gating block
_BLOCK_STEP = 0.25  # 75 % overlap between blocks
_ABSOLUTE_GATE_LUFS = -70.0
_RELATIVE_GATE_LU = -10.0

# Interpolation taps per side per phase, as scipy's resample_poly uses, so a test (or anyone)
# measuring with resample_poly(x, 4, 1) agrees to ~0.005 dB.
_INTERP_HALF_TAPS = 10
_INTERP_CHUNK = 1 << 14  # samples interpolated per product: bounds scratch memory

# The limiter detects and verifies peaks at 8x: 4x meters (BS.1770's) under-read peaks of
# content near Nyquist by up to ~0.7 dB, so 4x alone would let an 8x meter read over the ceiling.
_LIMITER_OVERSAMPLE = 8
_LOOKAHEAD_S = 0.002
_RELEASE_S = 0.06
# The limiter aims this far under the ceiling so the final exact trim is rarely needed.
_LIMITER_MARGIN_DB = 0.05
# Gain is planned on blocks of sample_rate // this many samples (8 at 48 kHz): passes are cheap.
_PLANNING_RATE_HZ = 6000
_ESTIMATE_TOLERANCE_LU = 0.02
_MAX_ESTIMATE_PASSES = 8
# Exact passes render, trim and re-measure the output; the first nearly always suffices.
_MAX_EXACT_PASSES = 3


@dataclass(frozen=True)
class MasteredAudio:
    """Normalised audio plus what was measured on it.

    audio: float32 `[channels, n_samples]`, same shape and sample rate as the input.
    loudness_lufs: integrated loudness of `audio` (BS.1770, as pyloudnorm's Meter reads it to
        ~1e-6 LU), floored at -70.
    true_peak_dbtp: true peak of `audio` on 8x oversampled audio (what the ceiling is held on;
        a 4x BS.1770 meter reads the same or up to ~0.7 dB less), floored at -150.
    gain_db: the static gain applied before limiting (limiting only ever lowers it further).
    gain: the linear gain applied to each sample, float32 `[n_samples]` (static gain, limiter
        and trim together): `audio == input * gain`, bit for bit. Mastering is this one gain
        curve, so parts of the input (a song's stems) mastered with it sum to `audio`.
    """

    audio: np.ndarray
    loudness_lufs: float
    true_peak_dbtp: float
    gain_db: float
    gain: np.ndarray


def measure_loudness_lufs(audio: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770-4 via pyloudnorm), never below -70.

    Silence, and anything quieter than the absolute gate, reads -70.0 rather than -inf. Input
    shorter than one 400 ms gating block is measured by repeating it periodically to one block,
    i.e. its ungated K-weighted power.
    """
    signal = checked_audio(audio)
    if signal.shape[1] == 0 or not np.any(signal):
        return SILENCE_LUFS
    block_len = math.ceil(_BLOCK_S * sample_rate) + 1
    if signal.shape[1] < block_len:
        signal = np.tile(signal, (1, -(-block_len // signal.shape[1])))
    meter = pyloudnorm.Meter(sample_rate)
    lufs = float(meter.integrated_loudness(signal.T))
    return max(lufs, SILENCE_LUFS) if math.isfinite(lufs) else SILENCE_LUFS


def true_peak_dbtp(audio: np.ndarray, sample_rate: int, oversample: int = 4) -> float:
    """True peak in dBTP: max |x| over all channels of the `oversample`-times oversampled audio.

    Polyphase FIR interpolation (Kaiser-windowed sinc, the filter family scipy's resample_poly
    uses); the original samples are kept exactly, so the result is never below the sample peak.
    Digital silence reads -150.0. `sample_rate` is unused by the measurement itself (it is
    relative to the sample grid) and is kept so every audio function has the same shape.
    """
    del sample_rate
    peak = _true_peak_amplitude(checked_audio(audio), oversample)
    return _amplitude_to_db(peak, SILENCE_DBTP)


def normalize_loudness(
    audio: np.ndarray,
    sample_rate: int,
    target_lufs: float = -14.0,
    ceiling_dbtp: float = -1.0,
) -> MasteredAudio:
    """Gain to `target_lufs`, then true-peak limit so the output never exceeds `ceiling_dbtp`.

    Contract (measured on the returned audio): true peak on 4x (and on 8x) oversampled audio
    <= ceiling_dbtp, and integrated loudness within +/- 0.5 LU of target_lufs (normally within
    0.1), except when the target needs more than +40 dB of gain, or more than 12 dB of limiter
    push past the plain gain (the ceiling all but rules the target out); then the result is as
    close as those caps allow, and `loudness_lufs` says where it landed. Digital silence, and
    anything under the -70 LUFS absolute gate, is returned unchanged. A signal whose true peak
    clears the ceiling after gain is only scaled, never limited. Output is float32 with the
    input's shape.

    The limiter is linked across channels: peaks come from the 8x oversampled signal, the
    needed gain is held over a 2 ms look-ahead and smoothed over the same window so it is
    already down when a peak arrives, and recovers with a 60 ms one-pole release.
    """
    # A copy: the result never aliases the caller's array, whichever path returns it.
    signal = np.array(checked_audio(audio), dtype=np.float32, order="C", copy=True)
    unity = np.ones(signal.shape[1], dtype=np.float32)
    if signal.shape[1] == 0 or not np.any(signal):
        return MasteredAudio(signal, SILENCE_LUFS, SILENCE_DBTP, 0.0, unity)

    weighted_power = _k_weighted_power(signal, sample_rate)
    input_lufs = _gated_loudness(weighted_power, sample_rate)
    if input_lufs <= SILENCE_LUFS:
        # Under the absolute gate there is nothing loudness could be normalised against.
        return MasteredAudio(
            signal,
            measure_loudness_lufs(signal, sample_rate),
            true_peak_dbtp(signal, sample_rate, oversample=_LIMITER_OVERSAMPLE),
            0.0,
            unity,
        )

    planner = _GainPlanner.for_signal(signal, weighted_power, sample_rate, ceiling_dbtp)
    plain_gain_db = min(target_lufs - input_lufs, MAX_GAIN_DB)
    max_gain_db = min(plain_gain_db + MAX_LIMITER_PUSH_DB, MAX_GAIN_DB)
    gain_db = plain_gain_db
    aim_lufs = target_lufs
    ceiling = 10.0 ** (ceiling_dbtp / 20.0)
    output, output_lufs, output_peak, gain = signal, input_lufs, 0.0, unity
    for _ in range(_MAX_EXACT_PASSES):
        gain_db, coarse_gain = planner.solve(gain_db, aim_lufs, max_gain_db)
        gain = planner.full_rate(coarse_gain).astype(np.float32)
        output = np.multiply(signal, gain, dtype=np.float32)
        output_peak = _rendered_true_peak(output, planner, coarse_gain)
        if output_peak > ceiling:
            # Interpolating a gain-modulated signal can overshoot the limiter's per-sample
            # bound by a hair; scale that away. The 0.009 dB margin covers float32 rounding and
            # how far other meters' interpolators differ from ours (~0.006 dB for resample_poly).
            trim = ceiling / output_peak * (1.0 - 1e-3)
            gain = np.multiply(gain, trim, dtype=np.float32)
            output = np.multiply(signal, gain, dtype=np.float32)
            output_peak *= trim
        # One fourth-order K-weighting pass and gating without a Python loop: reads what
        # pyloudnorm's Meter reads to ~1e-6 LU, in half the time (its biquads run twice).
        output_lufs = _gated_loudness(_k_weighted_power(output, sample_rate), sample_rate)
        miss = target_lufs - output_lufs
        if abs(miss) <= LOUDNESS_TOLERANCE_LU or (gain_db >= max_gain_db and miss > 0):
            break
        # The estimate works on a decimated gain curve and ignores how K-weighting smears gain
        # changes (and the trim); that bias barely moves between passes, so aim past it.
        aim_lufs += miss
    return MasteredAudio(
        output, output_lufs, _amplitude_to_db(output_peak, SILENCE_DBTP), gain_db, gain
    )


@dataclass
class _GainPlanner:
    """Plans static gain plus limiting on a decimated grid, where each pass is cheap.

    Grid point b stands for input samples [b * step, (b + 1) * step): `peaks[b]` bounds the
    largest 8x-oversampled |x| in it (all channels), `sample_peaks[b]` is the largest |x| and
    `power[b]` its mean K-weighted power. Gain knots sit at block starts and are linearly
    interpolated to full rate; each knot is held under the needed gain of the block before it
    too, so every interpolated sample stays under its own needed gain.

    `peaks[b]` starts as a cheap upper bound (the interpolator's gain times the largest |x| its
    window reaches) and is made exact, by interpolating the block, only once some static gain
    lifts that bound to the limiter's ceiling: a block that cannot reach the ceiling needs no
    limiting whatever its exact peak, and on most music that is most blocks, so most of the 8x
    interpolation is never done. Knots are the same as with every peak exact.
    """

    signal: np.ndarray
    peaks: np.ndarray
    exact: np.ndarray
    sample_peaks: np.ndarray
    power: np.ndarray
    step: int
    n_samples: int
    sample_rate: int
    limiter_ceiling: float

    @classmethod
    def for_signal(
        cls, signal: np.ndarray, weighted_power: np.ndarray, sample_rate: int, ceiling_dbtp: float
    ) -> _GainPlanner:
        step = max(1, sample_rate // _PLANNING_RATE_HZ)
        n = signal.shape[1]
        n_blocks = -(-n // step)
        padding = n_blocks * step - n
        kernels = _interpolation_kernels(_LIMITER_OVERSAMPLE)
        sample_abs = np.abs(signal).max(axis=0)
        # Largest |x| in the window that interpolates each sample's phases (as in
        # `_true_peak_amplitude`); the 1e-5 covers float32 rounding of the products.
        reach = maximum_filter1d(sample_abs, size=kernels.shape[1], origin=-1, mode="constant")
        kernel_gain = float(np.abs(kernels).sum(axis=1).max()) * (1.0 + 1e-5)
        power = np.pad(weighted_power, (0, padding))
        return cls(
            signal=signal,
            # float64, as the knots are planned: the exact peaks written in later are float32.
            peaks=np.pad(reach, (0, padding)).reshape(n_blocks, step).max(axis=1).astype(np.float64)
            * kernel_gain,
            exact=np.zeros(n_blocks, dtype=bool),
            sample_peaks=np.pad(sample_abs, (0, padding))
            .reshape(n_blocks, step)
            .max(axis=1)
            .astype(np.float64),
            power=power.reshape(n_blocks, step).mean(axis=1),
            step=step,
            n_samples=n,
            sample_rate=sample_rate,
            limiter_ceiling=10.0 ** ((ceiling_dbtp - _LIMITER_MARGIN_DB) / 20.0),
        )

    def _make_exact_where_limited(self, static: float) -> None:
        """Exact 8x peaks of the blocks whose bound reaches the ceiling at this static gain."""
        blocks = np.flatnonzero(~self.exact & (self.peaks * static >= self.limiter_ceiling))
        if blocks.size == 0:
            return
        samples = (blocks[:, None] * self.step + np.arange(self.step)).ravel()
        samples = samples[samples < self.n_samples]  # the last block may be short
        kernels = _interpolation_kernels(_LIMITER_OVERSAMPLE)
        envelope = _interpolated_peaks(self.signal, kernels, samples)
        np.maximum(envelope, np.abs(self.signal[:, samples]).max(axis=0), out=envelope)
        starts = np.arange(blocks.size) * self.step
        self.peaks[blocks] = np.maximum.reduceat(envelope, starts)
        self.exact[blocks] = True

    def knots(self, gain_db: float) -> np.ndarray:
        """Gain knots (static gain times limiting), one per block plus a closing one."""
        static = 10.0 ** (gain_db / 20.0)
        self._make_exact_where_limited(static)
        needed = np.minimum(1.0, self.limiter_ceiling / np.maximum(self.peaks * static, 1e-30))
        knots = np.append(needed, needed[-1])
        if needed.min() < 1.0:
            block_rate = self.sample_rate / self.step
            lookahead = max(1, math.ceil(_LOOKAHEAD_S * block_rate))
            knots[:-1] = _limiter_gain(needed, lookahead, 1.0 / (_RELEASE_S * block_rate))
            knots[-1] = knots[-2]
        return static * knots

    def estimate_lufs(self, knots: np.ndarray) -> float:
        block_gain = 0.5 * (knots[:-1] + knots[1:])
        return _gated_loudness(self.power * np.square(block_gain), self.sample_rate / self.step)

    def solve(
        self, gain_db: float, aim_lufs: float, max_gain_db: float
    ) -> tuple[float, np.ndarray]:
        """Static gain (dB) whose limited output is estimated at `aim_lufs`, and its knots.

        Loudness rises monotonically with static gain but ever more slowly as the limiter works
        harder, so a secant step (slope clamped to [0.05, 1]) converges in a few passes.
        """
        previous: tuple[float, float] | None = None
        knots = self.knots(gain_db)
        for _ in range(_MAX_ESTIMATE_PASSES):
            estimate = self.estimate_lufs(knots)
            miss = aim_lufs - estimate
            if abs(miss) <= _ESTIMATE_TOLERANCE_LU or (gain_db >= max_gain_db and miss > 0):
                break
            slope = 1.0
            if previous is not None and gain_db != previous[0]:
                slope = min(max((estimate - previous[1]) / (gain_db - previous[0]), 0.05), 1.0)
            previous = (gain_db, estimate)
            gain_db = min(gain_db + miss / slope, max_gain_db)
            knots = self.knots(gain_db)
        return gain_db, knots

    def full_rate(self, knots: np.ndarray) -> np.ndarray:
        """Per-sample gain: knots linearly interpolated across each block."""
        fraction = np.arange(self.step, dtype=np.float64) / self.step
        start, end = knots[:-1, None], knots[1:, None]
        return (start + (end - start) * fraction).reshape(-1)[: self.n_samples]


def _rendered_true_peak(output: np.ndarray, planner: _GainPlanner, knots: np.ndarray) -> float:
    """Exact 8x-oversampled peak of `output` = input * full_rate(knots), interpolating little.

    Output phase values at sample i split as g[i] * x_phase(i) plus sum_j k_j x[i+j] (g[i+j] -
    g[i]); per block that is at most max(g) * peaks + range(g nearby) * sum|k| * max|x nearby|.
    Only blocks whose bound reaches the largest value found so far are interpolated, loudest
    bound first: on limited audio that is a few percent of the blocks, where the generic
    bound (blind to the gain) would be nearly all of them.
    """
    kernels = _interpolation_kernels(_LIMITER_OVERSAMPLE)
    step = planner.step
    # Blocks on either side that a sample's interpolation window (+/- half the taps) can touch.
    reach = -(-(kernels.shape[1] // 2) // step)
    span = 2 * reach + 1
    gain_high = np.maximum(knots[:-1], knots[1:])
    nearby_high = maximum_filter1d(knots, size=span + 1, origin=-1, mode="nearest")[:-1]
    nearby_low = minimum_filter1d(knots, size=span + 1, origin=-1, mode="nearest")[:-1]
    nearby_x = maximum_filter1d(planner.sample_peaks, size=span, mode="constant")
    kernel_gain = float(np.abs(kernels).sum(axis=1).max())
    bound = gain_high * planner.peaks + (nearby_high - nearby_low) * kernel_gain * nearby_x
    bound *= 1.0 + 1e-5  # float32 rounding of the rendered samples
    found = float(np.abs(output).max(initial=0.0))
    candidates = np.flatnonzero(bound >= found)
    candidates = candidates[np.argsort(bound[candidates])[::-1]]
    offsets = np.arange(step)
    for start in range(0, candidates.size, _INTERP_CHUNK // step):
        blocks = candidates[start : start + _INTERP_CHUNK // step]
        if bound[blocks[0]] < found:
            break
        samples = (blocks[:, None] * step + offsets).ravel()
        samples = samples[samples < output.shape[1]]
        found = max(found, float(_interpolated_peaks(output, kernels, samples).max(initial=0.0)))
    return found


def _limiter_gain(needed: np.ndarray, lookahead: int, release_per_sample: float) -> np.ndarray:
    """Smooth gain curve g with g[t] <= needed[t] and g[t] <= needed[t - 1] for every t.

    The needed gain is held as a minimum over [t - 1, t + lookahead - 1]; a one-pole release
    lets the gain recover exponentially (in dB) from each hold; a moving average over the
    previous `lookahead` samples smooths the attack. Every sample inside that average is held
    at or below the needed gain at t (and t - 1), so smoothing never lets a peak through.
    """
    size = lookahead + 1
    held = minimum_filter1d(needed, size=size, origin=1 - size // 2, mode="nearest")
    # Instant attack, one-pole release: reduction[t] = max(held_reduction[t], a * reduction[t-1])
    # on reductions in log-gain. Unrolled, log(reduction[t]) is a running maximum of
    # log(held_reduction[k]) + k * r, minus t * r (r = -log a): numpy does it without a loop.
    with np.errstate(divide="ignore"):
        log_reduction = np.log(-np.log(held))
    ramp = np.arange(held.size, dtype=np.float64) * release_per_sample
    log_released = np.maximum.accumulate(log_reduction + ramp) - ramp
    released = np.exp(-np.exp(log_released))
    return uniform_filter1d(released, size=lookahead, origin=(lookahead - 1) // 2, mode="nearest")


def _k_weighted_power(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """Per-sample K-weighted power summed over channels (BS.1770 weights, 1.0 for L and R)."""
    shelf = IIRfilter(4.0, 1.0 / math.sqrt(2.0), 1500.0, sample_rate, "high_shelf")
    high_pass = IIRfilter(0.0, 0.5, 38.0, sample_rate, "high_pass")
    # One fourth-order pass instead of two biquads: same response, half the passes over memory.
    b = np.convolve(shelf.b, high_pass.b)
    a = np.convolve(shelf.a, high_pass.a)
    weighted = lfilter(b, a, signal.astype(np.float64), axis=1)
    return np.einsum("ct,ct->t", weighted, weighted)


def _gated_loudness(weighted_power: np.ndarray, sample_rate: float) -> float:
    """BS.1770 gated loudness (LUFS) of a per-sample K-weighted power, floored at -70.

    Blocks, gates and their boundary rounding mirror pyloudnorm's Meter so that an unprocessed
    signal reads the same here as in `measure_loudness_lufs`; this version needs no Python loop
    over blocks and accepts the power of a limited signal without re-filtering it.
    """
    n = weighted_power.size
    block_len = _BLOCK_S * sample_rate
    if n == 0:
        return SILENCE_LUFS
    if n < block_len:
        mean_power = float(weighted_power.mean())
        return max(_power_to_lufs(mean_power), SILENCE_LUFS)
    duration_s = n / sample_rate
    n_blocks = int(np.round((duration_s - _BLOCK_S) / (_BLOCK_S * _BLOCK_STEP))) + 1
    j = np.arange(n_blocks, dtype=np.float64)
    lower = (_BLOCK_S * (j * _BLOCK_STEP) * sample_rate).astype(np.int64)
    upper = np.minimum((_BLOCK_S * (j * _BLOCK_STEP + 1) * sample_rate).astype(np.int64), n)
    cumulative = np.concatenate(([0.0], np.cumsum(weighted_power)))
    block_power = (cumulative[upper] - cumulative[lower]) / block_len
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10.0 * np.log10(np.maximum(block_power, 0.0))
    above_absolute = block_lufs >= _ABSOLUTE_GATE_LUFS
    if not above_absolute.any():
        return SILENCE_LUFS
    relative_gate = _power_to_lufs(float(block_power[above_absolute].mean())) + _RELATIVE_GATE_LU
    gated = (block_lufs > relative_gate) & (block_lufs > _ABSOLUTE_GATE_LUFS)
    if not gated.any():
        return SILENCE_LUFS
    return max(_power_to_lufs(float(block_power[gated].mean())), SILENCE_LUFS)


def _power_to_lufs(mean_power: float) -> float:
    return -0.691 + 10.0 * math.log10(mean_power) if mean_power > 0.0 else -math.inf


def _interpolation_kernels(oversample: int) -> np.ndarray:
    """Polyphase interpolator as an `[oversample - 1, 2 * H]` matrix, H = _INTERP_HALF_TAPS.

    Row p - 1 gives phase p / oversample after sample i as the dot product of
    x[i - H + 1 : i + H + 1] with it. The prototype is scipy resample_poly's default (Kaiser
    beta 5, H taps per side per phase); each phase is normalised to unit DC gain so a constant
    stays constant. Phase 0 is the original samples.
    """
    half = _INTERP_HALF_TAPS
    prototype = firwin(2 * half * oversample + 1, 1.0 / oversample, window=("kaiser", 5.0))
    offsets = np.arange(-(half - 1), half + 1)
    centre = half * oversample
    kernels = np.stack([prototype[centre + p - oversample * offsets] for p in range(1, oversample)])
    return (kernels / kernels.sum(axis=1, keepdims=True)).astype(np.float32)


def _interpolated_peaks(
    signal: np.ndarray, kernels: np.ndarray, indices: np.ndarray | None = None
) -> np.ndarray:
    """Max |x| over all channels and the interpolated phases (not phase 0) after each sample.

    `indices` picks the samples (default: all of them); the result has one value per sample
    picked, float32.
    """
    width = kernels.shape[1]
    padded = np.pad(signal.astype(np.float32, copy=False), ((0, 0), (width // 2 - 1, width // 2)))
    windows = sliding_window_view(padded, width, axis=1)
    n_picked = signal.shape[1] if indices is None else indices.size
    peaks = np.zeros(n_picked, dtype=np.float32)
    for start in range(0, n_picked, _INTERP_CHUNK):
        stop = min(start + _INTERP_CHUNK, n_picked)
        for channel_windows in windows:
            # Sliced windows multiply without a gather copy; picked ones must be gathered.
            block = (
                channel_windows[start:stop]
                if indices is None
                else channel_windows[indices[start:stop]]
            )
            # einsum rather than matmul: these skinny products go through BLAS, whose thread
            # pool turns erratic (10x slower) when cores are shared; einsum stays on this core.
            values = np.abs(np.einsum("pt,st->ps", kernels, block))
            np.maximum(peaks[start:stop], values.max(axis=0), out=peaks[start:stop])
    return peaks


def _true_peak_amplitude(signal: np.ndarray, oversample: int) -> float:
    """Largest |x| of the oversampled signal, interpolating only where it could be the largest.

    An interpolated value is at most (sum of |kernel| of its phase) times the largest |x| in its
    window, and the answer is at least the sample peak; windows that cannot beat the sample
    peak are skipped. The result is identical to interpolating everywhere, for a fraction of
    the work on all but heavily limited audio.
    """
    sample_peaks = np.abs(signal).max(axis=0).astype(np.float32)
    top = float(sample_peaks.max(initial=0.0))
    if top == 0.0 or oversample <= 1:
        return top
    kernels = _interpolation_kernels(oversample)
    gain_bound = float(np.abs(kernels).sum(axis=1).max())
    reach = maximum_filter1d(sample_peaks, size=kernels.shape[1], origin=-1, mode="constant")
    candidates = np.flatnonzero(reach * gain_bound >= top * (1.0 - 1e-6))
    interpolated = _interpolated_peaks(signal, kernels, candidates)
    return max(top, float(interpolated.max(initial=0.0)))


def _amplitude_to_db(amplitude: float, floor_db: float) -> float:
    return max(20.0 * math.log10(amplitude), floor_db) if amplitude > 0.0 else floor_db
