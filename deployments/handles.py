"""What every caller of a streaming Serve handle does the same way."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any


@contextlib.asynccontextmanager
async def cancelled_unless_finished(stream: Any) -> AsyncIterator[None]:
    """Cancel a streaming handle call (`DeploymentResponseGenerator`) when the block ends before
    the stream did: a canceled job, a lost lease, a failed write, the caller itself cancelled.
    Leaving the iteration does not tell the callee, and Serve cancels the calls a cancelled
    request made (best effort), so without this a decoder renders an abandoned song to its
    end."""
    finished = False
    try:
        yield
        finished = True
    finally:
        if not finished:
            stream.cancel()
