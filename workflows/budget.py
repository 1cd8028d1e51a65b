"""Budget arithmetic for one task: the caps, the extra dollars people granted, what is over.

Deterministic bookkeeping only; the workflow asks a person when ``over`` says so.
"""

from __future__ import annotations

from implflow.models import Budget

FALLBACK_GRANT_USD = 1.0
"""Granted at a budget stop approved without an amount and with no cap to repeat."""


class BudgetKeeper:
    """The task's budget plus what people approved at budget stops."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.extra_usd = 0.0

    def over(self, phase: str, phase_usd: float, total_usd: float) -> str | None:
        """Why the spend so far is over a cap (one line), or None while within budget."""
        budget, extra = self.budget, self.extra_usd
        if budget.max_usd_per_phase and phase_usd > budget.max_usd_per_phase + extra:
            return f"{phase} spent ${phase_usd:.2f} of ${budget.max_usd_per_phase + extra:.2f}"
        if budget.max_usd_total and total_usd > budget.max_usd_total + extra:
            return f"task spent ${total_usd:.2f} of ${budget.max_usd_total + extra:.2f}"
        return None

    def grant(self, budget_usd: float | None) -> None:
        """A person approved going on: add their amount, else one more cap's worth."""
        cap = self.budget.max_usd_per_phase or self.budget.max_usd_total or FALLBACK_GRANT_USD
        self.extra_usd += budget_usd or cap

    def for_phase(self) -> Budget:
        """The budget a phase runs with: the per-phase cap raised by what was granted."""
        budget = self.budget
        if not self.extra_usd or budget.max_usd_per_phase is None:
            return budget
        return budget.model_copy(
            update={"max_usd_per_phase": budget.max_usd_per_phase + self.extra_usd}
        )
