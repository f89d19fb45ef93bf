"""describe_failure: one readable line out of wrapped remote errors."""

from __future__ import annotations

from ray.exceptions import RayTaskError

from deployments.failures import describe_failure


def test_unwraps_remote_errors_to_the_original_first_line() -> None:
    cause = ValueError("operands could not be broadcast\nsecond line")
    wrapped = RayTaskError("render", "Traceback (most recent call last):\n  ...", cause)
    outer = RayTaskError("generate", "Traceback ...", wrapped)
    assert describe_failure(outer) == "ValueError: operands could not be broadcast"


def test_plain_errors_and_long_messages() -> None:
    assert describe_failure(KeyError("x")) == "KeyError: 'x'"
    assert describe_failure(TimeoutError()) == "TimeoutError"
    text = describe_failure(RuntimeError("y" * 1000))
    assert len(text) == 300 and text.endswith("…")
