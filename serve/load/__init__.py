"""`songserve load`: an open-loop load generator and its report.

Songs arrive as a seeded Poisson process at a rate, or a ramp of rates (`arrivals`); their mix
comes from a profile (`profile`); each one is submitted on schedule and followed over SSE
(`runner`); the run is summarised per step, with the knee (`summary`), into a Markdown report
with charts and the raw records (`report`).
"""

from .arrivals import Arrival, Step, plan_steps, poisson_arrivals
from .profile import LoadProfile, ProfileError, load_profile, parse_profile
from .records import LoadRun, SongRecord, read_records, write_records
from .report import ReportFiles, write_report
from .runner import LoadOptions, run_load
from .summary import Knee, StepSummary, find_knee, percentile, summarize_steps

__all__ = [
    "Arrival",
    "Knee",
    "LoadOptions",
    "LoadProfile",
    "LoadRun",
    "ProfileError",
    "ReportFiles",
    "SongRecord",
    "Step",
    "StepSummary",
    "find_knee",
    "load_profile",
    "parse_profile",
    "percentile",
    "plan_steps",
    "poisson_arrivals",
    "read_records",
    "run_load",
    "summarize_steps",
    "write_records",
    "write_report",
]
