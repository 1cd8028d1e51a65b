"""Git as the durable artifact store: one branch per task, one commit per phase round.

Each task works on branch ``implflow/<key>`` of the target repository (a local path or any
git URL — the "origin"), where ``<key>`` is ``branch_key(workflow_id)``: the id itself when
it is already a short, safe ref name, else a readable prefix plus a hash of the whole id, so
two workflow ids never share a branch. A phase activity fetches that branch (and nothing
else) into a single-branch checkout under the worker's workspace root, kept warm between
rounds, lets the executor work, then records exactly one commit for the phase round, with
trailers::

    Implflow-Workflow: <workflow id>
    Implflow-Run: <workflow run id>
    Implflow-Phase: <phase>
    Implflow-Round: <round>
    Implflow-Attempt: <attempt>
    Implflow-Executor: <executor>
    Implflow-Session: <agent session id, when there is one>

and pushes the branch back (retried on its own, with backoff: a finished round is never run
again because a push failed — the next attempt finds the local commit and only pushes it).
The outcome of the round is stored on the branch (``.implflow/runs/<phase>-r<round>.json``,
an ``implflow.models.RoundRecord``), so a retried activity that finds its round already
committed by its own run returns that outcome instead of running the agent again.

implflow's own git commands never run code from the checkout: hooks are off
(``core.hooksPath=/dev/null``), the checkout's ``.git/config`` is put back to what implflow
wrote at clone time before each use (an agent may have added a credential helper, filter,
``sshCommand`` or a new ``origin``), the system config is not read, prompts are off, and
commands that need no network run with a minimal environment.
Workers keep nothing a later phase needs: any worker can run any phase.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from implflow.errors import REPO_UNAVAILABLE, ImplflowError
from implflow.layout import (
    BRANCH_PREFIX,
    IMPLFLOW_DIR,
    LOGS_DIR,
    REPORTS_DIR,
    RUNS_DIR,
    TRAILERS_FORMAT,
    branch_key,
    is_url,
    parse_trailers,
)
from implflow.models import RoundRecord

log = structlog.stdlib.get_logger("implflow.workspace")

GIT_TIMEOUT_S = 600
IDENTITY = ("-c", "user.name=implflow", "-c", "user.email=implflow@localhost")

NO_HOOKS = "/dev/null"
"""``core.hooksPath`` of every implflow git command: a path under which no hook can exist."""

SAFE_OPTIONS = (
    "-c",
    f"core.hooksPath={NO_HOOKS}",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "protocol.ext.allow=never",
    "-c",
    "commit.gpgSign=false",
)
"""Prepended to every implflow git command: no hook, no fsmonitor command, no ``ext::``
transport, no signing program runs, whatever a config file says."""

NETWORK_COMMANDS = frozenset({"clone", "fetch", "push", "ls-remote"})
"""Commands that may need the worker's credentials (ssh agent, tokens): they get the worker's
environment. Every other git command gets only ``_LOCAL_ENV``."""

_LOCAL_ENV = ("PATH", "HOME", "TZ", "TMPDIR")
_GIT_LOCATION = re.compile(
    r"GIT_(DIR|WORK_TREE|INDEX_FILE|OBJECT_DIRECTORY|ALTERNATE_OBJECT_DIRECTORIES|COMMON_DIR"
    r"|NAMESPACE|CEILING_DIRECTORIES|PREFIX|QUARANTINE_PATH|SHALLOW_FILE|GRAFT_FILE"
    r"|REPLACE_REF_BASE)"
)
"""Inherited variables that would point implflow's git at another repository. (The worker's
own git configuration variables are the operator's and stay, for network commands.)"""


DEFAULT_GITIGNORE = (
    "# Added by implflow: the repository had no .gitignore. Build artefacts, caches and\n"
    "# environments stay out of the task branch.\n"
    "__pycache__/\n*.pyc\n.pytest_cache/\n.mypy_cache/\n.ruff_cache/\n.coverage\n"
    "*.egg-info/\nnode_modules/\n.venv/\ndist/\nbuild/\n"
)
"""Written as ``.gitignore`` on the task branch when the target has none (never over a file
the branch already tracks); an untracked ``.gitignore`` the agent wrote gets the missing lines."""

