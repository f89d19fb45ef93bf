"""package_hls renditions play in a real HLS client (FFmpeg's HLS demuxer) gaplessly and in full.

What is guaranteed (pipeline/hls.py docstring) and tested exactly here: the segments decode as one
uninterrupted AAC stream of `PRIMING + n + padding` samples, 0 <= padding < 1024, whose samples
after the priming are bit-identical to the gapless decode of the m4a download; EXTINF durations
sum to that length; each segment's ID3 timestamp is where the previous ones end.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.encode import decode_audio, encode_audio
from pipeline.hls import (
    HLS_PLAYLIST_NAME,
    hls_content_type,
    hls_file_names,
    hls_from_m4a,
    package_hls,
)

FRAME = 1024  # samples per AAC frame
PRIMING = 1024  # FFmpeg's AAC encoder delay: the song starts this far into the decoded stream
TIMESTAMP_OWNER = b"com.apple.streaming.transportStreamTimestamp\x00"


@dataclass(frozen=True)
class Case:
    duration_s: float
    sample_rate: int
    segment_s: float
    extra_samples: int = 0

    @property
    def n_samples(self) -> int:
        return round(self.duration_s * self.sample_rate) + self.extra_samples


CASES = {
    "30s-48k": Case(30.0, 48_000, 4.0),
    "7.3s-one-short-segment": Case(7.3, 48_000, 4.0),
    # Neither the length nor the segment is a whole number of frames, and 44.1 kHz frame
    # starts are not whole 90 kHz ticks.
    "odd-length-44k": Case(10.5, 44_100, 3.0, extra_samples=37),
}


def _sweep(n_samples: int, sample_rate: int) -> np.ndarray:
    """Stereo logarithmic sine sweep 50 Hz → 12 kHz; the right channel lags and is quieter."""
    t = np.arange(n_samples) / sample_rate
    duration_s = n_samples / sample_rate
    f0, f1 = 50.0, 12_000.0
    rate = math.log(f1 / f0)
    phase = 2 * np.pi * f0 * duration_s / rate * (np.exp(t / duration_s * rate) - 1)
    return np.stack([0.5 * np.sin(phase), 0.3 * np.sin(phase - 0.7)]).astype(np.float32)


@dataclass(frozen=True)
class Rendition:
    case: Case
    audio: np.ndarray
    files: dict[str, bytes]
    directory: Path
    extinf_s: list[float]
    uris: list[str]
    target_duration_s: int


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def rendition(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    case = CASES[request.param]
    audio = _sweep(case.n_samples, case.sample_rate)
    files = package_hls(audio, case.sample_rate, segment_s=case.segment_s)
    directory = tmp_path_factory.mktemp(request.param)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    playlist = files[HLS_PLAYLIST_NAME].decode()
    target = re.search(r"^#EXT-X-TARGETDURATION:(\d+)$", playlist, re.M)
    assert target is not None
    return Rendition(
        case=case,
        audio=audio,
        files=files,
        directory=directory,
        extinf_s=[float(d) for d in re.findall(r"^#EXTINF:([0-9.]+),$", playlist, re.M)],
        uris=[line for line in playlist.splitlines() if line and not line.startswith("#")],
        target_duration_s=int(target.group(1)),
    )


def _decode(path: Path) -> tuple[np.ndarray, list[int], list[int]]:
    """Decoded samples `[channels, n]` of a file or playlist, with each frame's pts and length."""
    chunks, pts, lengths = [], [], []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks.append(frame.to_ndarray())
            pts.append(frame.pts)
            lengths.append(frame.samples)
    return np.concatenate(chunks, axis=1), pts, lengths


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    # Elementwise sums, not np.corrcoef: BLAS's thread pool stalls erratically on shared cores.
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))


def _id3_timestamp(segment: bytes) -> int:
    assert segment[:3] == b"ID3"
    size = 0
    for byte in segment[6:10]:  # syncsafe: 7 bits per byte
        size = (size << 7) | (byte & 0x7F)
    tag = segment[10 : 10 + size]
    owner_at = tag.index(TIMESTAMP_OWNER) + len(TIMESTAMP_OWNER)
    assert tag[:4] == b"PRIV"
    assert segment[10 + size : 10 + size + 2] == b"\xff\xf1"  # ADTS sync, MPEG-4, no CRC
    return int.from_bytes(tag[owner_at : owner_at + 8], "big")


