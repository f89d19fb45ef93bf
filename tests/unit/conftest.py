"""Unit tests run without Ray: starting it here is a bug in the test, so it fails loudly."""

from __future__ import annotations

import pytest

from tests.store_backends import backend  # noqa: F401 - the job-store contract's fixture


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a core dependency
        return

    def refuse(*_: object, **__: object) -> None:
        raise RuntimeError("unit tests must not start Ray; move this test to tests/integration")

    monkeypatch.setattr(ray, "init", refuse)
    # Run as if no cluster were connected, even when integration tests of the same session left
    # theirs running: the builder checks stores and placement only against a live cluster.
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
