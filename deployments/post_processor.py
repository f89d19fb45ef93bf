"""`PostProcessor` — masters, encodes, signs and stores one variation.

Wraps the pure functions of `pipeline/` (loudness, watermark, encoders, HLS, C2PA, peaks) and
writes every artefact to the object store under deterministic keys, so a re-run after a crash
overwrites rather than duplicates. Order matters for provenance: master → watermark → encode each
format → sign each file (C2PA, after its final encode; nothing re-encodes a signed file). HLS
segments are cut from the m4a's AAC frames before signing: fragments cannot carry a C2PA manifest.
`DeliveryChain` (watermark, encode, sign) is shared with the stems of a song (`StemMaker`) and
with the `OnDemandEncoder`.

Only `postprocess.eager_formats` (m4a by default) are encoded here, with the HLS rendition and
the peaks. When other formats are served, the delivered master (mastered and watermarked) is
kept once, as 24-bit FLAC (`serve.store.master_key`), with the content credentials its files
are signed with (`master_info_key`): the `OnDemandEncoder` makes a lazy format from them on its
first request, signed exactly as an eager file would have been (`deliver_from_master`).
The work is CPU-bound and runs on the replica's one mastering thread, so a replica masters one
variation at a time whatever its `max_ongoing_requests`. The default of 2 is a prefetch of one:
the second request fetches its render while the first is mastered and starts the moment the
thread is free, instead of waiting in the caller's handle, whose retries back off up to 0.5 s
while every replica is busy (docs/benchmarks.md, "the ceiling on two cores"). Scale with replicas.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

from serve.store import (
    MASTER_CONTENT_TYPE,
    MASTER_INFO_CONTENT_TYPE,
    master_info_key,
    master_key,
    open_object_store,
    variation_audio_key,
    variation_key,
)


def _songserve_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("songserve")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


SONGSERVE_VERSION = _songserve_version()  # signed into every file's credentials

if TYPE_CHECKING:
    import numpy as np

    from pipeline.provenance import SongCredentials, SourceIngredient
    from serve.config import AudioFormat, PostProcessConfig, StorageConfig
    from serve.store import ObjectStore

    from .renders import RenderedSong


@dataclass(frozen=True)
class Provenance:
    """Who made a variation, for its content credentials. `prompt_sha256` is the SHA-256 of the
    user's text (the prompt, else the lyrics, else the style): the text itself is never signed."""

    title: str
    seed: int
    prompt_sha256: str
    created: str  # ISO 8601 with zone
    lora_id: str | None = None
    edit: str | None = None  # extend / repaint / cover
    source: str | None = None  # what was edited ("songserve:song/<id>/variation/<n>", …)
    source_title: str | None = None
    source_key: str | None = None  # a signed file of the source: the manifest's ingredient


@dataclass(frozen=True)
class ProcessedVariation:
    duration_s: float
    sample_rate: int
    loudness_lufs: float
    true_peak_dbtp: float
    objects: dict[str, str]  # format / "peaks" / "hls" / "master" → object key
    timings_s: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, object] = field(default_factory=dict)  # watermark and c2pa status
    # Of the raw render (`pipeline.stems.render_fingerprint`): exact stems are checked against it.
    fingerprint: list[float] = field(default_factory=list)


