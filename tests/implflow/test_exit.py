"""``implflow.exit.run``: a script's outcome becomes its exit code, its output is kept."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = """
import asyncio, atexit, sys
from implflow.exit import run

atexit.register(lambda: print("atexit ran"))

async def main() -> None:
    await asyncio.sleep(0)
    print("did the work")  # piped, so block-buffered: must still come out
    {body}

run(main())
print("not reached")
"""


@pytest.mark.parametrize(
    ("body", "code", "stderr_has"),
    [
        ("pass", 0, ""),
        ("raise ValueError('bad repo')", 1, "ValueError: bad repo"),
        ("raise KeyboardInterrupt", 130, ""),
        ("sys.exit(3)", 3, ""),
        ("sys.exit('no worker')", 1, "no worker"),
    ],
)
def test_run_turns_the_outcome_into_the_exit_code(body: str, code: int, stderr_has: str) -> None:
    script = textwrap.dedent(SCRIPT).replace("{body}", body)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == "did the work\n"  # flushed; nothing after run(); no atexit
    assert stderr_has in proc.stderr
