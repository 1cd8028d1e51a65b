"""A stand-in "agent" for tests and shell-executor examples, run by the ``shell`` executor.

It reads the phase context from ``$IMPLFLOW_CONTEXT_FILE`` and writes that
phase's artifact under ``.implflow/`` in the task's checkout — the same contract a
real coding agent follows; implflow commits the round. Deterministic and
offline: no API key. Run: ``python -m implflow.demo_agent``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ARTIFACTS = {
    "review": (
        "review.md",
        "# Review\n\n## Requirements\n- {title}\n\n## Acceptance criteria\n"
        "- every endpoint documented and tested\n\n## Risks\n- none blocking\n",
    ),
    "design": ("design.md", "# Design\n\n{description}\n\n## API contract\nSee openapi.yaml.\n"),
    "implement": (
        "implement.md",
        "# Implementation notes\n\nBusiness logic behind the contract.\n",
    ),
    "validate": ("validate.md", "# Validation\n\nInput validation and error handling added.\n"),
    "optimize": ("optimize.md", "# Optimization\n\nNo N+1 queries; caching where it pays.\n"),
    "test": ("test.md", "# Tests\n\nUnit and integration tests added.\n"),
    "document": ("document.md", "# Documentation\n\nAPI docs and README updated.\n"),
    "verify": ("verify.md", "# Verification\n\nTargets checked.\n"),
}


def main() -> int:
    ctx = json.loads(Path(os.environ["IMPLFLOW_CONTEXT_FILE"]).read_text(encoding="utf-8"))
    phase = ctx["phase"]["name"]
    name, template = ARTIFACTS.get(phase, (f"{phase}.md", f"# {phase}\n"))
    body = template.format(title=ctx["title"], description=ctx["description"])
    if ctx.get("feedback"):
        body += "\n## Feedback addressed\n" + "".join(f"- {f}\n" for f in ctx["feedback"])
    out = Path(".implflow") / name
    out.parent.mkdir(exist_ok=True)
    out.write_text(body, encoding="utf-8")
    print(f"{phase}: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