class DeliveryChain:
    """What every delivered file goes through after mastering — a song's and each of its stems':
    the watermark (when configured), the encoders, and C2PA signing after the final encode."""

    def __init__(self, config: PostProcessConfig, *, watermark: bool = True) -> None:
        """Raises ValueError naming the setting when signing is on but the chain is missing.
        `watermark=False` loads no watermarker (for audio that carries its mark already).

        The builder hands over the chain and key themselves (`c2pa.cert_pem` / `key_pem`), so a
        replica on any node signs without the builder's disk; a config without them (a test, a
        benchmark) has its `cert_path` / `key_path` read here instead.
        """
        from pipeline.engines.audioseal import AudioSealWatermarker
        from serve.certs import private_signing_files, with_signing_chain

        self.config = config
        # None without weights: files then say "not configured", never claim a watermark.
        self.watermarker = AudioSealWatermarker.from_config(config.watermark) if watermark else None
        self._signer = config.c2pa
        if config.c2pa.enabled:
            # pipeline.provenance reads the signer from files: give it this process's own copy.
            self._signer = private_signing_files(with_signing_chain(config.c2pa), owner=self)

    def watermark(self, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, object]:
        """`audio` with the watermark embedded, and the status a record shows; `audio` itself
        and "not configured" without a watermarker."""
        if self.watermarker is None:
            return audio, "not configured"
        return self.watermarker.embed(audio, sample_rate), {"embedded": True, "model": "audioseal"}

    def encode(
        self,
        audio: np.ndarray,
        sample_rate: int,
        timings: dict[str, float],
        formats: Sequence[AudioFormat] | None = None,
    ) -> dict[AudioFormat, bytes]:
        """`audio` in each of `formats` (default: every served format), timing each encoder
        into `timings`."""
        from pipeline.encode import encode_audio

        encoded: dict[AudioFormat, bytes] = {}
        for fmt in self.config.formats if formats is None else formats:
            started = time.perf_counter()
            encoded[fmt] = encode_audio(
                audio,
                sample_rate,
                fmt,
                bitrate_kbps=self.config.bitrate_kbps,
                aac_coder=self.config.aac_coder,
            )
            add_elapsed(timings, f"encode_{fmt}", started)
        return encoded

    def sign(
        self,
        encoded: dict[AudioFormat, bytes],
        credentials: SongCredentials,
        source: SourceIngredient | None = None,
    ) -> tuple[dict[AudioFormat, bytes], dict[str, object]]:
        """Each file with its content credentials embedded (unchanged when signing is off), and
        the status a record shows. An edit's files name their `source` as an ingredient."""
        from pipeline.provenance import sign_audio

        if not self.config.c2pa.enabled:
            return encoded, {"signed": False}
        signed = {
            fmt: sign_audio(data, fmt, credentials, self._signer, source)
            for fmt, data in encoded.items()
        }
        status: dict[str, object] = {"signed": True, "formats": list(encoded)}
        if source is not None:
            status["ingredient"] = source.title
        return signed, status


def source_ingredient(title: str | None, data: bytes | None) -> SourceIngredient | None:
    """An edit's source file as its manifests' ingredient; None when there is none to name (a
    source kept in no signable format) or its format is unknown."""
    from pipeline.provenance import SourceIngredient, sniff_audio_format

    fmt = sniff_audio_format(data) if data else None
    if data is None or fmt is None:
        return None
    return SourceIngredient(title=title or "source", data=data, fmt=fmt)


def master_info(
    sample_rate: int, credentials: SongCredentials, source: Provenance | None = None
) -> bytes:
    """What is kept next to a variation's master (`serve.store.master_info_key`), as JSON: its
    rate, its credentials and (for an edit) its source's file, named in lazy formats too."""
    info: dict[str, object] = {"sample_rate": sample_rate, "credentials": asdict(credentials)}
    if source is not None and source.source_key is not None:
        info |= {"source_key": source.source_key, "source_title": source.source_title}
    return json.dumps(info).encode()


def deliver_from_master(
    delivery: DeliveryChain,
    master: bytes,
    info: bytes,
    fmt: AudioFormat,
    source: SourceIngredient | None = None,
) -> tuple[bytes, dict[str, float]]:
    """File `fmt` of a variation made from its kept master (24-bit FLAC) and info (JSON): encoded,
    then signed with the credentials the eager files got. Returns the file and its timings."""
    from pipeline.encode import decode_audio
    from pipeline.provenance import SongCredentials

    timings: dict[str, float] = {}
    started = time.perf_counter()
    described = json.loads(info)
    audio, sample_rate = decode_audio(master)
    if sample_rate != described["sample_rate"]:
        raise ValueError(f"the master is {sample_rate} Hz; its info says otherwise: {described}")
    add_elapsed(timings, "decode_master", started)
    encoded = delivery.encode(audio, sample_rate, timings, [fmt])
    started = time.perf_counter()
    signed, status = delivery.sign(encoded, SongCredentials(**described["credentials"]), source)
    if status["signed"]:
        add_elapsed(timings, "c2pa", started)
    return signed[fmt], timings


