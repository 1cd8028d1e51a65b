"""Run a check's ``argv``: a tool in the checkout, confined, bounded, logged.

The tool runs as an argv list (never a shell string) in the work directory with a
scrubbed environment, its own process group and the check's timeout. A tool that is not
installed, cannot be run or runs too long is a failed check that says what to do.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
from pathlib import Path

from activities.gates.context import GateContext, ToolRun
from activities.gates.results import failed
from activities.gates.schema import CheckConfig
from activities.process import run_process, scrubbed_env
from implflow.models import GateCheck
from implflow.settings import DEFAULT_ENV_ALLOWLIST

__all__ = ["missing_tool", "run_tool"]


async def run_tool(
    check: CheckConfig, argv_template: list[str], ctx: GateContext, report: Path | None
) -> ToolRun | GateCheck:
    """Run the check's ``argv``: how it ended, or the failed check when it could not run."""
    argv = [ctx.expand(arg, report) for arg in argv_template]
    missing = missing_tool(check, argv, ctx.workdir)
    if missing is not None:
        return failed(check, missing, failure_class="environment")
    if not Path(argv[0]).is_absolute() and "/" in argv[0]:
        argv[0] = str(ctx.workdir / argv[0])  # node_modules/.bin/eslint and the like
    env = scrubbed_env(
        DEFAULT_ENV_ALLOWLIST,
        {
            # Bytecode goes to the scratch dir, not into the checkout that gets committed.
            "PYTHONPYCACHEPREFIX": str(ctx.tmp / "pycache"),
            **ctx.env_vars,  # the task environment first on PATH
            **{key: ctx.expand(value, report) for key, value in check.env.items()},
        },
    )
    log_path = ctx.report_dir / f"{check.name}.log"
    started = time.monotonic()
    try:
        result = await run_process(
            argv,
            cwd=ctx.workdir,
            env=env,
            log_path=log_path,
            timeout_s=check.timeout_s,
            heartbeat=ctx.check_beat(check),
            heartbeat_every_s=5.0,
        )
    except FileNotFoundError as err:
        hint = f" (install: {check.install})" if check.install else ""
        return failed(
            check,
            f"missing tool: {argv[0]!r} cannot be run: {err.strerror}{hint}",
            failure_class="environment",
        )
    except PermissionError as err:
        return failed(
            check, f"{argv[0]!r} cannot be run: {err.strerror}", failure_class="environment"
        )
    except TimeoutError:
        return failed(
            check,
            f"timed out after {check.timeout_s:g}s (log: {ctx.rel(log_path)})",
            figures={"timeout_s": check.timeout_s},
            log=ctx.rel(log_path),
        )
    return ToolRun(
        returncode=result.returncode,
        tail=result.tail,
        log=ctx.rel(log_path),
        duration_s=round(time.monotonic() - started, 2),
    )


def missing_tool(check: CheckConfig, argv: list[str], workdir: Path) -> str | None:
    """What to install when the check's program or a required Python module is absent."""
    hint = f"; install: {check.install}" if check.install else ""
    program = argv[0]
    if "/" in program:
        path = Path(program) if Path(program).is_absolute() else workdir / program
        if not path.is_file():
            return f"missing tool: {program} not found{hint}"
    elif shutil.which(program) is None:
        return f"missing tool: {program!r} not found on PATH{hint}"
    modules = list(check.requires)
    if program == sys.executable and len(argv) > 2 and argv[1] == "-m":
        modules.insert(0, argv[2])
    for module in modules:
        if importlib.util.find_spec(module) is None:
            return (
                f"missing tool: Python module {module!r} is not installed in the worker's "
                f"environment ({sys.executable}){hint}"
            )
    return None
