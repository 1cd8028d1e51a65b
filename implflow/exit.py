"""Leaving a process that holds a temporalio client."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


def hard_exit(code: int) -> NoReturn:
    """Flush and leave without interpreter finalization.

    temporalio's Rust client threads can abort CPython's finalization
    ("PyGILState_Release ... finalizing", sdk-python issue 300), turning a clean
    exit into SIGABRT. Everything worth keeping is flushed first.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
