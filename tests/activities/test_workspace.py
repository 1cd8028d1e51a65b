"""The task branch through the real activities: names, reused ids, hooks, pushes, git cost.

Every test works on a real origin (a local repository, as ``repo`` is for users) with the
real ``prepare_task`` / ``run_phase`` in an ``ActivityEnvironment``; shell commands stand in
for agents, including hostile ones that plant hooks and config in their checkout.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import activities.workspace as workspace
from activities.phases import ImplActivities
from activities.workspace import DEFAULT_GITIGNORE
from implflow.layout import branch_key, branch_name
from implflow.models import PrepareInput
from implflow.settings import Settings
from tests.helpers import git_out as git
from tests.helpers import shell_phase as phase_input


def run_env(run_id: str = "run-1", attempt: int = 1) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_run_id=run_id, attempt=attempt)
    return env


def commit_files(repo: Path, ref: str) -> set[str]:
    return set(git(repo, "ls-tree", "-r", "--name-only", ref).splitlines())


@pytest.fixture
def acts(tmp_path: Path) -> ImplActivities:
    """A worker whose commands may write outside their checkout (to count their runs)."""
    return ImplActivities(Settings(data_dir=tmp_path / "worker", sandbox="off"))


@pytest.fixture
def sandboxed(tmp_path: Path) -> ImplActivities:
    """A worker as deployed (its commands in the sandbox, where the sandbox works here)."""
    return ImplActivities(Settings(data_dir=tmp_path / "sandboxed"))


# --- one branch per workflow id -----------------------------------------------------------


TRICKY_IDS = [
    "wf-1",
    "col/x",
    "col_x",
    "col x",
    "Col_X",
    "a" * 200 + "1",
    "a" * 200 + "2",
    "a..b",
    "a.lock",
    "trailing.",
    ".hidden",
    "-dash",
    "plan",
    "job-1234567890",
    "job-" + "0123456789abcdef"[:10],
    "ünïcødé",
    "x" * 100,
    "x" * 101,
]


def test_branch_names_are_injective_valid_and_readable(tmp_path: Path) -> None:
    keys = [branch_key(wid) for wid in TRICKY_IDS]
    assert len(set(keys)) == len(keys), keys  # no two ids share a branch
    for wid in TRICKY_IDS:
        name = branch_name(wid)
        checked = subprocess.run(["git", "check-ref-format", f"refs/heads/{name}"], check=False)
        assert checked.returncode == 0, name
        assert "/" not in branch_key(wid) and len(branch_key(wid)) <= 100
    assert branch_name("wf-1") == "implflow/wf-1"  # safe, short ids stay as they are
    assert branch_key("col/x").startswith("col_x-") and branch_key("col_x") == "col_x"
    assert branch_key("a" * 200 + "1") != branch_key("a" * 200 + "2")
    # A kept id never looks like a hashed one: an id that does is hashed too.
    hashed = branch_key("col/x")
    assert branch_key(hashed) != hashed


async def test_ids_alike_after_sanitising_get_separate_branches_and_checkouts(
    acts: ImplActivities, repo: Path
) -> None:
    script = "import os; open('who.txt', 'w').write(os.environ['IMPLFLOW_WORKFLOW_ID'])"
    results = {}
    for wid in ("col/x", "col_x"):
        inp = phase_input(repo, script, workflow_id=wid)
        results[wid] = await run_env().run(acts.run_phase, inp)
    assert results["col/x"].branch != results["col_x"].branch
    for wid, result in results.items():
        assert git(repo, "show", f"{result.branch}:who.txt") == wid
        assert git(repo, "rev-parse", result.branch or "") == result.commit


async def test_a_reused_id_starts_a_fresh_branch_and_keeps_the_old_one(
    acts: ImplActivities, repo: Path, tmp_path: Path
) -> None:
    counter = tmp_path / "runs"
    script = f"open({str(counter)!r}, 'a').write('x'); open('work.txt', 'w').write('new')"
    prepare = PrepareInput(workflow_id="wf-1", repo=str(repo), executor="shell")
    first = await run_env("run-aaaa-0001").run(acts.prepare_task, prepare)
    assert (first.branch, first.earlier_run_branch) == ("implflow/wf-1", None)
    old = await run_env("run-aaaa-0001").run(acts.run_phase, phase_input(repo, script))

    # A new run of the same workflow id (the id was reused): same input, new work.
    second = await run_env("run-bbbb-0002").run(acts.prepare_task, prepare)
    assert second.earlier_run_branch == "implflow/wf-1@runaaaa0001"
    assert git(repo, "rev-parse", "implflow/wf-1@runaaaa0001") == old.commit  # kept
    assert git(repo, "rev-parse", "--verify", "-q", "implflow/wf-1", check=False) == ""
    new = await run_env("run-bbbb-0002").run(acts.run_phase, phase_input(repo, script))
    assert not new.reused and new.commit != old.commit
    assert counter.read_text() == "xx"  # the executor ran again: old results are not new work
    log = git(repo, "log", "--format=%B", "main..implflow/wf-1")
    assert log.count("Implflow-Run: run-bbbb-0002") == 1 and "run-aaaa-0001" not in log

    # Retries of the same run still find their records.
    again = await run_env("run-bbbb-0002", attempt=2).run(acts.run_phase, phase_input(repo, script))
    assert (again.reused, again.commit) == (True, new.commit)
    assert counter.read_text() == "xx"


async def test_a_branch_prepared_by_a_plan_is_adopted(acts: ImplActivities, repo: Path) -> None:
    # A plan stacks a task on its dependency's result: the branch exists, with another id's work.
    git(repo, "branch", "implflow/plan-1.B", "main")
    git(repo, "checkout", "-q", "implflow/plan-1.B")
    (repo / "dep.txt").write_text("from A\n")
    git(repo, "add", "dep.txt")
    message = (
        "implflow: implement (round 1)\n\nA\n\nImplflow-Workflow: plan-1.A\nImplflow-Run: r-a\n"
    )
    git(repo, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "-m", message)
    stacked = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    prepare = PrepareInput(workflow_id="plan-1.B", repo=str(repo), executor="shell")
    claim = await run_env("r-b").run(acts.prepare_task, prepare)
    assert claim.earlier_run_branch is None
    # The task's base is where the plan stacked it, not the origin's HEAD: its gates pin their
    # config there and compare changed files against it.
    assert claim.base_commit == stacked != git(repo, "rev-parse", "main")
    result = await run_env("r-b").run(
        acts.run_phase, phase_input(repo, "print('ok')", workflow_id="plan-1.B")
    )
    assert git(repo, "rev-parse", "implflow/plan-1.B") == result.commit
    assert git(repo, "rev-parse", "implflow/plan-1.B^") == stacked  # built on the plan's start


# --- implflow's git runs no code from the checkout ------------------------------------------


PLANT = """
import os, pathlib, stat, subprocess, sys
marker = sys.argv[1]
hook = "#!/bin/sh\\necho ran >> " + marker + "\\n"
for where in (".git/hooks", "evil-hooks"):
    os.makedirs(where, exist_ok=True)
    for name in ("pre-commit", "commit-msg", "post-commit", "pre-push", "post-checkout",
                 "reference-transaction", "post-index-change", "pre-auto-gc"):
        path = pathlib.Path(where, name)
        path.write_text(hook)
        path.chmod(0o755)
