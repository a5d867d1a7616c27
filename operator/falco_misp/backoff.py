"""Retry delays (pure): exponential backoff shared by the syncs, the ZeroMQ subscribers and the sender."""

from __future__ import annotations


def retry_delay(retry: int, base_seconds: float, max_seconds: float) -> float:
    """Exponential backoff for the ``retry``-th retry (0 for the first): base, 2*base, 4*base... capped."""
    return float(min(max_seconds, base_seconds * (2 ** min(retry, 30))))
