"""Copies of the example target for gate tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

from implflow.demo import make_demo_repo

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "todo-service"


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def copy_example(tmp_path: Path) -> Path:
    """examples/todo-service copied into tmp_path, committed on a fresh git repository."""
    return make_demo_repo(tmp_path)
