"""Where implflow keeps things on a task branch: one declaration, read by prompts and gates.

Every path here is relative to the root of the task's checkout. The specialist prompts tell
the agent to write these files and the default gates look for the same names, so an agent
that follows its instructions literally satisfies the gates' file expectations.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

IMPLFLOW_DIR = ".implflow"
"""implflow's own tree on the task branch (always committed, even when the repo ignores it)."""

GATES_FILE = f"{IMPLFLOW_DIR}/gates.toml"
"""The repository's gate configuration; always read as of the task's base commit."""

RUNS_DIR = f"{IMPLFLOW_DIR}/runs"
"""One outcome record per phase round (``<phase>-r<round>.json``)."""

REPORTS_DIR = f"{IMPLFLOW_DIR}/reports"
"""Gate reports and tool logs, ``<phase>/<round>/``."""

LOGS_DIR = f"{IMPLFLOW_DIR}/logs"
"""Executor event logs and stderr."""

REVIEW_DOC = f"{IMPLFLOW_DIR}/review.md"
"""The review phase's structured review (requirements, criteria, risks, open questions)."""

DESIGN_DOC = f"{IMPLFLOW_DIR}/design.md"
"""The design phase's service design."""

API_CONTRACT = "openapi.yaml"
"""The design phase's API contract (OpenAPI 3): at the repository root, where API tools and
readers look for it. The design gate checks the first of ``API_CONTRACT_CANDIDATES`` present."""

API_CONTRACT_CANDIDATES: tuple[str, ...] = (
    API_CONTRACT,
    "openapi.yml",
    "openapi.json",
    "docs/openapi.yaml",
    "api/openapi.yaml",
    f"{IMPLFLOW_DIR}/openapi.yaml",
)
"""Where the design gate looks for the contract, in order (a repository may keep its own)."""

SERVICE_FILE = f"{IMPLFLOW_DIR}/service.toml"
"""The design phase's proposed service command, written only when the gate finds none itself:
``command = ["{python}", "-m", "uvicorn", "app.main:app", "--port", "{port}"]`` and optional
``health_path`` / ``paths``. The design gate shows it to the person approving the design;
once approved it is how every later gate starts the service."""

OPTIMIZE_NOTES = f"{IMPLFLOW_DIR}/optimize.md"
"""The optimize phase's notes: what was changed for performance, and why."""

VERIFY_NOTES = f"{IMPLFLOW_DIR}/verify.md"
"""The verify phase's notes: the figures measured locally against the targets."""

ARTIFACT_FILES: tuple[str, ...] = (REVIEW_DOC, DESIGN_DOC)
"""Documents later phases read as context."""

PHASE_ARTIFACTS: Mapping[str, tuple[str, ...]] = {
    "review": (REVIEW_DOC,),
    "design": (DESIGN_DOC, API_CONTRACT, SERVICE_FILE),
    "optimize": (OPTIMIZE_NOTES,),
    "verify": (VERIFY_NOTES,),
}
"""Files the bundled specialist tells the agent to write, per phase (``SERVICE_FILE`` only
when the gate finds no service). ``tests/activities/gates/test_contract.py`` holds the
specialist's text and the default gates to these paths."""


# --- branch names: one branch per workflow id, injectively named --------------------------

BRANCH_PREFIX = "implflow/"
_PLAIN_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_HASHED_TAIL = re.compile(r"-[0-9a-f]{10}$")
_RESERVED_KEYS = frozenset({"plan"})  # ``implflow/plan/<id>`` holds plans' integration branches
HASHED_PREFIX_CHARS = 40
_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[\w.-]+@[\w.-]+:)", re.IGNORECASE)


def is_url(repo: str) -> bool:
    """``https://…``, ``ssh://…``, ``file://…`` or scp-style ``git@host:path``."""
    return bool(_URL.match(repo))


def relative_repo(repo: str) -> str | None:
    """The one-line refusal of a ``repo`` that is neither a git URL nor an absolute path.

    A worker would resolve a relative path against its own working directory: another
    repository, or none. The CLI and the client make such paths absolute before they start.
    """
    if is_url(repo) or repo.startswith("/"):
        return None
    return (
        f"repo: {repo!r} must be an absolute path or a git URL "
        "(a worker would resolve a relative path against its own directory)"
    )


TRAILERS_FORMAT = "%(trailers:only,unfold)"
"""``git log --format`` of a commit's trailer block as git parses it: the message's last
paragraph only, never a line of the summary above it."""


def parse_trailers(block: str) -> dict[str, str]:
    """Trailers as git prints a commit's trailer block (``TRAILERS_FORMAT``).

    Only that block, the message's last paragraph, is ever read (never lines of the body); a
    key that repeats there has its last value.
    """
    found: dict[str, str] = {}
    for line in block.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            found[key.strip()] = value.strip()
    return found


def branch_key(workflow_id: str) -> str:
    """The task's name in refs and on disk: one path component, injective over workflow ids.

    An id that is already a safe ref component of at most 100 characters (letters, digits,
    ``.``, ``_``, ``-``; starting with a letter or digit; no ``..``; not ending in ``.`` or
    ``.lock``) is kept as it is. Any other id becomes its first 40 characters with every other
    character replaced by ``_``, then ``-`` and the first 10 hex digits of its SHA-256: ``col/x``
    is ``col_x-<hash>``, never ``col_x``. A kept id never ends in ``-`` plus 10 hex digits (such
    ids are hashed too), so a kept id and a hashed one can never be equal.
    """
    if (
        _PLAIN_KEY.fullmatch(workflow_id)
        and ".." not in workflow_id
        and not workflow_id.endswith((".", ".lock"))
        and not _HASHED_TAIL.search(workflow_id)
        and workflow_id not in _RESERVED_KEYS
    ):
        return workflow_id
    prefix = re.sub(r"[^A-Za-z0-9_-]", "_", workflow_id)[:HASHED_PREFIX_CHARS] or "_"
    digest = hashlib.sha256(workflow_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{prefix}-{digest[:10]}"


def branch_name(workflow_id: str) -> str:
    """``implflow/<branch_key(workflow_id)>``: the one branch of a workflow id."""
    return f"{BRANCH_PREFIX}{branch_key(workflow_id)}"
