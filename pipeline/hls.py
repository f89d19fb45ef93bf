"""Package a song as an HLS rendition (VOD playlist + packed ADTS AAC segments), in memory.

Pure: no Ray, no network, no global state, no files; audio is float32 `[channels, n_samples]`
(1 or 2 channels) with an explicit `sample_rate` in Hz, and the rendition comes back as a mapping
of file name to bytes that the caller stores side by side (all URIs are relative).

Format choice: packed audio (RFC 8216 §3.4), i.e. each segment is raw ADTS AAC-LC frames behind
an ID3v2 tag whose PRIV frame `com.apple.streaming.transportStreamTimestamp` carries the 90 kHz
MPEG-2 timestamp of the segment's first sample. Safari/AVFoundation, hls.js, ExoPlayer and
FFmpeg's HLS demuxer all play it, and any AAC decoder opens a single `.aac` segment on its own.
Against MPEG-TS it saves the 188-byte packet and PES overhead (a few percent at 192 kbps) and a
second muxer, and because we cut the frames ourselves every segment boundary and timestamp is
exact to the sample, not whatever a segmenting muxer rounded to. fMP4 is the only HLS format
that could signal the encoder priming (edit list), but web players apply edit lists unevenly,
so it would cost an init segment and a second code path for a 21 ms gain at the song's start.

Gaplessness, exactly: the AAC is encoded once (by `pipeline.encode`, so the frames are the very
frames of the m4a download) and the frame sequence is cut on frame boundaries (1024 samples), so
the segments played in order are one uninterrupted AAC stream: no sample is lost or repeated
between segments, each segment's ID3 timestamp is the sum of the previous segments' durations,
and each EXTINF is the exact duration of the frames it holds (printed to the microsecond). What
ADTS cannot express is the encoder's priming and final padding, so a decoder yields
`priming + n_samples + padding` samples, where `priming` is the encoder delay (1024 samples for
FFmpeg's AAC encoder: the song starts that many samples into the first segment) and
`0 <= padding < 1024` fills the last frame. The EXTINF durations sum to that decoded length,
which is the song's length plus less than two frames (< 43 ms at 48 kHz).

`package_hls` encodes and delegates to `hls_from_m4a`, which packages an m4a from
`pipeline.encode` (e.g. the download the API already made) without re-encoding.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Mapping
from fractions import Fraction

import av
import numpy as np

from pipeline.encode import encode_audio

HLS_PLAYLIST_NAME = "index.m3u8"
HLS_CONTENT_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".aac": "audio/aac"}

_AAC_FRAME_SAMPLES = 1024  # AAC-LC: every frame (ADTS raw data block) decodes to 1024 samples
_MPEG_CLOCK_HZ = 90_000  # MPEG-2 system clock that the PRIV timestamp counts in
_TIMESTAMP_MASK = (1 << 33) - 1  # the timestamp is 33 bits; the upper 31 of its 8 bytes are zero
_TIMESTAMP_OWNER = b"com.apple.streaming.transportStreamTimestamp"


def package_hls(
    audio: np.ndarray, sample_rate: int, *, segment_s: float = 4.0, bitrate_kbps: int = 192
) -> dict[str, bytes]:
    """The HLS rendition of `audio`: `index.m3u8` plus segments `seg-00000.aac`, `seg-00001.aac`, ….

    The playlist is a VOD media playlist (#EXT-X-PLAYLIST-TYPE:VOD, #EXT-X-ENDLIST) whose segment
    URIs are bare file names, relative to the playlist. Segment k ends at the AAC frame boundary
    at or just before `(k + 1) * segment_s` seconds of the song, so there are exactly
    `ceil(n_samples / (segment_s * sample_rate))` segments, each within one frame (21 ms at
    48 kHz) of `segment_s`; the last one is shorter, or at most two frames longer when the song
    ends just before a multiple of `segment_s` (it also carries the padding). Durations and
    gaplessness are as stated in the module docstring; #EXT-X-TARGETDURATION is the longest
    EXTINF rounded up (RFC 8216 only asks for rounded to nearest). AAC-LC, `bitrate_kbps`
    constant bitrate, channels and sample rate kept. Raises ValueError for audio that is not
    float `[1 or 2, n >= 1]`, a rate or bitrate the AAC encoder refuses (7.35-96 kHz), or a
    `segment_s` shorter than one AAC frame.
    """
    _segment_samples(segment_s, sample_rate)  # refuse before spending the encode
    m4a = encode_audio(audio, sample_rate, "m4a", bitrate_kbps=bitrate_kbps)
    return hls_from_m4a(m4a, segment_s=segment_s)


def hls_from_m4a(m4a: bytes, *, segment_s: float = 4.0) -> dict[str, bytes]:
    """The HLS rendition of an m4a made by `encode_audio(..., "m4a")`, without re-encoding.

    Same contract as `package_hls` (which only delegates here); the segments carry the m4a's
    AAC frames unchanged, so an API that already has the m4a download pays only for remuxing
    (a few percent of the encode). The song's length and the encoder priming are read from
    the MP4 (last sample's end, first sample's negative timestamp). Raises ValueError if the
    data holds no AAC stream or `segment_s` is shorter than one AAC frame.
    """
    files: dict[str, bytes] = {}
    entries: list[tuple[str, int]] = []  # (segment name, its frames)
    try:
        container = av.open(io.BytesIO(m4a), mode="r")
    except av.error.FFmpegError as error:
        raise ValueError(f"not an m4a: {error}") from error
    with container:
        if not container.streams.audio or container.streams.audio[0].codec_context.name != "aac":
            raise ValueError("no AAC audio stream in the m4a")
        stream = container.streams.audio[0]
        sample_rate = stream.codec_context.sample_rate
        segment_samples = _segment_samples(segment_s, sample_rate)
        # Every stored frame, priming frame included: the MP4 marks it discardable (its edit
        # list skips the priming), but ADTS has no such signal, so players decode it as is.
        frames = [packet for packet in container.demux(stream) if packet.size]
        if not frames:
            raise ValueError("the m4a holds no AAC frames")
        priming = -_samples(frames[0].pts, stream.time_base, sample_rate)
        last = frames[-1]
        if last.pts is None or last.duration is None:
            raise ValueError("the m4a's last AAC frame has no timestamp or duration")
        n_samples = _samples(last.pts + last.duration, stream.time_base, sample_rate)
        boundaries = _segment_boundaries(n_samples, priming, len(frames), segment_samples)
        for index, (start, stop) in enumerate(itertools.pairwise(boundaries)):
            name = f"seg-{index:05d}.aac"
            first_sample = start * _AAC_FRAME_SAMPLES
            files[name] = _id3_timestamp_tag(first_sample, sample_rate) + _adts(
                stream, frames[start:stop]
            )
            entries.append((name, stop - start))
    files[HLS_PLAYLIST_NAME] = _media_playlist(entries, sample_rate).encode()
    return files


def _segment_samples(segment_s: float, sample_rate: int) -> float:
    segment_samples = segment_s * sample_rate
    if not math.isfinite(segment_samples) or segment_samples < _AAC_FRAME_SAMPLES:
        raise ValueError(
            f"segment_s={segment_s} is shorter than one AAC frame "
            f"({_AAC_FRAME_SAMPLES} samples at {sample_rate} Hz)"
        )
    return segment_samples


def _samples(pts: int | None, time_base: Fraction | None, sample_rate: int) -> int:
    """A stream timestamp as a sample count (MP4 audio time bases are usually 1/sample_rate)."""
    if pts is None or time_base is None:
        raise ValueError("the m4a's AAC frames carry no timestamps")
    return round(pts * time_base * sample_rate)


def hls_file_names(files: Mapping[str, bytes]) -> list[str]:
    """The rendition's file names: the playlist first, then its segments in playback order.

    Read from the playlist itself (non-comment lines), so it lists exactly what players fetch.
    Raises KeyError if `files` has no `index.m3u8`.
    """
    playlist = files[HLS_PLAYLIST_NAME].decode()
    segments = [line for line in playlist.splitlines() if line and not line.startswith("#")]
    return [HLS_PLAYLIST_NAME, *segments]


def hls_content_type(name: str) -> str:
    """The HTTP Content-Type for a file of the rendition, from its extension."""
    for extension, content_type in HLS_CONTENT_TYPES.items():
        if name.endswith(extension):
            return content_type
    raise ValueError(f"{name!r} is not an HLS playlist or segment name")


def _segment_boundaries(
    n_samples: int, priming: int, n_frames: int, segment_samples: float
) -> list[int]:
    """Frame indices where segments start, plus `n_frames`: cuts at the frame boundary at or
    before each multiple of `segment_samples` on the song's timeline (which starts `priming`
    samples into the decoded stream). Flooring keeps the last segment non-empty, and since the
    grid is absolute, per-segment rounding never accumulates into drift.
    """
    n_segments = math.ceil(n_samples / segment_samples)
    cuts = [
        math.floor((k * segment_samples + priming) / _AAC_FRAME_SAMPLES)
        for k in range(1, n_segments)
    ]
    return [0, *cuts, n_frames]


def _adts(template: av.AudioStream, frames: list[av.Packet]) -> bytes:
    """The frames as an ADTS byte stream (a 7-byte header per frame, no ID3 of its own)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="adts") as out:
        stream = out.add_stream_from_template(template)
        for frame in frames:
            frame.stream = stream
            out.mux(frame)
    return buffer.getvalue()