def song_credentials(
    provenance: Provenance,
    *,
    model: str,
    model_version: str,
    loudness_lufs: float,
    stem: str | None = None,
    stem_method: str | None = None,
) -> SongCredentials:
    """The content credentials of a variation's file (or of one of its stems)."""
    from pipeline.provenance import SongCredentials

    return SongCredentials(
        title=provenance.title if stem is None else f"{provenance.title} — {stem}",
        model_id=model,
        model_version=model_version,
        seed=provenance.seed,
        prompt_sha256=provenance.prompt_sha256,
        created=provenance.created,
        loudness_lufs=loudness_lufs,
        songserve_version=SONGSERVE_VERSION,
        lora_id=provenance.lora_id,
        stem=stem,
        stem_method=stem_method,
        edit=provenance.edit,
        source=provenance.source,
    )


async def _get_if_kept(objects: ObjectStore, key: str) -> bytes | None:
    """An object's bytes; None when it was deleted (an edit's source may be, meanwhile)."""
    try:
        return await objects.get(key)
    except KeyError:
        return None


def add_elapsed(timings: dict[str, float], name: str, started: float) -> None:
    """Add the seconds since `started` (a perf_counter reading) to `timings[name]`."""
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - started


@dataclass(frozen=True)
class _Artefact:
    key: str
    data: bytes
    content_type: str
    record_as: str | None  # the name in the variation's `objects`, None for HLS segments


