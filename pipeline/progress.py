"""How a model engine reports progress, and how it is told to stop.

Engines run synchronously on a worker thread and report (step, steps) through a plain callback;
the deployment that runs them relays it (deployments/progress.py). The callback may raise
WorkStopped into the engine once no one waits for its result, so it ends at that report.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[int, int], None]
"""Called as (step, steps) from the worker thread."""


class WorkStopped(RuntimeError):
    """Raised into the work, at its next progress report, once `stop_when` says no one waits
    for it any more."""
