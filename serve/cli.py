"""`songserve` — the command line: start a cluster, generate songs, check on them.

    songserve up [--config config/local.yaml]
    songserve generate "a sunny indie-pop song about sailing home" --out sea.m4a
    songserve status SONG_ID
    songserve certs dev [--dir var/certs]
    songserve load --ramp 0.02,0.05,0.1 --step-s 120 --out var/load/run1

`generate` and `status` speak HTTP API v1 only (no Ray import), so they start instantly and work
against any songserve server: `--url` or SONGSERVE_URL, `--api-key` or SONGSERVE_API_KEY.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
_BAR_WIDTH = 30


class CliError(Exception):
    """A failure to report in one line and exit 1."""


# -- HTTP ------------------------------------------------------------------------------------------


def _client(args: argparse.Namespace, timeout_s: float = 30.0) -> httpx.Client:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    return httpx.Client(base_url=args.url, headers=headers, timeout=timeout_s)


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            field = f" ({error['field']})" if error.get("field") else ""
            raise CliError(f"HTTP {response.status_code}: {error['message']}{field}")
        except (ValueError, KeyError, TypeError):
            raise CliError(f"HTTP {response.status_code}: {response.text[:300]}") from None
    return response.json()


def iter_sse(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event type, data) pairs from the lines of a text/event-stream."""
    event_type, data_lines = "message", list[str]()
    for line in lines:
        if line == "":
            if data_lines:
                yield event_type, json.loads("\n".join(data_lines))
            event_type, data_lines = "message", list[str]()
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event_type = line[6:].strip()
        elif line.startswith("data:"):
            data_lines.append(line[5:].lstrip())


# -- progress bar ----------------------------------------------------------------------------------


