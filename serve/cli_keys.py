"""`songserve keys create | list | revoke`: API keys managed in the job store.

A key is shown once, when it is made, alone on the last line of the output (so scripts can take
it with `tail -1`); the store keeps only its sha256 and its first characters. Keys work on every
API replica within seconds (serve.http.auth.KEY_CACHE_S), and revoking one stops it as fast,
without a restart. The job store is the one the config file names (env SONGSERVE_DATABASE_URL
overrides it, as for the server).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = "config/local.yaml"


class KeysError(Exception):
    """A keys command that cannot be done; the message says why and what to do."""


def add_keys_parser(commands: Any, handler_error: type[Exception]) -> None:
    keys = commands.add_parser("keys", help="API keys kept (hashed) in the job store")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser("create", help="make a key; prints it once, last line")
    create.add_argument("--name", required=True, help="what the key is for, e.g. web-app")
    create.add_argument("--concurrent-jobs", type=int, help="songs queued or running at once")
    create.add_argument("--songs-per-day", type=int, help="songs per UTC day")
    create.add_argument("--audio-seconds-per-day", type=float, help="seconds of audio per day")
    listing = keys_commands.add_parser("list", help="names, prefixes, created, last used")
    revoke = keys_commands.add_parser("revoke", help="stop a key at once, on every replica")
    revoke.add_argument("name")
    for command in (create, listing, revoke):
        command.add_argument(
            "--config", default=DEFAULT_CONFIG, help="the Serve config whose job store to use"
        )
        command.set_defaults(handler=lambda args: _run(args, handler_error))


def _run(args: argparse.Namespace, handler_error: type[Exception]) -> int:
    try:
        return asyncio.run(_keys(args))
    except KeysError as error:
        raise handler_error(str(error)) from None


def _job_store(config_path: str) -> Any:
    from serve.config import app_args_from_serve_config, load_serve_config, resolve_config
    from serve.store import open_job_store

    if not Path(config_path).exists():
        raise KeysError(f"no config file {config_path}; pass --config with your Serve config")
    try:
        config = resolve_config(app_args_from_serve_config(load_serve_config(config_path)))
    except ValueError as error:
        raise KeysError(f"{config_path}: {error}") from None
    return open_job_store(config.storage)


async def _keys(args: argparse.Namespace) -> int:
    from serve.store.tenancy import (
        ApiKeyRecord,
        hash_api_key,
        new_api_key,
        new_owner_id,
    )

    jobs = _job_store(args.config)
    try:
        if args.keys_command == "create":
            quotas = {
                name: value
                for name, value in (
                    ("concurrent_jobs", args.concurrent_jobs),
                    ("songs_per_day", args.songs_per_day),
                    ("audio_seconds_per_day", args.audio_seconds_per_day),
                )
                if value is not None
            }
            for name, value in quotas.items():
                if value <= 0:
                    raise KeysError(f"--{name.replace('_', '-')} must be > 0")
            key = new_api_key()
            record = ApiKeyRecord(
                name=args.name,
                owner=new_owner_id(),
                key_hash=hash_api_key(key),
                prefix=key[:8],
                created_at=time.time(),
                quotas=quotas,
            )
            try:
                await jobs.add_api_key(record)
            except ValueError as error:
                raise KeysError(str(error)) from None
            limits = ", ".join(f"{k} {v:g}" for k, v in quotas.items()) or "auth.quotas"
            print(f"created key {args.name!r} ({record.prefix}…; quotas: {limits})")
            print("it is shown only now; keep it secret. Send it as `Authorization: Bearer <key>`:")
            print(key)
        elif args.keys_command == "list":
            keys = await jobs.list_api_keys()
            if not keys:
                print("no keys (create one with: songserve keys create --name NAME)")
            print(f"{'NAME':24} {'PREFIX':10} {'CREATED':20} {'LAST USED':20} STATE")
            for item in keys:
                state = "active" if item.active else f"revoked {_when(item.revoked_at)}"
                print(
                    f"{item.name:24} {item.prefix + '…':10} {_when(item.created_at):20} "
                    f"{_when(item.last_used_at):20} {state}"
                )
        else:
            if not await jobs.revoke_api_key(args.name):
                raise KeysError(f"no active key named {args.name!r} (see: songserve keys list)")
            print(f"revoked key {args.name!r}; every replica refuses it within seconds")
    finally:
        await jobs.close()
    return 0


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
