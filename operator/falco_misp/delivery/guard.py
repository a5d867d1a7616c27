"""The guard in front of delivery (pure): a list that shrank by more than ``limits.maxDropPercent`` is held back."""

from __future__ import annotations

from dataclasses import dataclass


# ------------------------------------------------------------------------------------------------ drop check
@dataclass(frozen=True)
class DropCheck:
    """Whether a freshly rendered list may replace the applied one."""

    allowed: bool
    """False: the list shrank by more than ``limits.maxDropPercent``; keep the applied rules."""
    previous: int | None
    """Indicators applied now (None: nothing applied yet for this spec generation)."""
    current: int
    """Indicators in the new render."""
    percent: float
    """How much the list shrank, in percent of ``previous`` (0 when it grew)."""
    limit: int
    """``limits.maxDropPercent``."""

    @property
    def message(self) -> str:
        """One line for status and events."""
        if self.previous is None:
            return f"{self.current} indicators (nothing applied before)"
        verdict = "held back" if not self.allowed else "accepted"
        return (
            f"{self.current} indicators fetched, {self.percent:.0f}% fewer than the {self.previous} applied "
            f"(limits.maxDropPercent is {self.limit}): {verdict}"
        )


def check_drop(previous_total: int | None, current_total: int, max_drop_percent: int) -> DropCheck:
    """Refuse a render that shrinks the applied list by more than ``max_drop_percent`` percent.

    ``previous_total`` is None when nothing was applied for the current spec (a spec change may shrink the list
    on purpose); a previous total of 0 can never shrink.
    """
    if previous_total is None or previous_total <= 0 or current_total >= previous_total:
        return DropCheck(True, previous_total, current_total, 0.0, max_drop_percent)
    percent = (previous_total - current_total) * 100.0 / previous_total
    return DropCheck(percent <= max_drop_percent, previous_total, current_total, percent, max_drop_percent)