class ProgressBar:
    """One line on stderr, redrawn in place on a terminal; plain lines otherwise."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._last = ""

    def show(self, fraction: float, label: str) -> None:
        filled = round(_BAR_WIDTH * max(0.0, min(1.0, fraction)))
        line = f"[{'#' * filled}{'-' * (_BAR_WIDTH - filled)}] {fraction * 100:5.1f}%  {label}"
        if line == self._last:
            return
        self._last = line
        if self._tty:
            width = shutil.get_terminal_size((100, 20)).columns
            sys.stderr.write("\r" + line[: width - 1].ljust(width - 1))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self._tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


# -- commands --------------------------------------------------------------------------------------


def _output_paths(out: Path, count: int) -> list[Path]:
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{k + 1}{out.suffix}") for k in range(count)]


def cmd_generate(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "duration_s": args.duration,
        "variations": args.variations,
        "model": args.model,
        "instrumental": args.instrumental,
        "language": args.language,
    }
    if args.prompt:
        body["prompt"] = args.prompt
    if args.lyrics_file:
        body["lyrics"] = Path(args.lyrics_file).read_text(encoding="utf-8")
    if args.style:
        body["style"] = args.style
    if args.seed is not None:
        body["seed"] = args.seed
    out = Path(args.out)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in ("m4a", "mp3", "wav", "flac"):
        raise CliError(f"--out {out}: use a .m4a, .mp3, .wav or .flac file name")

    with _client(args) as client:
        accepted = _check(client.post("/v1/songs", json=body))
        song_id = accepted["id"]
        print(f"song {song_id} accepted", file=sys.stderr)
        bar = ProgressBar()
        outcome: dict[str, Any] = {}
        with client.stream("GET", f"/v1/songs/{song_id}/events", timeout=None) as stream:
            if stream.status_code >= 400:
                stream.read()
                _check(stream)
            for event_type, data in iter_sse(stream.iter_lines()):
                if event_type == "stage":
                    bar.show(bar_fraction(outcome), data["stage"])
                elif event_type == "progress":
                    outcome["progress"] = data["progress"]
                    label = f"{data['stage']}  variation {data['variation'] + 1}"
                    if data["stage"] == "generating":
                        label += f"  step {data['step']}/{data['steps']}"
                    bar.show(data["progress"], label)
                elif event_type in ("done", "error", "canceled"):
                    outcome.update(data, event=event_type)
                    bar.show(1.0 if event_type == "done" else bar_fraction(outcome), event_type)
                    break
        bar.done()
        if outcome.get("event") != "done":
            what = "was canceled" if outcome.get("event") == "canceled" else "failed"
            raise CliError(f"song {song_id} {what}: {outcome.get('message', 'no outcome')}")
        song = _check(client.get(f"/v1/songs/{song_id}"))
        finished = [v for v in song["variations"] if v["status"] == "succeeded"]
        for variation, path in zip(finished, _output_paths(out, len(finished)), strict=True):
            url = variation["audio"].get(fmt)
            if url is None:
                raise CliError(f"the server does not produce {fmt} files")
            _download(client, url, path)
            print(
                f"{path}  variation {variation['index']}  {variation['duration_s']:.1f} s  "
                f"{variation['loudness_lufs']:.1f} LUFS  seed {variation['seed']}  "
                f"{variation['model']} {variation['model_version']}"
            )
    return 0


def _download(client: httpx.Client, url: str, path: Path) -> None:
    with client.stream("GET", url) as response:
        if response.status_code >= 400:
            response.read()
            _check(response)
        with path.open("wb") as handle:
            for chunk in response.iter_bytes():
                handle.write(chunk)


def cmd_stems(args: argparse.Namespace) -> int:
    """Ask for a variation's stems, follow their progress, download them."""
    fmt = args.format
    out_dir = Path(args.out_dir)
    stems_path = f"/v1/songs/{args.song_id}/variations/{args.variation}/stems"
    with _client(args) as client:
        stems = _check(client.post(stems_path))
        if stems["status"] != "succeeded":
            print(f"stems of {args.song_id} variation {args.variation} {stems['status']}",
                  file=sys.stderr)  # fmt: skip
            bar = ProgressBar()
            with client.stream("GET", f"/v1/songs/{args.song_id}/events", timeout=None) as stream:
                if stream.status_code >= 400:
                    stream.read()
                    _check(stream)
                for event_type, data in iter_sse(stream.iter_lines()):
                    if data.get("variation") != args.variation:
                        continue
                    if event_type == "stems_progress":
                        label = f"stems: {data['stage']} {data['step']}/{data['steps']}"
                        bar.show(data["progress"], label)
                    elif event_type == "stems" and data["status"] in ("succeeded", "failed"):
                        break
            bar.done()
            stems = _check(client.get(stems_path))
        if stems["status"] != "succeeded":
            message = (stems.get("error") or {}).get("message", "no outcome")
            raise CliError(f"the stems failed: {message}")
        out_dir.mkdir(parents=True, exist_ok=True)
        for stem in stems["stems"]:
            url = stem["audio"].get(fmt)
            if url is None:
                raise CliError(f"the server does not produce {fmt} files")
            path = out_dir / f"{stem['name']}.{fmt}"
            _download(client, url, path)
            print(f"{path}  {stem['name']}  {stem['loudness_lufs']:.1f} LUFS  {stems['method']}")
    return 0


def bar_fraction(outcome: dict[str, Any]) -> float:
    return float(outcome.get("progress", 0.0))


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        song = _check(client.get(f"/v1/songs/{args.song_id}"))
    print(json.dumps(song, indent=2))
    return 0


def cmd_certs_dev(args: argparse.Namespace) -> int:
    from serve.certs import write_dev_chain
    from serve.config import C2paConfig, StorageConfig

    if args.dir is not None:
        cert_path, key_path = Path(args.dir) / "chain.pem", Path(args.dir) / "signer.key"
    else:
        defaults, data_dir = C2paConfig(), StorageConfig().data_dir
        cert_path = Path(defaults.cert_path.replace("{data_dir}", data_dir))
        key_path = Path(defaults.key_path.replace("{data_dir}", data_dir))
    existing = [str(path) for path in (cert_path, key_path) if path.exists()]
    if existing and not args.force:
        raise CliError(f"{' and '.join(existing)} already exist; pass --force to replace them")
    write_dev_chain(cert_path, key_path, algorithm=args.algorithm)
    print(f"certificate chain  {cert_path}")
    print(f"private key        {key_path}  (mode 0600)")
    print(
        "This chain is for development only: its root is on no trust list, so C2PA readers "
        "report files signed with it as 'Valid', never 'Trusted'. Use a CA-issued chain in "
        "production."
    )
    return 0


