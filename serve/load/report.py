"""The report of a load run: Markdown, two PNG charts and the raw records (JSON lines).

OUT/report.md        machine, date, command line, profile, per-step table, the knee
OUT/latency.png      time to done p50/p95/p99 (and first progress p95) against offered load
OUT/throughput.png   finished songs/min against offered songs/min, with y = x
OUT/songs.jsonl      one record per submitted song
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from .records import LoadRun, write_records
from .summary import Knee, StepSummary, find_knee, summarize_steps


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    latency_chart: Path
    throughput_chart: Path
    records: Path


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def step_table(rows: list[StepSummary]) -> str:
    """The per-step Markdown table."""
    header = (
        "| step | offered /min | submitted | admitted | 429 | 503 | other | done | failed "
        "| unfinished | finished /min | keep-up | done p50 s | done p95 s | done p99 s "
        "| 1st progress p50 s | 1st progress p95 s | 1st progress p99 s |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [header]
    for row in rows:
        done, first = row.time_to_done, row.time_to_first_progress
        lines.append(
            f"| {row.step + 1} | {row.offered_per_min:.2f} | {row.submitted} | {row.admitted} "
            f"| {row.throttled} | {row.overloaded} | {row.other} | {row.done} | {row.failed} "
            f"| {row.unfinished} | {row.finished_per_min:.2f} | {_ratio(row.keep_up)} "
            f"| {_seconds(done.p50)} | {_seconds(done.p95)} | {_seconds(done.p99)} "
            f"| {_seconds(first.p50)} | {_seconds(first.p95)} | {_seconds(first.p99)} |"
        )
    return "\n".join(lines)


def _reasons(run: LoadRun) -> str:
    """How often each refusal or failure reason occurred."""
    counts: dict[str, int] = {}
    for record in run.records:
        if record.result in ("refused", "failed"):
            status = record.http_status if record.http_status is not None else "no answer"
            key = f"{record.result} ({status}): {record.reason}"
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return "None."
    return "\n".join(f"- {count} × {key}" for key, count in sorted(counts.items()))


def _machine() -> str:
    return (
        f"{platform.node()} — {platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )


def _profile_yaml(run: LoadRun) -> str:
    import yaml

    return yaml.safe_dump(run.profile, sort_keys=False, allow_unicode=True).rstrip()


def draw_charts(
    rows: list[StepSummary], knee: Knee, p95_target_s: float, latency: Path, throughput: Path
) -> None:
    """The two PNG charts (matplotlib, Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((r for r in rows if r.submitted > 0), key=lambda r: r.offered_per_min)
    offered = [r.offered_per_min for r in rows]

    def series(values: list[float | None]) -> list[float]:
        return [float("nan") if v is None else v for v in values]

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    for label, values, style in (
        ("time to done p50", [r.time_to_done.p50 for r in rows], "o-"),
        ("time to done p95", [r.time_to_done.p95 for r in rows], "s-"),
        ("time to done p99", [r.time_to_done.p99 for r in rows], "^-"),
        ("first progress p95", [r.time_to_first_progress.p95 for r in rows], "x--"),
    ):
        axes.plot(offered, series(values), style, label=label)
    axes.axhline(p95_target_s, color="grey", linestyle=":", label=f"p95 target {p95_target_s:g} s")
    if knee.offered_per_min is not None:
        axes.axvline(knee.offered_per_min, color="red", alpha=0.4, label="knee")
    axes.set_xlabel("offered load (songs/min)")
    axes.set_ylabel("seconds from POST")
    axes.set_title("Latency against offered load")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(latency, format="png")
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    top = max([*offered, *(r.finished_per_min for r in rows), 1e-9]) * 1.1
    axes.plot([0, top], [0, top], color="grey", linestyle=":", label="y = x (keeps up)")
    axes.plot(offered, [r.finished_per_min for r in rows], "o-", label="finished")
    axes.plot(offered, [r.submitted_per_min for r in rows], "x", color="grey", label="submitted")
    if knee.offered_per_min is not None:
        axes.axvline(knee.offered_per_min, color="red", alpha=0.4, label="knee")
    axes.set_xlim(0, top)
    axes.set_ylim(0, top)
    axes.set_xlabel("offered load (songs/min)")
    axes.set_ylabel("finished songs/min")
    axes.set_title("Throughput against offered load")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(throughput, format="png")
    plt.close(figure)


def write_report(
    run: LoadRun,
    out_dir: str | Path,
    *,
    command_line: str,
    p95_target_s: float,
    keep_up: float = 0.9,
) -> ReportFiles:
    """Write the report, charts and records into `out_dir` (created if needed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(
        markdown=out / "report.md",
        latency_chart=out / "latency.png",
        throughput_chart=out / "throughput.png",
        records=out / "songs.jsonl",
    )
    rows = summarize_steps(run.steps, run.records)
    knee = find_knee(rows, keep_up=keep_up, p95_target_s=p95_target_s)
    write_records(run.records, files.records)
    draw_charts(rows, knee, p95_target_s, files.latency_chart, files.throughput_chart)

    records = run.records
    done = sum(r.result == "done" for r in records)
    schedule = ", ".join(f"{s.rate_per_s * 60:g}/min × {s.duration_s:g} s" for s in run.steps)
    knee_line = (
        f"**Knee: {knee.offered_per_min:.2f} songs/min offered** — {knee.why}."
        if knee.offered_per_min is not None
        else f"**Knee: none found** — {knee.why}."
    )
    text = f"""# songserve load — {run.started_at}

- machine (load generator): {_machine()}
- server: {run.url}
- command: `{command_line}`
- seed {run.seed}; schedule (Poisson arrivals): {schedule}
- {len(records)} songs submitted in {run.submit_s:.0f} s, {done} done; run lasted {run.wall_s:.0f} s
  (submission + drain)
- keep-up threshold {keep_up:.0%}, p95 time-to-done target {p95_target_s:g} s

{knee_line}

## Per step

{step_table(rows)}

- *offered*: the scheduled rate; *submitted*: songs actually sent (a Poisson draw of it).
- *429 / 503 / other*: refused at admission (other: any other status, or no answer).
- *finished /min*: `done` events of any song in the step's window shifted by the step's median
  time to done — the rate songs really finished at; *keep-up*: finished ÷ submitted per minute.
- Latencies are seconds from `POST /v1/songs` over the step's songs that finished; *1st
  progress*: the first `progress` event on the song's SSE stream.

![time to done against offered load]({files.latency_chart.name})

![finished songs per minute against offered load]({files.throughput_chart.name})

## Refusals and failures

{_reasons(run)}

## Profile

```yaml
{_profile_yaml(run)}
```

Raw per-song records: [{files.records.name}]({files.records.name}) (one JSON object per line).
"""
    files.markdown.write_text(text, encoding="utf-8")
    return files
