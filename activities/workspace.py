"""Where a phase runs: the repository path, or a clone of a git URL on this worker."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from temporalio.exceptions import ApplicationError

from implflow.errors import REPO_UNAVAILABLE

_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[\w.-]+@[\w.-]+:)", re.IGNORECASE)


def is_url(repo: str) -> bool:
    """``https://…``, ``ssh://…``, ``file://…`` or scp-style ``git@host:path``."""
    return bool(_URL.match(repo))


def check_repo(repo: str) -> str:
    """Fail fast (non-retryable) when a local repository path cannot be used."""
    if is_url(repo):
        return "url"
    path = Path(repo).expanduser()
    if not path.is_dir():
        raise ApplicationError(
            f"repo: {repo!r} is not a directory on this worker "
            "(give a path the worker can read, or a git URL)",
            type=REPO_UNAVAILABLE,
            non_retryable=True,
        )
    return "path"


def resolve_workdir(repo: str, workflow_id: str, workspaces: Path) -> Path:
    """The directory a phase works in. A URL is cloned once per task under ``workspaces``."""
    if not is_url(repo):
        check_repo(repo)
        return Path(repo).expanduser().resolve()
    target = workspaces / _safe(workflow_id) / "repo"
    if not (target / ".git").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # "--" ends options: a repo string can never be read as a git flag.
        proc = subprocess.run(
            ["git", "clone", "--quiet", "--", repo, str(target)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if proc.returncode != 0:
            raise ApplicationError(
                f"repo: git clone failed: {proc.stderr.strip()[-300:]}", type=REPO_UNAVAILABLE
            )
    return target


def head_commit(workdir: Path) -> str | None:
    """HEAD of the checkout, or None when it is not a git repository (or has no commits)."""
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "HEAD"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def task_dir(workflow_id: str, workspaces: Path) -> Path:
    """Per-task scratch space on this worker (logs, context files). Disposable."""
    path = workspaces / _safe(workflow_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:200] or "_"