def cmd_services(args: argparse.Namespace) -> int:
    from serve.local_services import ServiceError, export_lines, start_services, stop_services

    try:
        if args.services_command == "up":
            print(f"starting PostgreSQL and SeaweedFS in {args.dir} …", file=sys.stderr)
            sys.stdout.write(export_lines(start_services(args.dir)))
            print(f"up; stop them with: songserve services down --dir {args.dir}", file=sys.stderr)
        else:
            stopped = stop_services(args.dir)
            print(f"stopped {', '.join(stopped) or 'nothing (none running)'}", file=sys.stderr)
    except ServiceError as error:
        raise CliError(str(error)) from None
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    """Open-loop load: submit songs on a seeded schedule, follow them, write the report."""
    import asyncio
    import math
    import shlex

    from serve.load import LoadOptions, ProfileError, load_profile, run_load, write_report

    if args.ramp is not None:
        try:
            rates = [float(part) for part in args.ramp.split(",") if part.strip()]
        except ValueError:
            raise CliError(
                f"--ramp {args.ramp!r}: give rates in songs/s, e.g. 0.02,0.05,0.1"
            ) from None
        step_s, duration_s = args.step_s, args.duration_s
    else:
        # A constant rate: one step per reporting window, so the table shows any drift.
        duration_s = args.duration_s if args.duration_s is not None else 300.0
        step_s = args.window_s if args.window_s is not None else duration_s
        if not step_s > 0 or not duration_s > 0:
            raise CliError("--duration-s and --window-s must be > 0")
        rates = [args.rate] * math.ceil(duration_s / step_s)
    if not 0 < args.keep_up <= 1:
        raise CliError(f"--keep-up {args.keep_up}: a fraction in (0, 1], e.g. 0.9")
    try:
        options = LoadOptions(
            rates_per_s=rates,
            step_s=step_s,
            duration_s=duration_s,
            max_songs=args.max_songs,
            drain_s=args.drain_s,
            seed=args.seed,
            url=args.url,
            api_key=args.api_key,
            profile=load_profile(args.profile),
        )
        out = Path(args.out or time.strftime("var/load/%Y%m%d-%H%M%S"))
        run = asyncio.run(run_load(options, log=lambda line: print(line, file=sys.stderr)))
    except (ProfileError, ValueError) as error:
        raise CliError(str(error)) from None
    if run.records and all(r.reason and "ConnectError" in r.reason for r in run.records):
        raise CliError(f"cannot reach {args.url}; is the server up? (make run)")
    command_line = shlex.join(["songserve", *sys.argv[1:]])
    files = write_report(
        run, out, command_line=command_line, p95_target_s=args.p95_target_s, keep_up=args.keep_up
    )
    print(f"report  {files.markdown}\nrecords {files.records}")
    return 0


def _serve_address(config_path: Path) -> tuple[str, int]:
    import yaml

    data = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    http = data.get("http_options") or {}
    return str(http.get("host", "127.0.0.1")), int(http.get("port", 8000))


class _StopRequested(Exception):
    """SIGINT or SIGTERM reached `songserve up`."""


def _raise_stop(signum: int, _frame: object) -> None:
    raise _StopRequested(signal.Signals(signum).name)


def _restore_default_sigint() -> None:
    # A process started in the background by a non-interactive shell inherits SIGINT as
    # ignored; `serve run` shuts the app down cleanly on SIGINT, so give it the default back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _check_before_start(config_path: Path) -> None:
    """Stop at once on a config or store that cannot work, before Ray starts (a failed build
    inside `serve run` would only be logged while this command waits for health)."""
    from serve.config import (
        app_args_from_serve_config,
        literal_secrets,
        load_serve_config,
        resolve_config,
    )
    from serve.startup import check_startup

    try:
        args = app_args_from_serve_config(load_serve_config(config_path))
        problems = literal_secrets(args)
        if problems:
            raise ValueError("; ".join(problems))
        config = resolve_config(args)
        check_startup(config, deploying=True)
    except ValueError as error:  # pydantic's ValidationError is one
        raise CliError(f"{config_path}: {error}") from None


