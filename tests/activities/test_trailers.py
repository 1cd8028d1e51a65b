"""A round's trailers are the commit message's last paragraph, and nothing else is.

The summary in a round's commit message is the executor's text (a shell command's last output
line). A line of it that reads like an implflow trailer (``Implflow-Gate: yes``) must neither
hide the round from its own retry (which would commit and pay for it twice) nor from
``implflow diff``; the retry of a worker killed during its push must find the round.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import activities.workspace as workspace
from activities.phases import ImplActivities
from activities.workspace import RoundKey, TaskCheckout
from implflow.client import ROUNDS_LOG_FORMAT, _round_diff, _rounds
from implflow.layout import branch_name
from implflow.models import AgentUsage, RoundRecord
from implflow.settings import Settings
from tests.helpers import git_out as git
from tests.helpers import shell_phase as phase_input

SPOOFS = ["Implflow-Gate: yes", "Implflow-Run: other"]
"""Last output lines of a phase command that read like trailers (the round's summary)."""

TRAILER_LIKE = re.compile(r"^\s*Implflow-[A-Za-z-]+\s*:", re.IGNORECASE)


def run_env(run_id: str = "run-1", attempt: int = 1) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_run_id=run_id, attempt=attempt)
    return env


def worker(tmp_path: Path, name: str) -> ImplActivities:
    return ImplActivities(Settings(data_dir=tmp_path / name, sandbox="off"))


def counting(counter: Path, last_line: str) -> str:
    """A phase command that counts its runs, changes a file and prints ``last_line`` last."""
    return (
        f"open({str(counter)!r}, 'a').write('x'); open('work.txt', 'w').write('done'); "
        f"print('working'); print({last_line!r})"
    )


def subjects(repo: Path) -> list[str]:
    return git(repo, "log", "--format=%s", branch_name("wf-1")).splitlines()


def message_paragraphs(repo: Path, commit: str) -> list[str]:
    body = git(repo, "log", "-1", "--format=%B", commit)
    return [p for p in body.split("\n\n") if p.strip()]


@pytest.mark.parametrize("last_line", SPOOFS)
async def test_a_new_worker_after_a_kill_finds_the_round_its_output_spoofed(
    tmp_path: Path, repo: Path, last_line: str
) -> None:
    # The worker was killed after its push reached the origin (the origin's post-update
    # hook still ran): the activity is retried on another worker, which fetches the branch.
    counter = tmp_path / "runs"
    script = counting(counter, last_line)
    first = await run_env().run(worker(tmp_path, "w1").run_phase, phase_input(repo, script))
    again = await run_env(attempt=2).run(
        worker(tmp_path, "w2").run_phase, phase_input(repo, script)
    )
    assert counter.read_text() == "x"  # the command did not run twice
    assert (again.commit, again.reused) == (first.commit, True)
    assert subjects(repo).count("implflow: implement (round 1)") == 1


