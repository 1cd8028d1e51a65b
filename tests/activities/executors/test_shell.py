"""The shell executor through the real ``run_phase`` activity (ActivityEnvironment)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.phases import ImplActivities
from implflow.models import PhaseInput, PhaseSpec
from implflow.settings import Settings
from tests.helpers import branch_file, branch_log, marked

DUMP_CONTEXT = (
    "import json, os, sys; ctx = json.load(open(os.environ['IMPLFLOW_CONTEXT_FILE'])); "
    "json.dump({'ctx': ctx, 'argv': sys.argv[1:], 'env': dict(os.environ)}, "
    "open('out.json', 'w')); print('dumped')"
)


def phase_input(repo: Path, command: list[str] | None, **spec: object) -> PhaseInput:
    return PhaseInput(
        workflow_id="wf-1",
        title="t",
        description="d; rm -rf / $(whoami)",
        repo=str(repo),
        executor="shell",
        phase=PhaseSpec(name="implement", **spec),  # type: ignore[arg-type]
        round=2,
        feedback=["fix it"],
        command=command,
    )


@pytest.fixture
def acts(tmp_path: Path) -> ImplActivities:
    return ImplActivities(Settings(data_dir=tmp_path / "data"))


async def test_command_gets_context_file_and_argv_verbatim(
    acts: ImplActivities, tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANARY_SECRET", "s3cr3t-value")
    tricky = "$(touch pwned); `id` && echo hi"
    result = await ActivityEnvironment().run(
        acts.run_phase, phase_input(repo, [sys.executable, "-c", DUMP_CONTEXT, tricky])
    )
    assert result.outcome == "done" and result.summary == "dumped" and result.round == 2
    checkout = acts.settings.folder("workspaces") / "wf-1" / "checkout"
    dumped = json.loads((checkout / "out.json").read_text())
    assert result.commit and result.branch == "implflow/wf-1"
    assert branch_log(repo, "wf-1") == ["implflow: implement (round 2)"]
    assert json.loads(branch_file(repo, "wf-1", "out.json")) == dumped  # committed and pushed
    assert dumped["argv"] == [tricky]  # passed as one argument, never through a shell
    assert not (tmp_path / "pwned").exists()
    assert dumped["ctx"]["feedback"] == ["fix it"] and dumped["ctx"]["round"] == 2
    assert dumped["env"]["IMPLFLOW_PHASE"] == "implement"
    assert "CANARY_SECRET" not in dumped["env"]  # scrubbed environment


async def test_no_command_is_nothing_to_do(
    acts: ImplActivities, tmp_path: Path, repo: Path
) -> None:
    result = await ActivityEnvironment().run(acts.run_phase, phase_input(repo, None))
    assert result.outcome == "nothing-to-do"


async def test_nonzero_exit_is_a_retryable_failure_with_the_output_tail(
    acts: ImplActivities, tmp_path: Path, repo: Path
) -> None:
    cmd = [sys.executable, "-c", "import sys; print('tests failed: 3'); sys.exit(2)"]
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(acts.run_phase, phase_input(repo, cmd))
    assert info.value.type == "PhaseCommandFailed" and not info.value.non_retryable
    assert "exited 2" in info.value.message and "tests failed: 3" in info.value.message


async def test_missing_program_is_not_retried(
    acts: ImplActivities, tmp_path: Path, repo: Path
) -> None:
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(acts.run_phase, phase_input(repo, ["nope-xyz"]))
    assert info.value.type == "ExecutorUnavailable" and info.value.non_retryable


async def test_timeout_kills_the_process_group(
    acts: ImplActivities, tmp_path: Path, repo: Path
) -> None:
    marker = f"child-{tmp_path.name}"
    script = (  # a child that would outlive its parent unless the whole group is killed
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', {marker!r}]); "
        "time.sleep(60)"
    )
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(
            acts.run_phase, phase_input(repo, [sys.executable, "-c", script], timeout_s=1.5)
        )
    assert info.value.type == "PhaseTimeout"
    await asyncio.sleep(0.2)
    assert marked(marker) == []


async def test_cancellation_kills_the_process_group(
    acts: ImplActivities, tmp_path: Path, repo: Path
) -> None:
    marker = f"phase-{tmp_path.name}"
    script = "import time; time.sleep(60)"
    env = ActivityEnvironment()
    task = asyncio.create_task(
        env.run(acts.run_phase, phase_input(repo, [sys.executable, "-c", script, marker]))
    )
    for _ in range(100):
        if marked(marker):
            break
        await asyncio.sleep(0.05)
    assert marked(marker), "the phase command never started"
    env.cancel()
    with pytest.raises(BaseException):  # noqa: B017,PT011 - cancellation surfaces as CancelledError
        await task
    await asyncio.sleep(0.2)
    assert marked(marker) == []


async def test_heartbeats_while_running(acts: ImplActivities, tmp_path: Path, repo: Path) -> None:
    beats: list[object] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    cmd = [sys.executable, "-c", "import time; time.sleep(1.5)"]
    await env.run(acts.run_phase, phase_input(repo, cmd, heartbeat_s=2.0))
    assert len(beats) >= 2  # one at start, at least one while the command ran


async def test_a_retried_round_already_committed_is_not_run_again(
    acts: ImplActivities, tmp_path: Path, repo: Path
) -> None:
    # Each run appends to a file in the checkout (the sandbox lets it write nowhere else).
    script = "open('invocations', 'a').write('x'); open('work.txt', 'w').write('done')"
    inp = phase_input(repo, [sys.executable, "-c", script])
    first = await ActivityEnvironment().run(acts.run_phase, inp)
    # A new worker (fresh workspace root) retries the same round: the branch remembers it.
    other = ImplActivities(Settings(data_dir=tmp_path / "other-worker"))
    again = await ActivityEnvironment().run(other.run_phase, inp)
    checkout = other.settings.folder("workspaces") / "wf-1" / "checkout"
    assert (checkout / "invocations").read_text() == "x"  # the executor ran once
    assert (again.reused, again.commit, again.summary) == (True, first.commit, first.summary)
    assert branch_log(repo, "wf-1") == ["implflow: implement (round 2)"]


OLD_RECORD = {  # what run_phase stored before the record was a model: same keys, same values
    "phase": "implement",
    "round": 2,
    "attempt": 3,
    "executor": "claude-code",
    "outcome": "done",
    "summary": "recorded by an earlier implflow",
    "duration_s": 12.5,
    "artifacts": [".implflow/logs/implement-r2-a3.claude.jsonl"],
    "usage": {
        "session_id": "sess-old",
        "cost_usd": 0.25,
        "input_tokens": 100,
        "output_tokens": 20,
        "turns": 4,
    },
}


def _push_old_round(repo: Path, work: Path) -> str:
    """Commit ``OLD_RECORD`` on the task branch the way an earlier worker did; its sha."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=work, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    subprocess.run(["git", "clone", "-q", str(repo), str(work)], check=True)
    git("checkout", "-q", "-b", "implflow/wf-1")
    record = work / ".implflow" / "runs" / "implement-r2.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps(OLD_RECORD, indent=2, sort_keys=True) + "\n")
    git("add", "--force", ".implflow")
    trailers = "".join(
        f"Implflow-{k}: {v}\n"
        for k, v in (("Workflow", "wf-1"), ("Phase", "implement"), ("Round", "2"), ("Attempt", "3"))
    )
    git(
        "-c",
        "user.name=old",
        "-c",
        "user.email=old@localhost",
        "commit",
        "-q",
        "-m",
        f"implflow: implement (round 2)\n\nold\n\n{trailers}",
    )
    git("push", "-q", "origin", "implflow/wf-1")
    return git("rev-parse", "HEAD")


