"""Encode float audio to delivery formats, and decode any of them back, in memory with PyAV.

Pure: no Ray, no network, no global state. Audio is float32 `[channels, n_samples]` (1 or 2
channels) with an explicit `sample_rate` in Hz; samples outside [-1, 1] are clipped on encode.

Formats:
    m4a   AAC-LC in an MP4 ("ipod" muxer, M4A brand), `moov` before `mdat` (faststart) so
          players can start before the download ends. `bitrate_kbps` applies.
    mp3   LAME, constant bitrate `bitrate_kbps`, with a Xing/LAME info frame that records the
          encoder delay and padding (gapless decode).
    flac  lossless, 24-bit.
    wav   PCM signed 24-bit little-endian (pcm_s24le): same depth as FLAC, so the two lossless
          downloads decode to identical samples.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from pipeline.audio import checked_audio

if TYPE_CHECKING:
    # FFmpeg's libraries are imported where audio is encoded or decoded, not with the format
    # tables: coordinators that only name formats or content types (the conductor hashing a
    # prompt for provenance) never load them.
    import av

AUDIO_FORMATS = ("m4a", "mp3", "flac", "wav")
CONTENT_TYPES = {"m4a": "audio/mp4", "mp3": "audio/mpeg", "flac": "audio/flac", "wav": "audio/wav"}

# 24-bit full scale: int = round(x * 2**23), kept in [-2**23, 2**23 - 1]. Decoders divide by
# 2**23 (FFmpeg: by 2**31 after the 8-bit shift), so this scale round-trips exactly.
_INT24_SCALE = float(1 << 23)
_AVIO_FLAG_READ = 1  # libavformat's AVIO_FLAG_READ
# Samples per frame for encoders that take any frame size (PCM): bounds per-frame overhead.
_DEFAULT_FRAME_SIZE = 4096


@dataclass(frozen=True)
class _Recipe:
    """How one delivery format is produced: muxer, encoder and the encoder's input layout."""

    container: str
    codec: str
    sample_format: str  # "fltp": planar float; "s32": packed int32 holding 24-bit samples
    lossy: bool
    container_options: dict[str, str] = field(default_factory=dict)
    codec_options: dict[str, str] = field(default_factory=dict)


_RECIPES = {
    "m4a": _Recipe("ipod", "aac", "fltp", True, {"movflags": "+faststart"}),
    "mp3": _Recipe("mp3", "libmp3lame", "fltp", True),
    "flac": _Recipe("flac", "flac", "s32", False, codec_options={"bits_per_raw_sample": "24"}),
    "wav": _Recipe("wav", "pcm_s24le", "s32", False),
}


def encode_audio(
    audio: np.ndarray,
    sample_rate: int,
    fmt: str,
    *,
    bitrate_kbps: int = 192,
    aac_coder: str = "twoloop",
) -> bytes:
    """The whole file for `audio` in delivery format `fmt` (one of AUDIO_FORMATS).

    `bitrate_kbps` is the constant bitrate of m4a and mp3 and is ignored by flac and wav.
    `aac_coder` is how FFmpeg's AAC encoder (m4a) picks its quantisers: "twoloop", its default
    and the better-sounding, or "fast", at about half the CPU.
    Mono stays mono, stereo stays stereo; the sample rate is kept. Raises ValueError for an
    unknown format, audio that is not float `[1 or 2, n >= 1]`, or a sample rate or bitrate the
    encoder refuses (AAC: 7.35-96 kHz; MP3: 8-48 kHz).
    """
    import av

    if fmt not in _RECIPES:
        raise ValueError(f"unknown audio format {fmt!r}; expected one of {AUDIO_FORMATS}")
    recipe = _RECIPES[fmt]
    if recipe.codec == "aac":
        recipe = replace(recipe, codec_options={**recipe.codec_options, "aac_coder": aac_coder})
    samples = _clipped_float_audio(audio)
    buffer = io.BytesIO()

    def reopen_for_reading(url: str, flags: int, options: dict[str, str]) -> io.BytesIO:
        # Faststart rewrites the file with `moov` moved to the front by reading back what it
        # wrote through a second handle; in memory, that handle is a snapshot of the buffer.
        if flags != _AVIO_FLAG_READ:
            raise OSError(f"muxer asked to open {url!r} with flags {flags}; only reads expected")
        return io.BytesIO(buffer.getvalue())

    try:
        with av.open(
            buffer,
            mode="w",
            format=recipe.container,
            container_options=recipe.container_options,
            io_open=reopen_for_reading,
        ) as out:
            _encode_into(out, samples, sample_rate, recipe, bitrate_kbps)
    except av.error.FFmpegError as error:
        raise ValueError(
            f"{fmt} encoder refused {samples.shape[0]} channel(s) at {sample_rate} Hz, "
            f"{bitrate_kbps} kbps{f', aac_coder {aac_coder}' if recipe.codec == 'aac' else ''}: "
            f"{error}"
        ) from error
    return buffer.getvalue()