PUSH_ATTEMPTS = 5
PUSH_BACKOFF_S = (1.0, 2.0, 4.0, 8.0)
"""A push is retried on its own (about 15 s in all) before the activity fails with
``GitPushFailed``; the activity's next attempt then finds the local commit and only pushes."""

_REJECTED_FOR_GOOD = ("non-fast-forward", "fetch first", "stale info", "already exists")


# --- commit messages and their trailers -----------------------------------------------------


_TRAILER_LIKE = re.compile(r"^\s*Implflow-[A-Za-z-]+\s*:", re.IGNORECASE)
TRAILER_GUARD = "> "
"""Put before a line of agent or command text that would read as an implflow trailer."""

TRAILER_SEP = "%x1d"
"""``separator=`` of ``%(trailers:key=...)``: a repeated key's values, apart (last wins)."""


def message_text(text: str) -> str:
    """``text`` from an agent or command (a summary) as it may stand in a commit message.

    Every line that looks like an implflow trailer (``Implflow-<Key>:``) gets
    ``TRAILER_GUARD`` in front, so no reader, git's or a line scan, takes it for one; line
    breaks git does not know (``\\r`` and the like) become ``\\n`` first. The real trailers
    are the message's last paragraph, after this text.
    """
    return "\n".join(
        TRAILER_GUARD + line if _TRAILER_LIKE.match(line) else line for line in text.splitlines()
    )


def trailer_value(value: str) -> str:
    """A trailer's value on one line: text from an agent (a session id) cannot add a line."""
    return " ".join(value.splitlines())


def trailer_lines(trailers: Mapping[str, str | None]) -> str:
    """The trailer block implflow writes: ``Implflow-<key>: <value>`` per non-empty value."""
    return "".join(f"Implflow-{k}: {trailer_value(v)}\n" for k, v in trailers.items() if v)


def last_value(values: str) -> str:
    """The last of a key's values as ``%(trailers:key=K,valueonly,separator=%x1d)`` prints them."""
    return values.split("\x1d")[-1].strip()


# --- running git ------------------------------------------------------------------------


calls: Counter[str] = Counter()
"""How many git processes implflow started, by subcommand (for measurements and tests)."""
_calls_lock = threading.Lock()


