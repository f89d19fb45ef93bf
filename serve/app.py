"""`build_app` — builds the songserve deployment graph from one `AppConfig`.

Serve config files name it as `import_path: serve.app:build_app` and pass the config as `args:`.
Deployment classes stay undecorated; every Serve option (replicas, autoscaling, concurrency and
queue limits, shutdown grace, actor resources and placement) is applied here from the config.

    SongAPI ─┬─▶ Conductor ─┬─▶ LyricsLLM
             │              ├─▶ TagNormalizer
             │              ├─▶ SongRouter ─▶ decoder pools (one SongDecoder deployment each)
             │              ├─▶ PostProcessor   (master, eager formats, HLS, peaks, kept master)
             │              └─▶ StemMaker ─▶ StemSeparator (Demucs; only with a checkpoint)
             ├─▶ LyricsLLM        (POST /v1/lyrics)
             ├─▶ TagNormalizer    (POST /v1/tags/normalize)
             ├─▶ OnDemandEncoder  (first GET of a lazy format: encode, sign, store once)
             └─▶ Verifier         (POST /v1/verify)

Heavy work (renders, masterings, LLM generations, stems) and the calls clients wait on
interactively have separate capacity: verify and lazy encodes never queue behind a mastering.
Peaks, HLS and stored files are read by the SongAPI from the object store.
"""

# No `from __future__ import annotations` here: Serve inspects the builder's parameter
# annotation (a model class would make it validate `args:`; a union leaves them a dict).
import logging
from typing import Any

from ray import serve
from ray.serve import Application

from deployments.api import SongAPI
from deployments.api import app as fastapi_app
from deployments.conductor import Conductor
from deployments.decoder import SongDecoder
from deployments.encoder import OnDemandEncoder
from deployments.lyrics_llm import LyricsLLM
from deployments.post_processor import PostProcessor
from deployments.song_router import SongRouter
from deployments.stem_maker import StemMaker
from deployments.stem_separator import StemSeparator
from deployments.tag_normalizer import TagNormalizer
from deployments.verifier import Verifier

from .autoscaling import backlog_pools, report_settings
from .config import (
    AppConfig,
    DecoderPoolConfig,
    DeploymentOptions,
    StorageConfig,
    literal_secrets,
    resolve_config,
)
from .placement import (
    cluster_nodes,
    unplaceable_pools,
    unplaceable_reason,
)
from .startup import check_startup

logger = logging.getLogger("ray.serve")


def _deployment(cls: type, name: str, options: DeploymentOptions) -> Any:
    return serve.deployment(cls, name=name, **options.to_serve())


def decoder_deployment(pool: DecoderPoolConfig, storage: StorageConfig) -> Application:
    """One decoder pool as a bound deployment: its Serve options, and its batching settings as
    `user_config` so they can be changed live. Benchmarks deploy pools through this too."""
    return (
        _deployment(SongDecoder, pool.name, pool.deployment)
        .options(user_config=pool.batching.model_dump())
        .bind(pool, storage)
    )


