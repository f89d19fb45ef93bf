"""How work is driven: leases are the store's; retries and backoff within a claim live here."""

from __future__ import annotations

from .retry import Backoff, StageFailed, retry_stage

__all__ = ["Backoff", "StageFailed", "retry_stage"]
