"""Git as the durable artifact store: one branch per task, one commit per phase round.

Each task works on branch ``implflow/<workflow-id>`` of the target repository (a
local path or any git URL — the "origin"). A phase activity fetches that branch
into a disposable checkout under the worker's workspace root, lets the executor
work, then records exactly one commit for the phase round, with trailers::

    Implflow-Workflow: <workflow id>
    Implflow-Phase: <phase>
    Implflow-Round: <round>
    Implflow-Attempt: <attempt>
    Implflow-Executor: <executor>
    Implflow-Session: <agent session id, when there is one>

and pushes the branch back. The outcome of the round is stored on the branch
(``.implflow/runs/<phase>-r<round>.json``, an ``implflow.models.RoundRecord``), so a
retried activity that finds its round already committed returns that outcome instead
of running the agent again.
Workers keep nothing a later phase needs: any worker can run any phase.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from temporalio.exceptions import ApplicationError

from implflow.errors import REPO_UNAVAILABLE, ImplflowError
from implflow.layout import IMPLFLOW_DIR, LOGS_DIR, REPORTS_DIR, RUNS_DIR
from implflow.models import RoundRecord

_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[\w.-]+@[\w.-]+:)", re.IGNORECASE)
GIT_TIMEOUT_S = 600
IDENTITY = ("-c", "user.name=implflow", "-c", "user.email=implflow@localhost")


def is_url(repo: str) -> bool:
    """``https://…``, ``ssh://…``, ``file://…`` or scp-style ``git@host:path``."""
    return bool(_URL.match(repo))


def branch_name(workflow_id: str) -> str:
    return f"implflow/{safe_name(workflow_id)}"


def git(cwd: Path, *args: str, check: bool = True, timeout: float = GIT_TIMEOUT_S) -> str:
    """Run git with an argv list (``--`` before any user-supplied path or URL)."""
    proc = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise GitError(args[0], proc.stderr.strip() or proc.stdout.strip())
    return proc.stdout.strip()


class GitError(ImplflowError, RuntimeError):
    """A git command failed; ``str()`` names the command and ends with git's own message.

    Also a ``RuntimeError``, as it was before ``ImplflowError`` existed: callers catch it so.
    """

    def __init__(self, command: str, detail: str) -> None:
        super().__init__(f"git {command} failed: {detail[-400:]}")


def check_repo(repo: str) -> tuple[Literal["path", "url"], str | None]:
    """Fail fast (non-retryable) when a repository cannot be used.

    Returns its kind and the commit the task starts from: the origin's HEAD now
    (``None`` for a remote without one).
    """
    if is_url(repo):
        try:
            out = git(Path.cwd(), "ls-remote", "--", repo, "HEAD", timeout=120)
        except GitError as err:
            raise ApplicationError(
                f"repo: cannot read {repo!r}: {err}", type=REPO_UNAVAILABLE, non_retryable=True
            ) from None
        return "url", out.split()[0] if out else None
    path = Path(repo).expanduser()
    if not path.is_dir():
        raise ApplicationError(
            f"repo: {repo!r} is not a directory on this worker "
            "(give a path the worker can read, or a git URL)",
            type=REPO_UNAVAILABLE,
            non_retryable=True,
        )
    try:
        head = git(path, "rev-parse", "--verify", "--quiet", "HEAD", timeout=60)
    except GitError:
        raise ApplicationError(
            f"repo: {repo!r} is not a git repository with at least one commit "
            "(implflow keeps every phase's work on a branch: run `git init` and commit first)",
            type=REPO_UNAVAILABLE,
            non_retryable=True,
        ) from None
    return "path", head


def origin_url(repo: str) -> str:
    return repo if is_url(repo) else str(Path(repo).expanduser().resolve())


@dataclass(frozen=True)
class RoundKey:
    workflow_id: str
    phase: str
    round: int

    @property
    def record_path(self) -> str:
        return f"{RUNS_DIR}/{self.phase}-r{self.round}.json"

    @property
    def report_dir(self) -> str:
        return f"{REPORTS_DIR}/{self.phase}/{self.round}"

    @property
    def verdict_path(self) -> str:
        return f"{self.report_dir}/verdict.json"