def build_app(args: AppConfig | dict[str, Any]) -> Application:
    """The application for a Serve config's `args:` (or an `AppConfig` when called directly).

    Serve hands a config file's `args:` over as the plain dict it read (the annotation is not a
    model class, so Serve does not convert it), which lets the builder refuse secrets written
    into the file before anything else happens (see `serve.config.literal_secrets`)."""
    if isinstance(args, dict):
        problems = literal_secrets(args)
        if problems:
            raise ValueError("; ".join(problems))
    config = resolve_config(args)
    options = config.deployments
    _check_startup(config)
    _report_unplaceable(config)
    # The signing replicas (PostProcessor, StemMaker, OnDemandEncoder) get the chain and key
    # themselves, read here once, so a replica on any node signs without this node's disk. They
    # travel pickled in the replicas' bound init args, which the dashboard never shows (it shows
    # the config file's `args:` and each deployment's options); SecretStr masks them in any dump
    # or log line. The other deployments get `config` without them (only the paths), key from
    # the env or not.
    signing = config.postprocess
    if signing.c2pa.enabled:
        from serve.certs import ensure_dev_chain, with_signing_chain

        # Here, once, not in each replica: concurrent replicas would race to write a key pair and
        # could end with one replica's certificate and another's key. Not when the environment
        # brings a chain or key: a fresh pair could not match it.
        c2pa = signing.c2pa
        if c2pa.cert_pem is None and c2pa.key_pem is None and ensure_dev_chain(c2pa):
            logger.warning(
                "wrote a DEVELOPMENT C2PA signing chain to %s (postprocess.c2pa.create_dev_chain);"
                " use a CA-issued chain in production",
                c2pa.cert_path,
            )
        signing = signing.model_copy(update={"c2pa": with_signing_chain(c2pa)})
        unsigned = c2pa.model_copy(update={"cert_pem": None, "key_pem": None})
        config = config.model_copy(
            update={"postprocess": config.postprocess.model_copy(update={"c2pa": unsigned})}
        )

    lyrics = _deployment(LyricsLLM, "LyricsLLM", options.lyrics).bind(config.lyrics, config.storage)
    tags = _deployment(TagNormalizer, "TagNormalizer", options.tags).bind(
        config.tags, lyrics if config.tags.llm_rewrite else None
    )
    pools = {pool.name: decoder_deployment(pool, config.storage) for pool in config.models.pools}
    router = _deployment(SongRouter, "SongRouter", options.router).bind(
        config.models, pools, config.storage
    )
    postprocessor = _deployment(PostProcessor, "PostProcessor", options.postprocess).bind(
        signing, config.storage
    )
    separator = None
    if config.postprocess.stems.demucs_checkpoint is not None:
        separator = _deployment(StemSeparator, "StemSeparator", options.separator).bind(
            config.postprocess.stems, config.storage
        )
    stems = _deployment(StemMaker, "StemMaker", options.stems).bind(
        signing, config.storage, separator
    )
    conductor = _deployment(Conductor, "Conductor", options.conductor)
    if backlog_pools(config.models):  # the conductor reports the backlog (serve/autoscaling.py)
        autoscaling = options.conductor.to_serve()["autoscaling_config"]
        conductor = conductor.options(autoscaling_config=autoscaling | report_settings(config))
    conductor = conductor.bind(config, lyrics, tags, router, postprocessor, stems)
    encoder = _deployment(OnDemandEncoder, "OnDemandEncoder", options.encoder).bind(
        signing, config.storage
    )
    verifier = _deployment(Verifier, "Verifier", options.verifier).bind(
        config.postprocess.watermark
    )
    ingress = serve.ingress(fastapi_app)(SongAPI)
    return _deployment(ingress, "SongAPI", options.api).bind(
        config, conductor, lyrics, tags, router, verifier, encoder
    )


def _check_startup(config: AppConfig) -> None:
    """Refuse a config that cannot start (`serve.startup`): local stores on a cluster, required
    keys missing, and, when deploying to a connected cluster, stores that cannot be reached."""
    import ray

    connected = ray.is_initialized()
    check_startup(config, cluster_nodes() if connected else None, deploying=connected)


def _report_unplaceable(config: AppConfig) -> None:
    """Name every deployment no node of the cluster can host: Serve would leave it DEPLOYING
    without a word. Only when a cluster is connected (building offline checks nothing)."""
    import ray

    if not ray.is_initialized():
        return
    try:
        nodes = cluster_nodes()
        reasons = unplaceable_pools(config.models.pools, nodes)
        for name, options in config.deployments:
            if name == "separator" and config.postprocess.stems.demucs_checkpoint is None:
                continue  # not deployed
            reason = unplaceable_reason(options.actor, nodes)
            if reason:
                reasons[f"deployments.{name}"] = reason
    except Exception:
        logger.exception("could not check deployment placement")
        return
    for name, reason in sorted(reasons.items()):
        logger.error(
            "deployment %s cannot be placed on this cluster: %s. It will stay DEPLOYING until "
            "a node that fits joins; fix its `actor` options or start such a node.",
            name,
            reason,
        )