def config_to_run(config_path: Path) -> Path:
    """The Serve config `serve run` gets: `config_path` itself, or, when a pool autoscales on
    backlog and the file lacks the application-level policy that needs, a temporary copy with
    it added (serve/autoscaling.py); the caller removes a copy. CliError when the file names
    another application-level policy."""
    import tempfile

    import yaml

    from serve.autoscaling import with_backlog_policy
    from serve.config import load_serve_config

    try:
        serve_config, added = with_backlog_policy(load_serve_config(config_path))
    except ValueError as error:
        raise CliError(f"{config_path}: {error}") from None
    if not added:
        return config_path
    print(
        f"backlog autoscaling: added the application-level autoscaling_policy to "
        f"{', '.join(added)} (put it in {config_path} to `serve run` the file itself)",
        file=sys.stderr,
    )
    with tempfile.NamedTemporaryFile(
        "w", prefix=f"songserve-{config_path.stem}-", suffix=".yaml", delete=False
    ) as copy:
        yaml.safe_dump(serve_config, copy, sort_keys=False)
    return Path(copy.name)


def cmd_up(args: argparse.Namespace) -> int:
    config_path = Path(args.config)
    if not config_path.is_file():
        raise CliError(f"--config {config_path}: no such file (try config/local.yaml)")
    _check_before_start(config_path)
    host, port = _serve_address(config_path)
    run_path = config_to_run(config_path)
    serve_bin = Path(sys.executable).with_name("serve")
    command = [str(serve_bin) if serve_bin.exists() else "serve", "run", str(run_path)]
    print(f"starting: {' '.join(command)}", file=sys.stderr)
    # Handle both signals explicitly: Ctrl-C in a terminal, SIGTERM from a supervisor, and
    # SIGINT even when this process was started with it ignored.
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    process = subprocess.Popen(command, preexec_fn=_restore_default_sigint)
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    try:
        deadline = time.monotonic() + args.wait_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise CliError(f"`serve run` exited with code {process.returncode}; see above")
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            raise CliError(f"the app did not become healthy within {args.wait_s:g} s")
        print(_ready_message(base), file=sys.stderr)
        return process.wait()
    except _StopRequested as stop:
        print(f"\n{stop}: stopping the app (this takes a few seconds)", file=sys.stderr)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan Ray
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if run_path != config_path:
            run_path.unlink(missing_ok=True)


