"""The README's examples run as written, in order, so the README cannot drift from the code.

Every ``sh``/``python`` block of README.md is run, one after the other in one shell session
(as a reader pastes them into one terminal), against a dev server and a ``python worker.py``
started here. A block that is not meant to run (it installs, runs forever, or shows answers
the walk-through never reaches) says so on the line before it::

    <!-- not-run: why -->

and those blocks are still checked for what can be checked without running them.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from implflow.client import ImplflowClient
from implflow.connection import connect
from implflow.server import dev_server

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
LANGUAGES = {"sh": "shell", "bash": "shell", "shell": "shell", "python": "python", "py": "python"}
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(?P<reason>.*?)\s*-->$")
SCRATCH_REPO = Path("/tmp/implflow-try")  # the path the README's examples use


@dataclass(frozen=True)
class Block:
    language: str  # "shell" or "python"
    code: str
    line: int  # of the opening fence, 1-based
    not_run: str | None  # the reason, for a block marked not-run


def readme_blocks(text: str) -> list[Block]:
    """The shell and Python blocks of ``text``, with their not-run reasons."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    previous = ""  # the last non-blank line before the current one
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            fence_at, lang = i, line[3:].strip()
            i += 1
            body: list[str] = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if lang in LANGUAGES:
                marker = NOT_RUN.match(previous.strip())
                blocks.append(
                    Block(
                        LANGUAGES[lang],
                        "\n".join(body) + "\n",
                        fence_at + 1,
                        marker.group("reason") if marker else None,
                    )
                )
            previous = "```"
        elif line.strip():
            previous = line
        i += 1
    return blocks


def test_every_example_either_runs_or_says_why() -> None:
    text = README.read_text(encoding="utf-8")
    blocks = readme_blocks(text)
    assert sum(b.not_run is None for b in blocks) >= 5  # the walk-through itself
    for b in blocks:
        assert b.not_run != "", f"README.md:{b.line}: a not-run block must say why"
        if b.language == "python":
            # Pasted as written, a block must at least be a valid program (a top-level
            # `await` is not).
            compile(b.code, f"README.md:{b.line}", "exec", dont_inherit=True)
    # A not-run marker that is not right before a code block marks nothing.
    lines = text.splitlines()
    for n, line in enumerate(lines):
        if NOT_RUN.match(line.strip()):
            following = next((x for x in lines[n + 1 :] if x.strip()), "")
            assert following.startswith("```"), f"README.md:{n + 1}: marker without a block"


def test_readme_parser_sees_markers_and_languages() -> None:
    text = (
        "intro\n\n<!-- not-run: loops forever -->\n```sh\nyes\n```\n"
        "```python\nprint(1)\n```\n```yaml\na: 1\n```\n"
    )
    blocks = readme_blocks(text)
    assert [(b.language, b.not_run, b.line) for b in blocks] == [
        ("shell", "loops forever", 4),
        ("python", None, 7),
    ]
    assert blocks[1].code == "print(1)\n"


def _script(blocks: list[Block], scratch: Path) -> str:
    """One shell session running the blocks in order, each announced by a marker line."""
    parts = ["set -e", f"cd {ROOT}"]
    for n, b in enumerate(blocks):
        parts.append(f"echo '::: README.md:{b.line}'")
        if b.language == "shell":
            parts.append(b.code)
        else:
            program = scratch / f"readme_{b.line}.py"
            program.write_text(b.code, encoding="utf-8")
            parts.append(f"python {program}")
        parts.append(f"echo '::: done {n}'")
    return "\n".join(parts) + "\n"


@pytest.mark.e2e
async def test_readme_examples_run_as_written(tmp_path: Path) -> None:
    runnable = [b for b in readme_blocks(README.read_text(encoding="utf-8")) if b.not_run is None]
    shutil.rmtree(SCRATCH_REPO, ignore_errors=True)
    async with dev_server(headless=True, log_file=tmp_path / "server.log") as address:
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": address,
            "IMPLFLOW_DATA_DIR": str(tmp_path / "data"),
            "IMPLFLOW_LOG_FORMAT": "json",
            # The reader's shell: the venv's `python`, `implflow` and `temporal` first.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        env.pop("IMPLFLOW_EXECUTOR", None)  # the worker's out-of-the-box default
        worker_log = (tmp_path / "worker.log").open("w")
        worker = subprocess.Popen(
            [sys.executable, "worker.py"], cwd=ROOT, env=env, stdout=worker_log, stderr=worker_log
        )
        try:
            deadline = time.monotonic() + 30
            while "worker started" not in (tmp_path / "worker.log").read_text():
                assert worker.poll() is None and time.monotonic() < deadline
                await asyncio.sleep(0.2)
            script = tmp_path / "readme.sh"
            script.write_text(_script(runnable, tmp_path), encoding="utf-8")
            proc = await asyncio.to_thread(
                subprocess.run,
                ["bash", str(script)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=480,
                check=False,
            )
            markers = re.findall(r"^::: README\.md:\d+$", proc.stdout, re.MULTILINE)
            where = markers[-1] if markers else "(before the first block)"
            assert proc.returncode == 0, (
                f"{where} failed (exit {proc.returncode}):\n"
                f"{proc.stdout[-2500:]}\n--- stderr ---\n{proc.stderr[-2500:]}"
            )
            assert proc.stdout.count("::: done") == len(runnable)

            # What the examples did, as the server saw it.
            flow = ImplflowClient(await connect(address))
            auth = await flow.status("auth-api")
            assert [d.decision for d in auth.decisions] == ["approve", "reject", "abort"]
            assert await flow.execution_state("auth-api") == "failed"
            assert await flow.execution_state("todo-api") == "cancelled"
            rows = await flow.list(limit=10)
            by_title = {r["title"]: r for r in rows}
            assert by_title["Due dates"]["state"] == "completed"  # the Python program's task
            assert by_title["Todo API"]["state"] == "cancelled"
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            finally:
                worker_log.close()
                shutil.rmtree(SCRATCH_REPO, ignore_errors=True)
