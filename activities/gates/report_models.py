"""What the parsers read from one report: small models, one per report kind.

Each model carries the key figures and a capped list of examples (failed tests, top
findings, contract errors), never the report itself; the full report stays on the branch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_LISTED = 20
"""At most this many failed cases, findings or errors are listed in a report model."""

MAX_ITEM_CHARS = 300
"""Each listed item is cut to this many characters (history stays small)."""

Severity = Literal["high", "medium", "low"]
SEVERITIES: tuple[Severity, ...] = ("high", "medium", "low")
Level = Literal["error", "warning", "note"]
LEVELS: tuple[Level, ...] = ("error", "warning", "note")


class _Report(BaseModel):
    """Base of the parsed reports; tolerant of fields added later."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class TestReport(_Report):
    """Test results from JUnit XML (pytest, vitest, jest and most other runners)."""

    __test__ = False  # not a pytest test class, despite the name

    total: int = Field(ge=0)
    failures: int = Field(ge=0)
    errors: int = Field(ge=0)
    skipped: int = Field(ge=0)
    duration_s: float = Field(ge=0)
    failed_cases: list[str] = Field(default_factory=list, max_length=MAX_LISTED)
    """``suite::case: first line of the message`` for failures and errors, capped."""

    @property
    def passed(self) -> int:
        """Tests that ran and neither failed, errored nor were skipped."""
        return max(self.total - self.failures - self.errors - self.skipped, 0)


class CoverageReport(_Report):
    """Line (and branch, when measured) coverage from Cobertura XML."""

    line_rate_pct: float = Field(ge=0, le=100)
    branch_rate_pct: float | None = Field(default=None, ge=0, le=100)
    """``None`` when the tool did not measure branches."""
    lines_valid: int = Field(ge=0)
    lines_covered: int = Field(ge=0)


class FindingsReport(_Report):
    """Lint, type or security findings from SARIF, each counted as its tool rated it.

    Two scales, never mixed: a *security* severity (high / medium / low) where the tool gives
    one (a ``security-severity`` score, bandit's ``issue_severity``), and the SARIF *level*
    (error / warning / note) every result has. A ruff or eslint finding has only a level: an
    unused import at level ``error`` is a lint error, not a high-severity security finding.
    """

    tool: str
    total: int = Field(ge=0)
    by_severity: dict[str, int]
    """Security-rated findings per severity, ``high``, ``medium`` and ``low`` (all three keys
    always present); findings without a security rating are not counted here."""
    high: int = Field(ge=0)
    by_level: dict[str, int] = Field(default_factory=dict)
    """Every finding per SARIF level, ``error``, ``warning`` and ``note`` (``none`` counts as
    ``note``), as the tool wrote it (or its rule's default, else ``warning``)."""
    errors: int = Field(default=0, ge=0)
    """Findings at level ``error``."""
    top: list[str] = Field(default_factory=list, max_length=MAX_LISTED)
    """``<severity or level> rule file:line message``, most severe first, capped."""


class ContractReport(_Report):
    """Whether an OpenAPI 3.x document is valid, as judged by openapi-spec-validator."""

    valid: bool
    openapi_version: str | None = None
    """The document's ``openapi`` field, ``None`` when it has none."""
    paths: int = Field(ge=0)
    errors: list[str] = Field(default_factory=list, max_length=MAX_LISTED)
