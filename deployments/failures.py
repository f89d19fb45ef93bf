"""One-line descriptions of failures for job records, SSE `error` events and logs.

Errors raised in another replica arrive wrapped (`RayTaskError(ValueError)` whose text is the whole
remote traceback); clients and operators need the original exception in one line.
"""

from __future__ import annotations

_MAX_CHARS = 300


def describe_failure(error: BaseException) -> str:
    """`ExceptionType: first line of its message` of the innermost cause."""
    seen: set[int] = set()
    # Ray's RayTaskError keeps the remote exception as `.cause`; unwrap any depth of nesting.
    while getattr(error, "cause", None) is not None and id(error) not in seen:
        seen.add(id(error))
        error = error.cause  # type: ignore[attr-defined]
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else ""
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return text if len(text) <= _MAX_CHARS else text[: _MAX_CHARS - 1] + "…"
