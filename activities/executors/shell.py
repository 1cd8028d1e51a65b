"""The ``shell`` executor: run a configured argv per phase in the repository.

The phase context is written to a JSON file whose path is in
``IMPLFLOW_CONTEXT_FILE``; the command reads it (task, phase, round, feedback).
No shell is involved: the argv list is executed as is, so task text can never
be interpreted as shell syntax. A phase with no command configured succeeds
with outcome ``nothing-to-do``.
"""

from __future__ import annotations

import shutil

from temporalio.exceptions import ApplicationError

from activities.executors.base import ExecutionContext, ExecutionOutcome, WithoutSettings
from activities.process import heartbeat_every_s, run_process, scrubbed_env
from implflow.errors import EXECUTOR_UNAVAILABLE, PHASE_COMMAND_FAILED


class ShellExecutor(WithoutSettings):
    """Per-phase argv commands; exit code 0 means the phase's work is done."""

    name = "shell"

    def check_available(self) -> None:
        """Always available: it needs nothing but the commands it is given."""

    async def execute(self, ctx: ExecutionContext) -> ExecutionOutcome:
        pin = ctx.phase_input
        if not pin.command:
            return ExecutionOutcome(
                outcome="nothing-to-do",
                summary=f"no shell command configured for phase {pin.phase.name!r}",
            )
        program = pin.command[0]
        # A relative path ("./scripts/x") is relative to the repository, like the run itself.
        candidate = str(ctx.workdir / program) if "/" in program else program
        if shutil.which(candidate) is None:
            raise ApplicationError(
                f"shell executor: program {program!r} for phase {pin.phase.name!r} "
                "is not installed on this worker (not found or not executable)",
                type=EXECUTOR_UNAVAILABLE,
                non_retryable=True,
            )
        env = scrubbed_env(
            ctx.env_allowlist,
            {
                "IMPLFLOW_CONTEXT_FILE": str(ctx.context_file),
                "IMPLFLOW_WORKFLOW_ID": pin.workflow_id,
                "IMPLFLOW_PHASE": pin.phase.name,
                "IMPLFLOW_ROUND": str(pin.round),
                "IMPLFLOW_ATTEMPT": str(ctx.attempt),
                **ctx.task_env,
            },
        )
        log_path = ctx.log_dir / f"{pin.phase.name}-r{pin.round}-a{ctx.attempt}.log"
        result = await run_process(
            pin.command,
            cwd=ctx.workdir,
            env=env,
            log_path=log_path,
            timeout_s=pin.phase.timeout_s,
            heartbeat=ctx.heartbeat,
            heartbeat_every_s=heartbeat_every_s(pin.phase.heartbeat_s),
        )
        if result.returncode != 0:
            raise ApplicationError(
                f"phase {pin.phase.name!r}: {program} exited {result.returncode}; "
                f"log {log_path}; last output: {result.tail[-300:]}",
                type=PHASE_COMMAND_FAILED,
            )
        last_line = result.tail.splitlines()[-1] if result.tail else ""
        return ExecutionOutcome(
            outcome="done",
            summary=(last_line or f"{program} exited 0")[:500],
            artifacts=[str(log_path)],
        )