def _id3_timestamp_tag(first_sample: int, sample_rate: int) -> bytes:
    """ID3v2.4 tag with the PRIV frame HLS packed audio requires: the 33-bit 90 kHz timestamp of
    the segment's first sample (rounded when the rate does not divide 90 kHz evenly)."""
    ticks = round(first_sample * _MPEG_CLOCK_HZ / sample_rate) & _TIMESTAMP_MASK
    payload = _TIMESTAMP_OWNER + b"\x00" + ticks.to_bytes(8, "big")
    frame = b"PRIV" + _syncsafe(len(payload)) + b"\x00\x00" + payload
    return b"ID3\x04\x00\x00" + _syncsafe(len(frame)) + frame


def _syncsafe(value: int) -> bytes:
    """ID3v2 size: 28 bits as four 7-bit bytes."""
    return bytes((value >> shift) & 0x7F for shift in (21, 14, 7, 0))


def _media_playlist(entries: list[tuple[str, int]], sample_rate: int) -> str:
    samples = [n_frames * _AAC_FRAME_SAMPLES for _, n_frames in entries]
    target_s = max(-(-n // sample_rate) for n in samples)  # integer ceil: no float error
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",  # 3: decimal EXTINF durations
        f"#EXT-X-TARGETDURATION:{target_s}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
    ]
    for (name, _), n in zip(entries, samples, strict=True):
        lines += [f"#EXTINF:{n / sample_rate:.6f},", name]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"