def git(
    cwd: Path,
    *args: str,
    check: bool = True,
    timeout: float = GIT_TIMEOUT_S,
    index: Path | None = None,
    excludes: Path | None = None,
) -> str:
    """Run git with an argv list (``--`` before any user-supplied path or URL).

    Hooks, fsmonitor and the system config are off (``SAFE_OPTIONS``); ``index`` runs the
    command on another index file (``GIT_INDEX_FILE``); ``excludes`` is a file of ignore
    patterns used instead of the user's global one.
    """
    command = _subcommand(args)
    with _calls_lock:
        calls[command] += 1
    options = list(SAFE_OPTIONS)
    if excludes is not None:
        options += ["-c", f"core.excludesFile={excludes}"]
    proc = subprocess.run(
        ["git", *options, *args],
        cwd=cwd,
        env=git_env(network=command in NETWORK_COMMANDS, index=index),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise GitError(command, f"{proc.stdout.strip()}\n{proc.stderr.strip()}".strip())
    return proc.stdout.strip()


def git_env(*, network: bool, index: Path | None = None) -> dict[str, str]:
    """The environment of an implflow git command.

    Local commands (which may run filters or diff drivers) get only ``PATH``, ``HOME``,
    ``TZ`` and ``TMPDIR``; network commands keep the worker's variables (credentials) except
    those that would point git at another repository or configuration.
    """
    if network:
        env = {k: v for k, v in os.environ.items() if not _GIT_LOCATION.fullmatch(k)}
    else:
        env = {k: os.environ[k] for k in _LOCAL_ENV if k in os.environ}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0", LC_ALL="C", LANGUAGE="C")
    if index is not None:
        env["GIT_INDEX_FILE"] = str(index)
    return env


def _subcommand(args: tuple[str, ...]) -> str:
    rest = list(args)
    while len(rest) >= 2 and rest[0] == "-c":
        rest = rest[2:]
    return rest[0] if rest else ""


class GitError(ImplflowError, RuntimeError):
    """A git command failed; ``str()`` names the command and ends with git's own message.

    Also a ``RuntimeError``, as it was before ``ImplflowError`` existed: callers catch it so.
    """

    def __init__(self, command: str, detail: str) -> None:
        super().__init__(f"git {command} failed: {detail[-400:]}")
        self.command = command
        self.detail = detail


# --- names ------------------------------------------------------------------------------


def safe_name(name: str) -> str:
    """``name`` (a workflow id) as one path component on this worker: ``branch_key``."""
    return branch_key(name)


def run_suffix(run_id: str | None, commit: str) -> str:
    """What ``@<...>`` names an earlier run's branch by: its run id's last 12 hex digits."""
    if run_id:
        return run_id.replace("-", "")[-12:]
    return commit[:12]


# --- the origin -------------------------------------------------------------------------


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


CHECKPOINT_REFS = "refs/implflow/wip"
"""Where attempts' working trees are checkpointed: ``<CHECKPOINT_REFS>/<key>/<phase>-r<n>``."""

_BASE_REF = "refs/implflow/base"  # the origin's HEAD, fetched when the branch does not exist yet


@dataclass(frozen=True)
class Ref:
    """A ref as fetched: its commit, that commit's tree and its ``Implflow-Run`` trailer."""

    sha: str
    tree: str
    run: str


@dataclass
class SyncState:
    """What ``TaskCheckout.sync`` found and did."""

    start: str
    """The commit the round builds on: the branch tip (or the origin's HEAD for a new branch)."""
    start_tree: str | None
    branch_exists: bool
    checkpoints: dict[str, Ref] = field(default_factory=dict)
    """This task's checkpoint refs on the origin, by full ref name."""
    had_gitignore: bool = True
    """Whether the start commit has a ``.gitignore`` (else implflow adds its default set)."""


@dataclass(frozen=True)
class Claim:
    """What ``TaskCheckout.claim`` did at the start of a run."""

    branch: str
    moved_to: str | None = None
    """Where an earlier run's branch of this workflow id went (kept, renamed)."""
    adopted: str | None = None
    """The tip of a branch prepared for this task (a plan's stacked start): the task's base."""


class TaskCheckout:
    """The disposable checkout of one task's branch on this worker.

    ``run_id`` (default: the current activity's workflow run) goes into the ``Implflow-Run``
    trailer of every commit; a round or gate recorded by another run is never returned.
    """

    def __init__(
        self, repo: str, workflow_id: str, workspaces: Path, run_id: str | None = None
    ) -> None:
        self.origin = origin_url(repo)
        self.workflow_id = workflow_id
        self.key = branch_key(workflow_id)
        self.branch = f"{BRANCH_PREFIX}{self.key}"
        self.root = workspaces / self.key
        self.dir = self.root / "checkout"
        if run_id is None and activity.in_activity():
            run_id = activity.info().workflow_run_id
        self.run_id = run_id
        self.state: SyncState | None = None

    @property
    def synced(self) -> SyncState:
        """What the last ``sync`` found; a programming error before the first."""
        if self.state is None:
            raise RuntimeError("TaskCheckout.sync() has not run")
        return self.state

    # --- the clone ----------------------------------------------------------------------

    @property
    def _trusted_config(self) -> Path:
        """The checkout's ``.git/config`` as implflow's clone wrote it (outside the checkout)."""
        return self.root / "git-config"

    def _ensure_clone(self) -> None:
        """A single-branch clone, once per task on this worker; its config put back each time."""
        if (self.dir / ".git").is_dir() and self._trusted_config.is_file():
            self.restore_config()
            return
        if self.dir.exists():  # an older worker's clone, or one that never finished
            shutil.rmtree(self.dir)
        self.root.mkdir(parents=True, exist_ok=True)
        git(
            self.root,
            "clone",
            "--quiet",
            "--no-checkout",
            "--single-branch",
            "--no-tags",
            "--",
            self.origin,
            str(self.dir),
        )
        shutil.copyfile(self.dir / ".git" / "config", self._trusted_config)

    def restore_config(self) -> None:
        """Put ``.git/config`` back to the trusted copy if anything changed it."""
        config = self.dir / ".git" / "config"
        trusted = self._trusted_config.read_bytes()
        try:
            same = config.read_bytes() == trusted and not config.is_symlink()
        except OSError:
            same = False
        if not same:
            with contextlib.suppress(FileNotFoundError):
                config.unlink()
            config.write_bytes(trusted)

    def git(self, *args: str, check: bool = True, **kw: Any) -> str:
        """``git`` in the checkout (see the module-level ``git``)."""
        return git(self.dir, *args, check=check, **kw)

    def tree_of(self, commit: str) -> str:
        return self.git("rev-parse", "--verify", f"{commit}^{{tree}}")

    def cat_commit(self, sha: str) -> str:
        """The raw commit object (headers, a blank line, the message)."""
        return self.git("cat-file", "commit", sha)

    def changed_paths(self, old: str, new: str) -> list[str]:
        """Paths added, changed or deleted from ``old`` to ``new``."""
        out = self.git("diff", "--name-only", "--no-renames", "-z", old, new, "--")
        return [p for p in out.split("\x00") if p]

    def restore_tree(self, commit: str) -> None:
        """Make the working tree ``commit``'s (files it lacks deleted); index and HEAD stay."""
        self.restore_config()
        self.git("restore", f"--source={commit}", "--worktree", "--", ".")

    # --- fetching ---------------------------------------------------------------------

    @property
    def _checkpoint_prefix(self) -> str:
        return f"{CHECKPOINT_REFS}/{self.key}"

    def _fetch(self) -> dict[str, Ref]:
        """Fetch the task branch and its checkpoints only; every fetched ref, by name."""
        tracking = f"refs/remotes/origin/{self.branch}"
        checkpoints = f"+{self._checkpoint_prefix}/*:{self._checkpoint_prefix}/*"

        def fetch(source: str) -> None:
            self.git(
                "fetch", "--quiet", "--prune", "--no-tags", "--", self.origin, source, checkpoints
            )

        try:
            fetch(f"+refs/heads/{self.branch}:{tracking}")
        except GitError as err:
            if "couldn't find remote ref" not in err.detail:
                raise
            # A new task (or one whose earlier run's branch was moved): start from HEAD.
            with contextlib.suppress(GitError):
                self.git("update-ref", "-d", tracking)
            fetch(f"+HEAD:{_BASE_REF}")
        return self._refs(tracking, _BASE_REF, self._checkpoint_prefix)

    def _refs(self, *patterns: str) -> dict[str, Ref]:
        out = self.git(
            "for-each-ref",
            "--format=%(objectname)%00%(tree)%00%(refname)%00"
            f"%(trailers:key=Implflow-Run,valueonly,separator={TRAILER_SEP})%1e",
            *patterns,
        )
        refs = {}
        for entry in out.split("\x1e"):
            parts = entry.strip().split("\x00")
            if len(parts) == 4:
                sha, tree, name, run = parts
                refs[name] = Ref(sha, tree, last_value(run))
        return refs

    def sync(self, tip: str | None = None) -> str:
        """Clone or fetch, then check out the task branch exactly as pushed; returns HEAD.

        The working tree is left alone when it already is that commit, clean (files the
        repository ignores, such as caches and environments, stay between rounds). Commits of
        this run that an earlier attempt made but could not push are pushed first.

        ``tip``: the branch's commit as the workflow knows it (the last round's or gate's). A
        checkout that is already there, clean, fetches nothing: this worker made that commit
        or fetched it, and only this task's one running activity moves the branch. (Should
        the origin have moved all the same, the round's push is refused and its retry, which
        passes no ``tip``, fetches.)
        """
        self._ensure_clone()
        if tip:
            head, on_branch, dirty, _ = self._status()
            if on_branch and head == tip and not dirty:
                self.state = SyncState(
                    start=tip,
                    start_tree=None,
                    branch_exists=True,
                    had_gitignore=(self.dir / ".gitignore").exists(),
                )
                return tip
        refs = self._fetch()
        tracking = refs.get(f"refs/remotes/origin/{self.branch}")
        base = tracking or refs.get(_BASE_REF)
        if base is None:
            raise GitError("fetch", "the repository has no HEAD to start the task branch from")
        head, on_branch, dirty, untracked = self._status()
        start, start_tree = base.sha, base.tree or None
        if on_branch and head and head != base.sha and self._unpushed_rounds(base.sha, head):
            self.push([f"{head}:refs/heads/{self.branch}"])
            start, start_tree = head, None
        if not on_branch or head != start or dirty:
            self.git("checkout", "--quiet", "--force", "-B", self.branch, start)
            if untracked:
                self.git("clean", "-qfd")
        self.state = SyncState(
            start=start,
            start_tree=start_tree,
            branch_exists=tracking is not None,
            checkpoints={k: v for k, v in refs.items() if k.startswith(self._checkpoint_prefix)},
            had_gitignore=(self.dir / ".gitignore").exists(),
        )
        return start

    def _status(self) -> tuple[str | None, bool, bool, bool]:
        """HEAD's commit, whether HEAD is the task branch, whether anything differs from
        HEAD, and whether there are untracked files (ignored files do not count)."""
        out = self.git("status", "--porcelain=v2", "--branch", "-z", "--untracked-files=all")
        head: str | None = None
        on_branch = dirty = untracked = False
        for entry in out.split("\x00"):
            if entry.startswith("# branch.oid "):
                oid = entry.removeprefix("# branch.oid ")
                head = oid if oid != "(initial)" else None
            elif entry.startswith("# branch.head "):
                on_branch = entry.removeprefix("# branch.head ") == self.branch
            elif entry[:2] in ("1 ", "2 ", "u "):
                dirty = True
            elif entry.startswith("? "):
                dirty = untracked = True
        return head, on_branch, dirty, untracked

    def _unpushed_rounds(self, base: str, head: str) -> bool:
        """Whether ``head`` is ``base`` plus only this run's implflow commits (a push failed)."""
        if not _ok(self.dir, "merge-base", "--is-ancestor", base, head):
            return False
        out = self.git(
            "log",
            f"--format=%(trailers:key=Implflow-Workflow,valueonly,separator={TRAILER_SEP})%x1f"
            f"%(trailers:key=Implflow-Run,valueonly,separator={TRAILER_SEP})%x1e",
            f"{base}..{head}",
        )
        entries = [e.strip() for e in out.split("\x1e") if e.strip()]
        for entry in entries:
            workflow, _, run = entry.partition("\x1f")
            if last_value(workflow) != self.workflow_id or not self.is_this_run(last_value(run)):
                return False
        return bool(entries)

    def is_this_run(self, run: str) -> bool:
        """Whether a commit's ``Implflow-Run`` is this run's; a commit without one predates
        run trailers (an upgrade mid-task) and counts as this run's."""
        return not run or self.run_id is None or run == self.run_id

    # --- the start of a run -------------------------------------------------------------

    def claim(self) -> Claim:
        """Make the task branch this run's before any phase runs (``prepare_task``).

        A branch holding commits of this workflow id from another run (the id was reused) is
        moved to ``implflow/<key>@<old run>`` and kept, with its checkpoints; this run then
        starts a fresh branch. A branch with no commits of this id (prepared by a plan from
        its dependencies) is adopted as it is. Other runs' checkpoints are moved likewise.
        """
        self._ensure_clone()
        refs = self._fetch()
        if self.run_id is None:  # outside a workflow run: nothing to tell runs apart by
            return Claim(branch=self.branch)
        tracking = refs.get(f"refs/remotes/origin/{self.branch}")
        foreign = {
            name: ref
            for name, ref in refs.items()
            if name.startswith(self._checkpoint_prefix + "/") and ref.run != self.run_id
        }
        runs = [] if tracking is None else self._runs_of_this_id(tracking.sha)
        others = [run for run in runs if run != self.run_id]
        if tracking is None or not others:
            with contextlib.suppress(GitError):  # tidying: never worth failing a start
                for suffix, group in _by_run(foreign).items():
                    self.push(self._checkpoint_moves(group, suffix))
            adopted = tracking.sha if tracking is not None and not runs else None
            return Claim(branch=self.branch, adopted=adopted)
        suffix = run_suffix(others[0] or None, tracking.sha)  # the newest earlier run
        target = f"{self.branch}@{suffix}"
        self.push(
            [
                f"{tracking.sha}:refs/heads/{target}",
                f":refs/heads/{self.branch}",
                *self._checkpoint_moves(foreign, suffix),
            ],
            lease=(f"refs/heads/{self.branch}", tracking.sha),
        )
        self.git("update-ref", "-d", f"refs/remotes/origin/{self.branch}")
        return Claim(branch=self.branch, moved_to=target)

    def _runs_of_this_id(self, tip: str) -> list[str]:
        """The run trailers of this workflow id's commits on ``tip`` (``""``: no trailer)."""
        out = self.git(
            "log",
            "--fixed-strings",
            f"--grep=Implflow-Workflow: {self.workflow_id}",
            f"--format=%(trailers:key=Implflow-Workflow,valueonly,separator={TRAILER_SEP})%x1f"
            f"%(trailers:key=Implflow-Run,valueonly,separator={TRAILER_SEP})%x1e",
            tip,
        )
        runs = []
        for entry in out.split("\x1e"):
            workflow, _, run = entry.strip().partition("\x1f")
            if last_value(workflow) == self.workflow_id:
                runs.append(last_value(run))
        return runs

    def _checkpoint_moves(self, checkpoints: Mapping[str, Ref], suffix: str) -> list[str]:
        moves = []
        for name, ref in checkpoints.items():
            rest = name.removeprefix(self._checkpoint_prefix + "/")
            moves += [f"{ref.sha}:{self._checkpoint_prefix}@{suffix}/{rest}", f":{name}"]
        return moves

    # --- pushing ------------------------------------------------------------------------

    def push(self, refspecs: Iterable[str], *, lease: tuple[str, str] | None = None) -> None:
        """Push ``refspecs`` to the origin, retried with backoff; raises ``GitError`` at last.

        A rejection that waiting cannot fix (another push won the race) is not retried.
        """
        args = ["push", "--quiet"]
        if lease is not None:
            args.append(f"--force-with-lease={lease[0]}:{lease[1]}")
        args += ["--", self.origin, *refspecs]
        for attempt in range(PUSH_ATTEMPTS):
            try:
                self.git(*args)
                return
            except GitError as err:
                final = attempt == PUSH_ATTEMPTS - 1
                if final or is_race_lost(err):
                    raise
                time.sleep(PUSH_BACKOFF_S[min(attempt, len(PUSH_BACKOFF_S) - 1)])

    # --- what the branch already holds --------------------------------------------------

    def recorded(self, key: RoundKey) -> RoundRecord | None:
        """The stored outcome of the phase round ``key`` if this run committed it.

        A record that no longer parses still means the round is done: it reads as the
        defaults (see ``RoundRecord``), with the commit that holds it.
        """
        if self.state is not None and not (self.dir / key.record_path).exists():
            return None  # the checkout is the branch tip: no record file, no round
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
        if self.state is not None and not (self.dir / key.verdict_path).exists():
            return None
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
        """The commit of ``key`` on the task branch, this run's: its round's, or its gate's.

        Read from the commit's trailer block as git parses it (the message's last
        paragraph): a line of the summary above it never counts, in commits of any version.
        """
        log = self.git(
            "log",
            "--fixed-strings",
            f"--grep=Implflow-Workflow: {key.workflow_id}",
            f"--format=%H%x1f{TRAILERS_FORMAT}%x1e",
            "HEAD",
        )
        want = {"Workflow": key.workflow_id, "Phase": key.phase, "Round": str(key.round)}
        for entry in log.split("\x1e"):
            sha, _, block = entry.strip().partition("\x1f")
            trailers = parse_trailers(block)
            if (
                sha
                and (trailers.get("Implflow-Gate") == "yes") == gate
                and all(trailers.get(f"Implflow-{k}") == v for k, v in want.items())
                and self.is_this_run(trailers.get("Implflow-Run", ""))
            ):
                return sha
        return None

    def _show(self, sha: str, path: str) -> str:
        """``path`` as committed in ``sha``; ``""`` when it is not there."""
        return self.git("show", f"{sha}:{path}", check=False)

    def pin_file(self, path: str, commit: str) -> None:
        """Make ``path`` in the checkout what it was at ``commit`` (absent if it was absent)."""
        target = self.dir / path
        try:
            self.git("cat-file", "-e", f"{commit}:{path}", timeout=60)
        except GitError:  # not there at that commit: not here either
            if target.exists() or target.is_symlink():
                target.unlink()
            return
        self.git("checkout", commit, "--", path)

    # --- committing ---------------------------------------------------------------------

    def commit_round(
        self, key: RoundKey, start: str, record: RoundRecord, *, drop: Iterable[str] = ()
    ) -> str:
        """Squash whatever the executor did into exactly one commit for the round, push it.

        ``drop`` names refs to delete with the same push (the round's checkpoint).
        """
        values = {
            "Workflow": key.workflow_id,
            "Run": self.run_id,
            "Phase": key.phase,
            "Round": str(key.round),
            "Attempt": str(record.attempt),
            "Executor": record.executor,
            "Session": record.usage.session_id if record.usage else None,
        }
        # Earlier implflow versions read these keys; a record with no failed attempt keeps them.
        exclude = None if record.failed_attempts else {"failed_attempts"}
        return self._commit(
            start,
            key.record_path,
            record.model_dump(mode="json", exclude=exclude),
            f"implflow: {key.phase} (round {key.round})",
            record.summary[:200].replace("\n", " "),
            values,
            drop,
        )

    def commit_gate(self, key: RoundKey, start: str, verdict: dict[str, Any]) -> str:
        """One commit with the gate's reports and verdict for the round, pushed."""
        values = {
            "Workflow": key.workflow_id,
            "Run": self.run_id,
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

    def ensure_gitignore(self) -> None:
        """When the start commit has no ``.gitignore``: the default entries, untracked only."""
        if self.state is None or self.state.had_gitignore:
            return
        path = self.dir / ".gitignore"
        if path.is_symlink():
            return
        if not path.exists():
            path.write_text(DEFAULT_GITIGNORE, encoding="utf-8")
            return
        present = set(path.read_text(encoding="utf-8", errors="replace").splitlines())
        missing = [ln for ln in DEFAULT_GITIGNORE.splitlines() if ln not in present]
        if any(not ln.startswith("#") for ln in missing):
            with path.open("a", encoding="utf-8") as fh:
                fh.write("\n" + "\n".join(missing) + "\n")

    def stage_all(self, *, index: Path | None = None, excludes: Path | None = None) -> str:
        """Stage the whole working tree (``.implflow/`` even where ignored); its tree id."""
        self.git("add", "--all", "--", ".", index=index, excludes=excludes)
        if (self.dir / IMPLFLOW_DIR).exists():  # even if the repo ignores it
            self.git("add", "--all", "--force", "--", IMPLFLOW_DIR, index=index)
        return self.git("write-tree", index=index)

    def _commit(
        self,
        start: str,
        record_path: str,
        record: dict[str, Any],
        subject: str,
        summary: str,
        trailers: Mapping[str, str | None],
        drop: Iterable[str] = (),
    ) -> str:
        self.restore_config()
        path = self.dir / record_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        self.ensure_gitignore()
        tree = self.stage_all()
        # The summary is the agent's or command's text: no line of it may read as a trailer,
        # and the real trailers are the last paragraph (``_find_commit`` reads only that).
        message = (
            f"{trailer_value(subject)}\n\n{message_text(summary)}\n\n{trailer_lines(trailers)}"
        )
        # Parented on ``start``: an agent's own commits fold into the round's one commit.
        sha = self.git(*IDENTITY, "commit-tree", tree, "-p", start, "-m", message)
        self.git("update-ref", f"refs/heads/{self.branch}", sha)
        self.push([f"{sha}:refs/heads/{self.branch}"])
        if self.state is not None:
            self.state.start, self.state.start_tree = sha, tree
        self.drop(drop)
        return sha

    def drop(self, refs: Iterable[str]) -> None:
        """Delete ``refs`` (checkpoints of a committed round) on the origin, best effort."""
        deletions = [f":{ref}" for ref in refs]
        if deletions:  # the round is in: a checkpoint left behind is only untidy
            try:
                self.push(deletions)
            except GitError as err:
                log.warning("checkpoint not removed", refs=deletions, error=str(err))


def _by_run(checkpoints: Mapping[str, Ref]) -> dict[str, dict[str, Ref]]:
    """Checkpoint refs grouped by the ``@<run>`` suffix they are kept under."""
    groups: dict[str, dict[str, Ref]] = {}
    for name, ref in checkpoints.items():
        groups.setdefault(run_suffix(ref.run or None, ref.sha), {})[name] = ref
    return groups


def is_race_lost(err: GitError) -> bool:
    """Whether a push was refused because the origin already moved on (another attempt)."""
    return any(reason in err.detail for reason in _REJECTED_FOR_GOOD)


def _ok(cwd: Path, *args: str) -> bool:
    """Whether a git command (a question such as ``merge-base --is-ancestor``) says yes."""
    try:
        git(cwd, *args)
    except GitError:
        return False
    return True


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
    path = workspaces / branch_key(workflow_id)
    path.mkdir(parents=True, exist_ok=True)
    return path