async def test_a_round_recorded_by_an_earlier_version_is_returned_as_recorded(
    acts: ImplActivities, tmp_path: Path, repo: Path
) -> None:
    sha = _push_old_round(repo, tmp_path / "old-worker")
    never_run = [sys.executable, "-c", "raise SystemExit(9)"]  # would fail the round if run
    result = await ActivityEnvironment().run(acts.run_phase, phase_input(repo, never_run))
    assert (result.reused, result.commit, result.outcome) == (True, sha, "done")
    assert result.summary == "recorded by an earlier implflow"
    assert (result.duration_s, result.artifacts) == (12.5, OLD_RECORD["artifacts"])
    assert (result.cost_usd, result.tokens, result.turns) == (0.25, 120, 4)
    assert result.session_id == "sess-old"


async def test_a_new_round_record_keeps_the_keys_earlier_versions_read(
    acts: ImplActivities, repo: Path
) -> None:
    inp = phase_input(repo, [sys.executable, "-c", "print('did it')"])
    result = await ActivityEnvironment().run(acts.run_phase, inp)
    record = json.loads(branch_file(repo, "wf-1", ".implflow/runs/implement-r2.json"))
    assert set(record) == set(OLD_RECORD)  # the commit is never inside its own record
    assert (record["summary"], record["executor"], record["usage"]) == ("did it", "shell", None)
    assert result.commit and not result.reused


async def test_not_a_git_repository_is_refused(acts: ImplActivities, tmp_path: Path) -> None:
    from implflow.models import PrepareInput

    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(
            acts.prepare_task, PrepareInput(workflow_id="w", repo=str(tmp_path), executor="shell")
        )
    assert info.value.type == "RepoUnavailable" and info.value.non_retryable
    assert "git init" in info.value.message


async def test_record_then_replay_reproduces_the_round(tmp_path: Path, repo: Path) -> None:
    from activities.executors.replay import ReplayExecutor  # noqa: F401 - registered by name

    recorder = ImplActivities(Settings(data_dir=tmp_path / "rec"))
    script = "open('feature.py', 'w').write('def f():\\n    return 42\\n'); print('wrote f')"
    inp = phase_input(repo, [sys.executable, "-c", script]).model_copy(update={"record": True})
    await ActivityEnvironment().run(recorder.run_phase, inp)
    cassette = recorder.settings.folder("cassettes") / "wf-1"
    assert "feature.py" in (cassette / "implement-r2.patch").read_text()

    # Replay onto a fresh task (another workflow id) without running any command.
    replay_inp = inp.model_copy(
        update={
            "workflow_id": "wf-2",
            "executor": "replay",
            "cassette": str(cassette),
            "command": None,
            "record": False,
        }
    )
    player = ImplActivities(Settings(data_dir=tmp_path / "play"))
    result = await ActivityEnvironment().run(player.run_phase, replay_inp)
    assert result.summary == "wrote f"
    assert branch_file(repo, "wf-2", "feature.py") == "def f():\n    return 42\n"
    missing = replay_inp.model_copy(
        update={"phase": replay_inp.phase.model_copy(update={"name": "document"})}
    )
    assert (await ActivityEnvironment().run(player.run_phase, missing)).outcome == "nothing-to-do"