def config(*args):
    subprocess.run(["git", "config", *args], check=True)
config("core.hooksPath", os.path.abspath("evil-hooks"))
config("core.fsmonitor", "sh -c 'echo ran >> " + marker + "'")
config("filter.evil.clean", "sh -c 'echo ran >> " + marker + "; cat'")
config("diff.evil.textconv", "sh -c 'echo ran >> " + marker + "; cat'")
config("credential.helper", "!sh -c 'echo ran >> " + marker + "'")
pathlib.Path(".gitattributes").write_text("* filter=evil diff=evil\\n")
pathlib.Path("feature.txt").write_text("work\\n")
"""


async def test_hooks_and_config_planted_in_the_checkout_never_run(
    sandboxed: ImplActivities, repo: Path, tmp_path: Path
) -> None:
    acts = sandboxed
    marker = tmp_path / "hook-ran"
    inp = phase_input(repo, PLANT).model_copy(
        update={"command": [sys.executable, "-c", PLANT, str(marker)]}
    )
    result = await run_env().run(acts.run_phase, inp)
    assert result.commit and git(repo, "show", f"{result.commit}:feature.txt") == "work"
    planted = git(repo, "ls-tree", "-r", "--name-only", result.commit)
    assert "evil-hooks/pre-push" in planted and ".gitattributes" in planted  # it did plant
    # The next round syncs, checkpoints nothing, commits and pushes with the planted files still
    # there (they were committed): nothing of it runs either.
    second = inp.model_copy(update={"round": 2, "command": [sys.executable, "-c", "print(1)"]})
    await run_env().run(acts.run_phase, second)
    assert not marker.exists(), marker.read_text()
    checkout = acts.settings.folder("workspaces") / "wf-1" / "checkout"
    config = (checkout / ".git" / "config").read_text()
    assert "evil" not in config and "fsmonitor" not in config  # put back to implflow's own


async def test_a_hooks_path_set_between_rounds_is_ignored(
    acts: ImplActivities, repo: Path, tmp_path: Path
) -> None:
    await run_env().run(acts.run_phase, phase_input(repo, "print('first')"))
    checkout = acts.settings.folder("workspaces") / "wf-1" / "checkout"
    marker = tmp_path / "pre-push-ran"
    hook = checkout / ".git" / "hooks" / "pre-push"
    hook.write_text(f"#!/bin/sh\necho ran >> {marker}\n")
    hook.chmod(0o755)
    git(checkout, "config", "core.hooksPath", str(hook.parent))
    result = await run_env().run(
        acts.run_phase, phase_input(repo, "print('second')", name="validate")
    )
    assert result.commit == git(repo, "rev-parse", "implflow/wf-1")
    assert not marker.exists()


# --- a finished round is never run again because its push failed ----------------------------


def rejecting_origin(repo: Path, flag: Path) -> None:
    hook = repo / ".git" / "hooks" / "pre-receive"
    hook.write_text(
        f'#!/bin/sh\nif [ -e "{flag}" ]; then echo "push refused for now" >&2; exit 1; fi\n'
    )
    hook.chmod(0o755)


@pytest.fixture
def fast_push_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workspace, "PUSH_BACKOFF_S", (0.2, 0.2, 0.2, 0.2))


async def test_a_push_is_retried_on_its_own(
    acts: ImplActivities, repo: Path, tmp_path: Path, fast_push_retries: None
) -> None:
    flag, counter = tmp_path / "refuse", tmp_path / "runs"
    rejecting_origin(repo, flag)
    flag.touch()
    threading.Timer(0.5, flag.unlink).start()  # the origin accepts pushes again soon
    script = f"open({str(counter)!r}, 'a').write('x'); open('work.txt', 'w').write('done')"
    result = await run_env().run(acts.run_phase, phase_input(repo, script))
    assert counter.read_text() == "x"
    assert git(repo, "rev-parse", "implflow/wf-1") == result.commit


async def test_a_retry_after_a_failed_push_only_pushes(
    acts: ImplActivities, repo: Path, tmp_path: Path, fast_push_retries: None
) -> None:
    flag, counter = tmp_path / "refuse", tmp_path / "runs"
    rejecting_origin(repo, flag)
    flag.touch()
    script = f"open({str(counter)!r}, 'a').write('x'); open('work.txt', 'w').write('done')"
    with pytest.raises(ApplicationError) as err:
        await run_env().run(acts.run_phase, phase_input(repo, script))
    assert err.value.type == "GitPushFailed" and not err.value.non_retryable
    assert "push refused for now" in err.value.message
    checkout = acts.settings.folder("workspaces") / "wf-1" / "checkout"
    local = git(checkout, "rev-parse", "implflow/wf-1")  # the round, committed here only
    assert git(repo, "rev-parse", "--verify", "-q", "implflow/wf-1", check=False) == ""

    flag.unlink()
    again = await run_env(attempt=2).run(acts.run_phase, phase_input(repo, script))
    assert counter.read_text() == "x"  # the executor did not run again
    assert (again.commit, again.reused) == (local, True)
    assert git(repo, "rev-parse", "implflow/wf-1") == local
    assert git(repo, "show", "implflow/wf-1:work.txt") == "done"


# --- .gitignore on the task branch ------------------------------------------------------------


BUILD = """
import os, pathlib
for path in ("pkg/__pycache__/mod.cpython-311.pyc", "node_modules/x/index.js", ".venv/bin/python",
             "dist/pkg.whl", ".pytest_cache/v", ".coverage", "top.pyc"):
    p = pathlib.Path(path); p.parent.mkdir(parents=True, exist_ok=True); p.write_text("x")
