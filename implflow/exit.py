"""Leaving a process that holds a temporalio client."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import traceback
from collections.abc import Coroutine
from typing import Any, NoReturn

__all__ = ["hard_exit", "run"]


def hard_exit(code: int) -> NoReturn:
    """Flush and leave without interpreter finalization.

    temporalio's Rust client threads can abort CPython's finalization
    ("PyGILState_Release ... finalizing", sdk-python issue 300) or crash it with
    SIGSEGV, turning a clean exit into 134 or 139. Everything worth keeping is flushed first.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(main: Coroutine[Any, Any, object]) -> NoReturn:
    """``asyncio.run(main)`` for a script that talks to Temporal, then leave with ``hard_exit``.

    Exit code 0 when ``main`` returned, 1 (with the traceback on stderr) when it raised,
    130 on Ctrl-C, or the code of a ``SystemExit`` it raised. ``atexit`` handlers do not run:
    a script that needs them calls ``asyncio.run`` itself and takes the crash risk above.
    """
    code: int
    try:
        asyncio.run(main)
        code = 0
    except KeyboardInterrupt:
        code = 130
    except SystemExit as stop:  # sys.exit(n) or sys.exit("message"), as Python treats them
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:  # the script's own failure: shown as Python would show it
        traceback.print_exc()
        code = 1
    hard_exit(code)