class PostProcessor:
    def __init__(self, config: PostProcessConfig, storage: StorageConfig) -> None:
        """Raises ValueError naming the setting when signing is on but the chain is missing."""
        self._config = config
        self._objects = open_object_store(storage)
        self._delivery = DeliveryChain(config)
        # One variation is mastered at a time (more at once only share the cores): a second
        # request admitted to this replica fetches its render meanwhile and starts the moment
        # the first is done.
        self._mastering = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mastering")

    def _master_and_encode(
        self,
        rendered: RenderedSong,
        raw: bytes,
        target_lufs: float,
        provenance: Provenance,
        job_id: str,
        index: int,
        source: SourceIngredient | None = None,
    ) -> tuple[list[_Artefact], ProcessedVariation]:
        from pipeline.audio import raw_render_from_bytes
        from pipeline.encode import CONTENT_TYPES, encode_audio
        from pipeline.loudness import normalize_loudness
        from pipeline.peaks import peaks_document
        from pipeline.stems import render_fingerprint

        timings: dict[str, float] = {}
        audio = raw_render_from_bytes(raw)
        started = time.perf_counter()
        mastered = normalize_loudness(
            audio,
            rendered.sample_rate,
            target_lufs=target_lufs,
            ceiling_dbtp=self._config.ceiling_dbtp,
        )
        timings["loudness"] = time.perf_counter() - started
        # After mastering (the level the listener hears), before any encode.
        started = time.perf_counter()
        marked, watermark = self._delivery.watermark(mastered.audio, rendered.sample_rate)
        if self._delivery.watermarker is not None:
            # The delta is small but not zero: what is reported is measured on what is delivered.
            from pipeline.loudness import measure_loudness_lufs, true_peak_dbtp

            mastered = replace(
                mastered,
                audio=marked,
                loudness_lufs=measure_loudness_lufs(marked, rendered.sample_rate),
                true_peak_dbtp=true_peak_dbtp(marked, rendered.sample_rate, oversample=8),
            )
            timings["watermark"] = time.perf_counter() - started
        encoded = self._delivery.encode(
            mastered.audio, rendered.sample_rate, timings, self._config.eager
        )
        artefacts: list[_Artefact] = []
        if "m4a" in encoded:
            # HLS from the m4a's own AAC frames (before signing: fragments cannot carry a
            # manifest): no second encode, same audio as the download.
            from pipeline.hls import hls_content_type, hls_from_m4a

            started = time.perf_counter()
            hls = hls_from_m4a(encoded["m4a"], segment_s=self._config.hls_segment_s)
            for name, data in hls.items():
                # Segments sit next to their playlist, which the record names.
                record_as = "hls" if name == "index.m3u8" else None
                key = variation_key(job_id, index, f"hls/{name}")
                artefacts.append(_Artefact(key, data, hls_content_type(name), record_as))
            timings["hls"] = time.perf_counter() - started
        lufs = round(float(mastered.loudness_lufs), 2)
        started = time.perf_counter()
        credentials = song_credentials(
            provenance,
            model=rendered.model,
            model_version=rendered.model_version,
            loudness_lufs=lufs,
        )
        delivered, signed = self._delivery.sign(encoded, credentials, source)
        if signed["signed"]:
            timings["c2pa"] = time.perf_counter() - started
            # Lazy formats are signed with the same credentials when they are first asked for.
            signed = {**signed, "formats": list(self._config.formats)}
        for fmt, data in delivered.items():
            key = variation_audio_key(job_id, index, fmt)
            artefacts.append(_Artefact(key, data, CONTENT_TYPES[fmt], fmt))
        if self._config.lazy:
            started = time.perf_counter()
            master = encode_audio(mastered.audio, rendered.sample_rate, "flac")
            info = master_info(rendered.sample_rate, credentials, provenance if source else None)
            artefacts.append(
                _Artefact(master_key(job_id, index), master, MASTER_CONTENT_TYPE, "master")
            )
            artefacts.append(
                _Artefact(master_info_key(job_id, index), info, MASTER_INFO_CONTENT_TYPE, None)
            )
            timings["master"] = time.perf_counter() - started
        started = time.perf_counter()
        peaks = peaks_document(mastered.audio, rendered.sample_rate, self._config.samples_per_peak)
        peaks_json = json.dumps(peaks, separators=(",", ":")).encode()
        key = variation_key(job_id, index, "peaks.json")
        artefacts.append(_Artefact(key, peaks_json, "application/json", "peaks"))
        timings["peaks"] = time.perf_counter() - started
        summary = ProcessedVariation(
            duration_s=mastered.audio.shape[-1] / rendered.sample_rate,
            sample_rate=rendered.sample_rate,
            loudness_lufs=lufs,
            true_peak_dbtp=round(float(mastered.true_peak_dbtp), 2),
            objects={},
            timings_s=timings,
            provenance={"watermark": watermark, "c2pa": signed},
            fingerprint=render_fingerprint(audio, rendered.sample_rate),
        )
        return artefacts, summary

    async def process(
        self,
        rendered: RenderedSong,
        *,
        job_id: str,
        index: int,
        target_lufs: float,
        provenance: Provenance,
    ) -> ProcessedVariation:
        """Master to `target_lufs` (true peak ≤ the ceiling), encode the eager formats, sign
        each file with its content credentials, cut the HLS rendition and the waveform peaks,
        keep the master when lazy formats are served, store them, and return the measurements,
        object keys and provenance status. The raw render is read from the object store
        (`rendered.render_key`); KeyError when missing."""
        started = time.perf_counter()
        raw = await self._objects.get(rendered.render_key)
        source = None
        if provenance.source_key is not None and self._config.c2pa.enabled:
            source = source_ingredient(
                provenance.source_title, await _get_if_kept(self._objects, provenance.source_key)
            )
        fetched_s = time.perf_counter() - started
        artefacts, summary = await asyncio.get_running_loop().run_in_executor(
            self._mastering,
            self._master_and_encode,
            rendered,
            raw,
            target_lufs,
            provenance,
            job_id,
            index,
            source,
        )
        started = time.perf_counter()
        objects: dict[str, str] = {}
        for artefact in artefacts:
            await self._objects.put(artefact.key, artefact.data, artefact.content_type)
            if artefact.record_as is not None:
                objects[artefact.record_as] = artefact.key
        timings = {**summary.timings_s, "fetch": fetched_s, "store": time.perf_counter() - started}
        return replace(summary, objects=objects, timings_s=timings)

    async def check_health(self) -> None:
        return None