pathlib.Path("pkg/mod.py").write_text("x = 1\\n")
pathlib.Path("build").mkdir(exist_ok=True)
pathlib.Path("build/keep.txt").write_text("changed\\n")
"""


async def test_a_target_without_gitignore_never_gets_build_artefacts_committed(
    acts: ImplActivities, repo: Path
) -> None:
    (repo / "build").mkdir()
    (repo / "build" / "keep.txt").write_text("tracked\n")  # tracked although "build/" is ignored
    git(repo, "add", "build/keep.txt")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "-m", "build dir")
    result = await run_env().run(acts.run_phase, phase_input(repo, BUILD))
    files = commit_files(repo, result.commit or "")
    assert {"pkg/mod.py", ".gitignore", "build/keep.txt"} <= files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")], files
    assert not [f for f in files if f.split("/")[0] in ("node_modules", ".venv", "dist")]
    assert ".coverage" not in files and ".pytest_cache/v" not in files
    assert git(repo, "show", f"{result.commit}:build/keep.txt") == "changed"  # still tracked
    assert git(repo, "show", f"{result.commit}:.gitignore") + "\n" == DEFAULT_GITIGNORE

    # Once on the branch it is the branch's file: a later round leaves it as the agent has it.
    edit = "open('.gitignore', 'a').write('*.log\\n')"
    later = await run_env().run(acts.run_phase, phase_input(repo, edit, name="validate"))
    assert git(repo, "show", f"{later.commit}:.gitignore").endswith("*.log")


async def test_a_gitignore_of_the_target_is_left_alone(acts: ImplActivities, repo: Path) -> None:
    (repo / ".gitignore").write_text("*.tmp\n")
    git(repo, "add", ".gitignore")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "-m", "ignore")
    result = await run_env().run(acts.run_phase, phase_input(repo, BUILD))
    assert git(repo, "show", f"{result.commit}:.gitignore") == "*.tmp"
    assert "pkg/__pycache__/mod.cpython-311.pyc" in commit_files(repo, result.commit or "")


# --- cheaper git per round --------------------------------------------------------------------


async def test_a_warm_round_fetches_only_its_branch_and_skips_the_reset(
    acts: ImplActivities, repo: Path
) -> None:
    for i in range(5):  # other tasks' branches on the same origin
        git(repo, "branch", f"implflow/other-{i}", "main")
    await run_env().run(acts.run_phase, phase_input(repo, None, name="review"))
    workspace.calls.clear()
    started = time.monotonic()
    await run_env().run(acts.run_phase, phase_input(repo, None, name="design"))
    elapsed = time.monotonic() - started
    calls = dict(workspace.calls)
    assert sum(calls.values()) <= 9, calls
    assert (calls.get("fetch"), calls.get("push")) == (1, 1), calls
    assert not {"checkout", "reset", "clean", "clone"} & set(calls), calls
    checkout = acts.settings.folder("workspaces") / "wf-1" / "checkout"
    refs = git(checkout, "for-each-ref", "--format=%(refname)")
    assert "other-" not in refs  # never fetched
    assert elapsed < 10


async def test_a_round_at_the_tip_the_workflow_knows_fetches_nothing(
    acts: ImplActivities, repo: Path
) -> None:
    review = await run_env().run(acts.run_phase, phase_input(repo, None, name="review"))
    design = phase_input(repo, None, name="design").model_copy(update={"branch_tip": review.commit})
    workspace.calls.clear()
    done = await run_env().run(acts.run_phase, design)
    calls = dict(workspace.calls)
    assert "fetch" not in calls and calls.get("push") == 1, calls
    assert sum(calls.values()) <= 7, calls
    assert git(repo, "rev-parse", f"{done.commit}^") == review.commit
    # A tip the checkout is not at (another worker moved on), or a retry: it fetches.
    for tip, attempt in (("0" * 40, 1), (done.commit, 2)):
        workspace.calls.clear()
        again = phase_input(repo, None, name="validate").model_copy(update={"branch_tip": tip})
        await run_env(attempt=attempt).run(acts.run_phase, again)
        assert workspace.calls.get("fetch") == 1, (tip, attempt, dict(workspace.calls))


def test_git_runs_on_a_pool_sized_to_the_slots(tmp_path: Path) -> None:
    acts = ImplActivities(Settings(data_dir=tmp_path, max_concurrent_activities=16))
    assert acts.threads.pool._max_workers == 18


async def test_round_record_carries_the_run(acts: ImplActivities, repo: Path) -> None:
    result = await run_env("run-xyz").run(acts.run_phase, phase_input(repo, "print('x')"))
    body = git(repo, "log", "-1", "--format=%B", result.commit or "")
    assert "Implflow-Run: run-xyz" in body
    record = json.loads(git(repo, "show", f"{result.commit}:.implflow/runs/implement-r1.json"))
    assert "failed_attempts" not in record  # no failure: the keys earlier versions read