class TaskCheckout:
    """The disposable checkout of one task's branch on this worker."""

    def __init__(self, repo: str, workflow_id: str, workspaces: Path) -> None:
        self.origin = origin_url(repo)
        self.workflow_id = workflow_id
        self.branch = branch_name(workflow_id)
        self.dir = workspaces / safe_name(workflow_id) / "checkout"

    def sync(self) -> str:
        """Clone or fetch, then check out the task branch exactly as pushed; returns HEAD."""
        if not (self.dir / ".git").exists():
            self.dir.parent.mkdir(parents=True, exist_ok=True)
            git(
                self.dir.parent,
                "clone",
                "--quiet",
                "--no-checkout",
                "--",
                self.origin,
                str(self.dir),
            )
        git(self.dir, "fetch", "--quiet", "--prune", "origin")
        remote = f"refs/remotes/origin/{self.branch}"
        if git(self.dir, "rev-parse", "--verify", "--quiet", remote, check=False):
            start = remote
        else:  # first phase of the task: branch off the origin's current HEAD
            start = (
                git(
                    self.dir,
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    "refs/remotes/origin/HEAD",
                    check=False,
                )
                or self._origin_head()
            )
        git(self.dir, "checkout", "--quiet", "--force", "-B", self.branch, start)
        git(self.dir, "reset", "--quiet", "--hard", start)
        git(self.dir, "clean", "-qfdx")
        return git(self.dir, "rev-parse", "HEAD")

    def _origin_head(self) -> str:
        out = git(self.dir, "ls-remote", "--symref", "origin", "HEAD")
        match = re.search(r"ref: refs/heads/(\S+)\s+HEAD", out)
        if match:
            return f"refs/remotes/origin/{match.group(1)}"
        heads = git(self.dir, "for-each-ref", "--format=%(refname)", "refs/remotes/origin/")
        first = next((h for h in heads.splitlines() if not h.endswith("/HEAD")), "")
        if not first:
            raise GitError("checkout", "the repository has no branches to start from")
        return first

    def recorded(self, key: RoundKey) -> RoundRecord | None:
        """The stored outcome of the phase round ``key`` if its commit is on the task branch.

        A record that no longer parses still means the round is done: it reads as the
        defaults (see ``RoundRecord``), with the commit that holds it.
        """
        sha = self._find_commit(key, gate=False)
        if sha is None:
            return None
        try:
            record = RoundRecord.model_validate_json(self._show(sha, key.record_path) or "{}")
        except ValidationError:
            record = RoundRecord()
        return record.model_copy(update={"commit": sha})

    def recorded_verdict(self, key: RoundKey) -> dict[str, Any] | None:
        """The stored gate verdict of ``key`` (its JSON, plus ``commit``) if it is on the branch."""
        sha = self._find_commit(key, gate=True)
        if sha is None:
            return None
        try:
            raw = json.loads(self._show(sha, key.verdict_path) or "{}")
        except json.JSONDecodeError:
            raw = {}
        verdict: dict[str, Any] = raw if isinstance(raw, dict) else {}
        verdict["commit"] = sha
        return verdict

    def _find_commit(self, key: RoundKey, *, gate: bool) -> str | None:
        """The commit of ``key`` on the task branch: its round's, or its gate's."""
        log = git(
            self.dir,
            "log",
            "--fixed-strings",
            f"--grep=Implflow-Workflow: {key.workflow_id}",
            "--format=%H%x1f%B%x1e",
            "HEAD",
        )
        want = {"Workflow": key.workflow_id, "Phase": key.phase, "Round": str(key.round)}
        for entry in log.split("\x1e"):
            sha, _, body = entry.strip().partition("\x1f")
            lines = body.splitlines()
            is_gate = "Implflow-Gate: yes" in lines
            if (
                sha
                and is_gate == gate
                and all(f"Implflow-{k}: {v}" in lines for k, v in want.items())
            ):
                return sha
        return None

    def _show(self, sha: str, path: str) -> str:
        """``path`` as committed in ``sha``; ``""`` when it is not there."""
        return git(self.dir, "show", f"{sha}:{path}", check=False)

    def pin_file(self, path: str, commit: str) -> None:
        """Make ``path`` in the checkout what it was at ``commit`` (absent if it was absent)."""
        target = self.dir / path
        try:
            git(self.dir, "cat-file", "-e", f"{commit}:{path}", timeout=60)
        except GitError:  # not there at that commit: not here either
            if target.exists() or target.is_symlink():
                target.unlink()
            return
        git(self.dir, "checkout", commit, "--", path)

    def commit_round(self, key: RoundKey, start: str, record: RoundRecord) -> str:
        """Squash whatever the executor did into exactly one commit for the round, push it."""
        values = {
            "Workflow": key.workflow_id,
            "Phase": key.phase,
            "Round": str(key.round),
            "Attempt": str(record.attempt),
            "Executor": record.executor,
            "Session": record.usage.session_id if record.usage else None,
        }
        return self._commit(
            start,
            key.record_path,
            record.model_dump(mode="json"),
            f"implflow: {key.phase} (round {key.round})",
            record.summary[:200].replace("\n", " "),
            values,
        )

    def commit_gate(self, key: RoundKey, start: str, verdict: dict[str, Any]) -> str:
        """One commit with the gate's reports and verdict for the round, pushed."""
        values = {
            "Workflow": key.workflow_id,
            "Phase": key.phase,
            "Round": str(key.round),
            "Gate": "yes",
        }
        outcome = "passed" if verdict.get("passed") else "failed"
        return self._commit(
            start,
            key.verdict_path,
            verdict,
            f"implflow: gate {key.phase} {outcome} (round {key.round})",
            str(verdict.get("failure_summary", ""))[:200].replace("\n", " "),
            values,
        )

    def _commit(
        self,
        start: str,
        record_path: str,
        record: dict[str, Any],
        subject: str,
        summary: str,
        trailers: Mapping[str, str | None],
    ) -> str:
        path = self.dir / record_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        git(self.dir, "reset", "--quiet", "--soft", start)  # an agent's own commits fold in
        git(self.dir, "add", "--all", "--", ".")
        git(self.dir, "add", "--all", "--force", "--", IMPLFLOW_DIR)  # even if the repo ignores it
        lines = "".join(f"Implflow-{k}: {v}\n" for k, v in trailers.items() if v)
        git(
            self.dir,
            *IDENTITY,
            "commit",
            "--quiet",
            "--allow-empty",
            "--no-verify",
            "-m",
            f"{subject}\n\n{summary}\n\n{lines}",
        )
        sha = git(self.dir, "rev-parse", "HEAD")
        git(self.dir, "push", "--quiet", "origin", f"HEAD:refs/heads/{self.branch}")
        return sha


def record_round(
    checkout: TaskCheckout, key: RoundKey, start: str, commit: str, summary: str, cassettes: Path
) -> Path:
    """Write the round's diff (minus implflow's own logs/records) as a replay cassette entry."""
    diff = git(
        checkout.dir,
        "diff",
        "--binary",
        start,
        commit,
        "--",
        ".",
        f":(exclude){LOGS_DIR}",
        f":(exclude){RUNS_DIR}",
    )
    target = cassettes / safe_name(key.workflow_id)
    target.mkdir(parents=True, exist_ok=True)
    stem = f"{key.phase}-r{key.round}"
    (target / f"{stem}.patch").write_text(diff + "\n" if diff else "", encoding="utf-8")
    (target / f"{stem}.json").write_text(json.dumps({"summary": summary}) + "\n", encoding="utf-8")
    return target


def task_dir(workflow_id: str, workspaces: Path) -> Path:
    """Per-task scratch space on this worker (context files). Disposable."""
    path = workspaces / safe_name(workflow_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def safe_name(name: str) -> str:
    """``name`` (a workflow id) as one path component on this worker: no ``/``, bounded."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:200] or "_"