def _encode_into(
    out: av.container.OutputContainer,
    samples: np.ndarray,
    sample_rate: int,
    recipe: _Recipe,
    bitrate_kbps: int,
) -> None:
    import av

    layout = "mono" if samples.shape[0] == 1 else "stereo"
    stream = out.add_stream(
        recipe.codec, rate=sample_rate, layout=layout, options=recipe.codec_options
    )
    if not isinstance(stream, av.AudioStream):
        raise TypeError(f"{recipe.codec} did not open an audio stream")
    stream.format = recipe.sample_format
    if recipe.lossy:
        stream.bit_rate = bitrate_kbps * 1000
    # Opening now fixes the encoder's frame size, which frames must match (only the last may
    # be short).
    stream.codec_context.open()
    frame_size = stream.codec_context.frame_size or _DEFAULT_FRAME_SIZE
    for start in range(0, samples.shape[1], frame_size):
        frame = _to_frame(samples[:, start : start + frame_size], recipe.sample_format, layout)
        frame.sample_rate = sample_rate
        frame.pts = start
        out.mux(stream.encode(frame))
    # Flush: AAC and LAME hold back look-ahead frames until told the input has ended.
    out.mux(stream.encode(None))


def decode_audio(data: bytes, *, max_duration_s: float | None = None) -> tuple[np.ndarray, int]:
    """Decode an audio file (format probed by FFmpeg) to float32 `[channels, n]` and rate.

    Takes the first audio stream. Encoder priming and padding are dropped where the file
    records them (MP4 edit list and last-sample duration, LAME info frame), so lossy round
    trips keep their length. With `max_duration_s`, decoding stops after that much audio (the
    result is cut to it): untrusted uploads cannot make the decoder run for long. Raises
    ValueError if the data holds no decodable audio.
    """
    import av

    chunks: list[np.ndarray] = []
    decoded = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise ValueError("no audio stream in data")
            stream = container.streams.audio[0]
            sample_rate = stream.codec_context.sample_rate
            resampler: av.AudioResampler | None = None
            for frame in container.decode(stream):
                if resampler is None:
                    # Same rate and layout, planar float32: a pure sample-format conversion.
                    resampler = av.AudioResampler(
                        format="fltp", layout=frame.layout.name, rate=frame.sample_rate
                    )
                converted = [f.to_ndarray() for f in resampler.resample(frame)]
                if converted:
                    chunks.append(_trimmed_to_duration(np.concatenate(converted, axis=1), frame))
                    decoded += chunks[-1].shape[-1]
                if max_duration_s is not None and decoded >= max_duration_s * sample_rate:
                    break
    except av.error.FFmpegError as error:
        raise ValueError(f"undecodable audio: {error}") from error
    if not chunks:
        raise ValueError("no audio frames in data")
    audio = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    if max_duration_s is not None:
        audio = audio[:, : round(max_duration_s * sample_rate)]
    return audio, sample_rate


def _trimmed_to_duration(samples: np.ndarray, frame: av.AudioFrame) -> np.ndarray:
    """Drop decoded samples beyond the frame's container duration.

    An MP4's last AAC packet is stored with the duration of the real samples it carries (the
    rest is encoder padding) but decodes to a full 1024; FFmpeg does not trim it, so do it here.
    """
    if not frame.duration or frame.time_base is None:
        return samples
    keep = round(float(frame.duration * frame.time_base) * frame.sample_rate)
    return samples[:, :keep] if 0 < keep < samples.shape[1] else samples


def _to_frame(chunk: np.ndarray, sample_format: str, layout: str) -> av.AudioFrame:
    """One encoder frame from float `[channels, n]` samples already clipped to [-1, 1]."""
    import av

    if sample_format == "fltp":
        planar = np.ascontiguousarray(chunk, dtype=np.float32)
        return av.AudioFrame.from_ndarray(planar, format=sample_format, layout=layout)
    # Packed s32 carrying 24-bit samples in its top bits, interleaved as [1, n * channels].
    scaled = np.clip(np.rint(chunk * _INT24_SCALE), -_INT24_SCALE, _INT24_SCALE - 1)
    packed = (scaled.astype(np.int32) << 8).T.reshape(1, -1)
    return av.AudioFrame.from_ndarray(packed, format=sample_format, layout=layout)


def _clipped_float_audio(audio: np.ndarray) -> np.ndarray:
    array = checked_audio(audio, allow_non_finite=True)
    if array.shape[1] == 0:
        raise ValueError("audio has no samples; there is nothing to encode")
    # NaN would survive clipping and become an arbitrary integer; silence is the safe reading.
    return np.clip(np.nan_to_num(array.astype(np.float32), nan=0.0), -1.0, 1.0)