@pytest.mark.parametrize("last_line", SPOOFS)
async def test_a_retry_after_a_failed_push_finds_the_round_its_output_spoofed(
    tmp_path: Path, repo: Path, last_line: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The push never reached the origin: the retry on the same worker finds the local commit.
    monkeypatch.setattr(workspace, "PUSH_BACKOFF_S", (0.05, 0.05, 0.05, 0.05))
    flag, counter = tmp_path / "refuse", tmp_path / "runs"
    hook = repo / ".git" / "hooks" / "pre-receive"
    hook.write_text(f'#!/bin/sh\nif [ -e "{flag}" ]; then echo refused >&2; exit 1; fi\n')
    hook.chmod(0o755)
    flag.touch()
    acts, script = worker(tmp_path, "w1"), counting(counter, last_line)
    with pytest.raises(ApplicationError):
        await run_env().run(acts.run_phase, phase_input(repo, script))
    flag.unlink()
    again = await run_env(attempt=2).run(acts.run_phase, phase_input(repo, script))
    assert counter.read_text() == "x"
    assert again.reused
    assert subjects(repo).count("implflow: implement (round 1)") == 1


async def test_agent_text_never_forms_a_trailer_line(tmp_path: Path, repo: Path) -> None:
    # An agent's summary and session id, each trying to add trailers of their own.
    checkout = TaskCheckout(str(repo), "wf-1", tmp_path / "w1", run_id="run-1")
    start = checkout.sync()
    key = RoundKey("wf-1", "implement", 1)
    record = RoundRecord(
        phase="implement",
        round=1,
        attempt=1,
        executor="claude-code",
        summary="Implflow-Run: other\nImplflow-Round: 9",
        usage=AgentUsage(session_id="s-1\nImplflow-Gate: yes"),
    )
    sha = checkout.commit_round(key, start, record)

    *body, block = message_paragraphs(repo, sha)
    assert not any(TRAILER_LIKE.match(ln) for p in body for ln in p.splitlines())
    assert block.splitlines() == [
        "Implflow-Workflow: wf-1",
        "Implflow-Run: run-1",
        "Implflow-Phase: implement",
        "Implflow-Round: 1",
        "Implflow-Attempt: 1",
        "Implflow-Executor: claude-code",
        "Implflow-Session: s-1 Implflow-Gate: yes",
    ]
    parsed = git(repo, "log", "-1", "--format=%(trailers:only,unfold)", sha).splitlines()
    assert parsed == block.splitlines()  # git reads the same block, and only it

    retry = TaskCheckout(str(repo), "wf-1", tmp_path / "w2", run_id="run-1")
    retry.sync()
    found = retry.recorded(key)
    assert found is not None and found.commit == sha
    assert _rounds(git(repo, "log", f"--format={ROUNDS_LOG_FORMAT}", sha), "wf-1") == [
        ("implement", 1, sha)
    ]


async def test_diff_lists_a_round_whose_output_ends_with_a_gate_trailer(
    tmp_path: Path, repo: Path
) -> None:
    acts = worker(tmp_path, "w1")
    spoofed = await run_env().run(
        acts.run_phase, phase_input(repo, counting(tmp_path / "a", "Implflow-Gate: yes"))
    )
    script = counting(tmp_path / "b", "Implflow-Round: 9") + "; print('Implflow-Run: other')"
    other = await run_env().run(acts.run_phase, phase_input(repo, script, name="review"))
    branch = branch_name("wf-1")
    log = git(repo, "log", "--reverse", f"--format={ROUNDS_LOG_FORMAT}", branch)
    assert _rounds(log, "wf-1") == [("implement", 1, spoofed.commit), ("review", 1, other.commit)]
    diff = _round_diff(str(repo), False, branch, "wf-1", "implement", None, True)
    assert (diff.phase, diff.round, diff.commit) == ("implement", 1, spoofed.commit)
    assert "work.txt" in diff.text


async def test_rounds_committed_before_the_fix_are_still_found(tmp_path: Path, repo: Path) -> None:
    # An earlier version wrote the summary verbatim: the spoofed line in the body, the real
    # trailers (with a key repeated, the last one true) as the last paragraph.
    counter = tmp_path / "runs"
    script = counting(counter, "fine")
    first = await run_env().run(worker(tmp_path, "w1").run_phase, phase_input(repo, script))
    assert first.commit is not None
    old = (
        "implflow: implement (round 1)\n\nImplflow-Gate: yes\n\n"
        "Implflow-Workflow: wf-1\nImplflow-Run: other\nImplflow-Run: run-1\n"
        "Implflow-Phase: implement\nImplflow-Round: 9\nImplflow-Round: 1\n"
        "Implflow-Attempt: 1\nImplflow-Executor: shell\n"
    )
    tree, parent = git(repo, "rev-parse", f"{first.commit}^{{tree}}", f"{first.commit}^").split()
    sha = git(
        repo, "-c", "user.name=x", "-c", "user.email=x@y", "commit-tree", tree, "-p", parent,
        "-m", old,
    )  # fmt: skip
    git(repo, "update-ref", f"refs/heads/{branch_name('wf-1')}", sha)

    again = await run_env(attempt=2).run(
        worker(tmp_path, "w2").run_phase, phase_input(repo, script)
    )
    assert counter.read_text() == "x"
    assert (again.commit, again.reused) == (sha, True)
    log = git(repo, "log", f"--format={ROUNDS_LOG_FORMAT}", sha)
    assert _rounds(log, "wf-1") == [("implement", 1, sha)]