def _songserve_command() -> str:
    """How to run this CLI from the current directory (`.venv/bin/songserve` for `make run`)."""
    script = Path(sys.argv[0])
    if shutil.which("songserve") == str(script.resolve()) or not script.exists():
        return "songserve"
    try:
        return str(script.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _ready_message(base: str) -> str:
    return f"""
songserve is up at {base}  (Ray dashboard: http://127.0.0.1:8265)

  Open {base}/ in a browser: the studio makes, plays and downloads songs.

  {_songserve_command()} generate "a sunny indie-pop song about sailing home" --out sea.m4a

  curl -s -X POST {base}/v1/songs -H 'Content-Type: application/json' \\
       -d '{{"prompt": "a sunny indie-pop song about sailing home", "duration_s": 30}}'
  curl -N {base}/v1/songs/<id>/events        # live progress (SSE)
  curl -s {base}/v1/songs/<id>               # status and audio links

Ctrl-C stops it.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="songserve", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("SONGSERVE_URL", DEFAULT_URL),
        help="API base URL (env SONGSERVE_URL)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("SONGSERVE_API_KEY"),
        help="bearer API key (env SONGSERVE_API_KEY)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the cluster from a Serve config and wait")
    up.add_argument("--config", default="config/local.yaml", help="Serve config file")
    up.add_argument("--wait-s", type=float, default=300, help="how long to wait for healthz")
    up.set_defaults(handler=cmd_up)

    generate = commands.add_parser("generate", help="generate a song and download it")
    generate.add_argument("prompt", nargs="?", help="what the song is about (description mode)")
    generate.add_argument("--lyrics-file", help="your own lyrics ([verse], [chorus] tags)")
    generate.add_argument("--style", help="free-text style, e.g. 'dreamy synth-pop, female vocals'")
    generate.add_argument("--duration", type=float, default=30.0, help="seconds (5-600)")
    generate.add_argument("--variations", type=int, default=2, help="takes to generate (1-4)")
    generate.add_argument("--model", default="auto", help="auto, sketch, ...")
    generate.add_argument("--seed", type=int, help="variation k uses seed + k")
    generate.add_argument("--instrumental", action="store_true", help="no vocals")
    generate.add_argument("--language", default="en", help="ISO 639-1 vocal language")
    generate.add_argument(
        "--out",
        default="song.m4a",
        help="output file; its extension picks the format; with several "
        "variations NAME-1.EXT, NAME-2.EXT, …",
    )
    generate.set_defaults(handler=cmd_generate)

    status = commands.add_parser("status", help="print a song's status as JSON")
    status.add_argument("song_id")
    status.set_defaults(handler=cmd_status)

    stems = commands.add_parser(
        "stems", help="make a variation's stems (drums, bass, other, vocals) and download them"
    )
    stems.add_argument("song_id")
    stems.add_argument("--variation", type=int, default=0, help="which variation (from 0)")
    stems.add_argument("--format", choices=("m4a", "mp3", "wav", "flac"), default="wav")
    stems.add_argument("--out-dir", default="stems", help="where NAME.FORMAT files go")
    stems.set_defaults(handler=cmd_stems)

    certs = commands.add_parser("certs", help="C2PA signing certificates")
    certs_commands = certs.add_subparsers(dest="certs_command", required=True)
    certs_dev = certs_commands.add_parser(
        "dev", help="write a development certificate chain and key (not for production)"
    )
    certs_dev.add_argument(
        "--dir", help="where chain.pem and signer.key go (default: var/certs, as in the config)"
    )
    certs_dev.add_argument(
        "--algorithm",
        choices=("es256", "es384", "ps256", "ed25519"),
        default="es256",
        help="key type; must match postprocess.c2pa.algorithm",
    )
    certs_dev.add_argument("--force", action="store_true", help="replace existing files")
    certs_dev.set_defaults(handler=cmd_certs_dev)

    load = commands.add_parser(
        "load",
        help="open-loop load test: Poisson arrivals at a rate or a ramp; writes a report",
        description="Submit songs as a seeded Poisson process (whatever the server answers), "
        "follow each over SSE, and write OUT/report.md, latency.png, throughput.png and "
        "songs.jsonl. Rates are songs per second.",
    )
    arrival = load.add_mutually_exclusive_group(required=True)
    arrival.add_argument("--rate", type=float, help="constant rate, songs/s (e.g. 0.05)")
    arrival.add_argument("--ramp", help="step ramp: rates in songs/s, e.g. 0.02,0.05,0.1")
    load.add_argument("--step-s", type=float, default=120.0, help="seconds each ramp rate holds")
    load.add_argument(
        "--window-s", type=float, help="with --rate: report per window of this many seconds"
    )
    load.add_argument(
        "--duration-s",
        type=float,
        help="stop submitting after this (default: the whole ramp; 300 with --rate)",
    )
    load.add_argument("--max-songs", type=int, help="stop submitting after this many songs")
    load.add_argument(
        "--drain-s", type=float, default=300.0, help="then wait this long for songs still going"
    )
    load.add_argument("--seed", type=int, default=0, help="arrival times and song mix")
    load.add_argument(
        "--profile", help="YAML song mix (default: 30 s × 2 variations, model auto, prompts)"
    )
    load.add_argument("--out", help="report directory (default var/load/DATE-TIME)")
    load.add_argument(
        "--p95-target-s", type=float, default=120.0, help="p95 time to done the knee must meet"
    )
    load.add_argument(
        "--keep-up", type=float, default=0.9, help="finished ÷ submitted the knee must meet"
    )
    # Also accepted after `load` (the global options work too).
    load.add_argument("--url", default=argparse.SUPPRESS, help="API base URL (env SONGSERVE_URL)")
    load.add_argument(
        "--api-key", default=argparse.SUPPRESS, help="bearer API key (env SONGSERVE_API_KEY)"
    )
    load.set_defaults(handler=cmd_load)

    from serve.cli_keys import add_keys_parser

    add_keys_parser(commands, CliError)

    services = commands.add_parser(
        "services", help="local PostgreSQL and S3 (SeaweedFS) for a cluster-shaped setup"
    )
    services_commands = services.add_subparsers(dest="services_command", required=True)
    for name, text in (
        ("up", 'start them; prints export lines: eval "$(songserve services up)"'),
        ("down", "stop what `services up` started"),
    ):
        command = services_commands.add_parser(name, help=text)
        command.add_argument("--dir", default="var/services", help="their data, logs and state")
        command.set_defaults(handler=cmd_services)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except CliError as error:
        print(f"songserve: {error}", file=sys.stderr)
        return 1
    except httpx.ConnectError:
        print(f"songserve: cannot reach {args.url}; is the server up? (make run)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
