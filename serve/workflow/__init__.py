"""How work is driven: leases are the store's; driving each claim under its lease (`leasing`),
retries and backoff within a claim, and patience with a store that is briefly unavailable, live
here."""

from __future__ import annotations

from .patience import patient_store
from .retry import Backoff, StageFailed, retry_stage

__all__ = ["Backoff", "StageFailed", "patient_store", "retry_stage"]