def test_playlist_is_a_vod_media_playlist(rendition: Rendition) -> None:
    case, playlist = rendition.case, rendition.files[HLS_PLAYLIST_NAME].decode()
    lines = playlist.splitlines()
    assert lines[0] == "#EXTM3U"
    assert "#EXT-X-VERSION:3" in lines
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in lines
    assert lines[-1] == "#EXT-X-ENDLIST"
    assert len(rendition.extinf_s) == len(rendition.uris)
    assert len(rendition.uris) == math.ceil(case.n_samples / (case.segment_s * case.sample_rate))
    for uri in rendition.uris:
        assert re.fullmatch(r"seg-\d{5}\.aac", uri), "URIs are bare names, relative to it"
        assert (rendition.directory / uri).is_file()
    assert set(rendition.files) == {HLS_PLAYLIST_NAME, *rendition.uris}
    assert hls_file_names(rendition.files) == [HLS_PLAYLIST_NAME, *rendition.uris]
    # RFC 8216 needs round(EXTINF) <= target; we keep the stricter ceil.
    assert all(rendition.target_duration_s >= math.ceil(d) for d in rendition.extinf_s)
    assert rendition.target_duration_s == math.ceil(max(rendition.extinf_s))
    frame_s = FRAME / case.sample_rate
    for duration in rendition.extinf_s[:-1]:
        assert abs(duration - case.segment_s) <= frame_s
    assert 0 < rendition.extinf_s[-1] <= case.segment_s + 2 * frame_s
    # Whole frames each, and in total the song plus priming plus under one frame of padding.
    frames = [d * case.sample_rate / FRAME for d in rendition.extinf_s]
    assert frames == pytest.approx([round(f) for f in frames], abs=1e-3)
    total_samples = sum(rendition.extinf_s) * case.sample_rate
    expected = FRAME * math.ceil((PRIMING + case.n_samples) / FRAME)
    assert total_samples == pytest.approx(expected, abs=1e-6 * case.sample_rate * len(frames))
    assert PRIMING + case.n_samples <= expected < PRIMING + case.n_samples + FRAME


def test_hls_client_decodes_the_song_gaplessly(rendition: Rendition) -> None:
    """FFmpeg's HLS demuxer reads the playlist and every segment as one continuous stream."""
    case = rendition.case
    decoded, pts, lengths = _decode(rendition.directory / HLS_PLAYLIST_NAME)
    assert decoded.shape[0] == 2
    # Exactly priming + song + padding (< one frame): nothing lost or repeated at the cuts.
    padding = decoded.shape[1] - PRIMING - case.n_samples
    assert 0 <= padding < FRAME
    assert decoded.shape[1] == round(sum(rendition.extinf_s) * case.sample_rate)
    # Timestamps (90 kHz, from the ID3 tags) advance by exactly one frame across segment cuts.
    assert pts[0] == 0
    steps = np.diff(np.asarray(pts, dtype=np.int64))
    assert np.all(np.abs(steps - FRAME * 90_000 / case.sample_rate) <= 1)
    assert set(lengths) == {FRAME}
    # After the priming the stream is sample-for-sample the gapless m4a download.
    m4a = encode_audio(rendition.audio, case.sample_rate, "m4a")
    reference, _ = decode_audio(m4a)
    assert reference.shape[1] == case.n_samples
    song = decoded[:, PRIMING : PRIMING + case.n_samples]
    np.testing.assert_array_equal(song, reference)
    # And it is the song: aligned at lag 0 and close to it.
    for channel in range(2):
        assert _correlation(song[channel], rendition.audio[channel]) > 0.999


def test_each_segment_decodes_on_its_own(rendition: Rendition) -> None:
    """A single `.aac` segment opens in any AAC decoder and holds its slice of the song."""
    case = rendition.case
    first_frame = 0
    for uri, duration_s in zip(rendition.uris, rendition.extinf_s, strict=True):
        segment = rendition.files[uri]
        assert _id3_timestamp(segment) == round(first_frame * FRAME * 90_000 / case.sample_rate)
        decoded, _, _ = _decode(rendition.directory / uri)
        n_frames = round(duration_s * case.sample_rate / FRAME)
        assert decoded.shape == (2, n_frames * FRAME)
        # Skip the first frame: decoded alone, it lacks the previous frame's overlap-add.
        start = (first_frame + 1) * FRAME - PRIMING
        stop = min((first_frame + n_frames) * FRAME - PRIMING, case.n_samples)
        original = rendition.audio[0, max(start, 0) : stop]
        heard = decoded[0, FRAME + max(start, 0) - start : FRAME + stop - start]
        assert np.sqrt(np.mean(heard**2)) > 0.1, f"{uri} is silent"
        assert _correlation(heard, original) > 0.99, uri
        first_frame += n_frames


def test_from_m4a_is_the_same_rendition_without_reencoding() -> None:
    """The API can package the m4a download it already has; same frames, same files."""
    audio = _sweep(round(5.5 * 44_100) + 11, 44_100)
    m4a = encode_audio(audio, 44_100, "m4a", bitrate_kbps=128)
    assert hls_from_m4a(m4a, segment_s=2.0) == package_hls(
        audio, 44_100, segment_s=2.0, bitrate_kbps=128
    )
    with pytest.raises(ValueError, match="no AAC"):
        hls_from_m4a(encode_audio(audio, 44_100, "flac"))
    with pytest.raises(ValueError, match="not an m4a"):
        hls_from_m4a(b"not audio at all")


def test_rejects_segments_shorter_than_a_frame() -> None:
    audio = _sweep(48_000, 48_000)
    with pytest.raises(ValueError, match="shorter than one AAC frame"):
        package_hls(audio, 48_000, segment_s=0.01)
    with pytest.raises(ValueError, match="channels"):
        package_hls(audio[0], 48_000)


def test_content_types() -> None:
    assert hls_content_type("index.m3u8") == "application/vnd.apple.mpegurl"
    assert hls_content_type("seg-00003.aac") == "audio/aac"
    with pytest.raises(ValueError, match="not an HLS"):
        hls_content_type("song.mp3")
