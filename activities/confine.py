"""Keeping an agent's file operations inside its workspace.

A coding agent names files with strings it made up (or that task text talked it
into). Every such path goes through ``resolve_inside``: absolute paths, ``..``
that climbs out, NUL bytes and symlinks (at any component) that lead outside
are refused with a one-line ``PathEscapeError``. The helpers below then touch
only the resolved path and open the last component with ``O_NOFOLLOW``, so a
symlink planted after the check is refused rather than followed.

The repository's ``.git`` directory is refused too: a file written to
``.git/hooks`` would run on the worker when implflow commits the phase.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from implflow.errors import ImplflowError

PROTECTED_DIRS = frozenset({".git"})
"""Top-level workspace entries the file tools never read or write."""


class PathEscapeError(ImplflowError, ValueError):
    """A tool-supplied path that would leave the workspace. ``str()`` is one line.

    Also a ``ValueError``: it is a bad argument, and callers written before this base
    existed catch it as one.
    """


@dataclass(frozen=True)
class ReadResult:
    text: str
    size: int
    truncated: bool


@dataclass(frozen=True)
class Listing:
    entries: list[str]
    """Names relative to the listed directory; directories end in ``/``, symlinks in ``@``."""
    total: int
    truncated: bool


def resolve_inside(workspace: Path, user_path: str) -> Path:
    """The real path of ``user_path`` inside ``workspace``, or ``PathEscapeError``.

    The path need not exist yet (a file about to be written); every component
    that does exist is resolved through its symlinks and must stay inside.
    """
    shown = repr(user_path[:200])
    if "\0" in user_path:
        raise PathEscapeError(f"path {shown} contains a NUL byte")
    if not user_path.strip():
        raise PathEscapeError("path is empty; use '.' for the workspace itself")
    pure = PurePosixPath(user_path)
    if pure.is_absolute() or user_path.startswith("\\"):
        raise PathEscapeError(f"path {shown} is absolute; give a path relative to the workspace")
    normal = os.path.normpath(user_path)
    if normal == ".." or normal.startswith("../"):
        raise PathEscapeError(f"path {shown} uses '..' to leave the workspace")
    root = workspace.resolve(strict=True)
    try:
        real = (root / user_path).resolve(strict=False)
    except (OSError, RuntimeError) as err:  # a symlink loop, a too-long name
        raise PathEscapeError(f"path {shown} cannot be resolved: {err}") from None
    if real != root and not real.is_relative_to(root):
        raise PathEscapeError(f"path {shown} leads outside the workspace through a symlink")
    if real != root and real.relative_to(root).parts[0] in PROTECTED_DIRS:
        raise PathEscapeError(
            f"path {shown} is inside {real.relative_to(root).parts[0]}/, "
            "which the agent may not touch"
        )
    return real


def inside(root: Path, path: Path) -> Path | None:
    """``path`` resolved, if it stays inside ``root`` (already resolved); else ``None``.

    For implflow's own reads of repository files (specialists, guidelines, artifacts),
    where a file behind a symlink that leads outside is skipped rather than refused.
    """
    resolved = path.resolve()
    return resolved if resolved.is_relative_to(root) else None


def relative_name(workspace: Path, path: Path) -> str:
    """``path`` (from ``resolve_inside``) as the agent should see it: relative, POSIX."""
    rel = path.relative_to(workspace.resolve())
    return rel.as_posix() or "."


def read_text(workspace: Path, user_path: str, *, max_bytes: int) -> ReadResult:
    """Read a text file inside the workspace, at most ``max_bytes`` of it."""
    path = resolve_inside(workspace, user_path)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        data = fh.read(max_bytes + 1)
    truncated = len(data) > max_bytes
    return ReadResult(
        text=data[:max_bytes].decode("utf-8", "replace"), size=size, truncated=truncated
    )


def write_text(workspace: Path, user_path: str, text: str) -> Path:
    """Write ``text`` to a file inside the workspace, creating parent directories.

    Parents are created one at a time and none may be a symlink; the file
    itself is opened with ``O_NOFOLLOW``. Returns the resolved path.
    """
    path = resolve_inside(workspace, user_path)
    root = workspace.resolve()
    if path == root:
        raise PathEscapeError(f"path {user_path[:200]!r} is the workspace itself, not a file")
    current = root
    for part in path.relative_to(root).parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise PathEscapeError(f"path {user_path[:200]!r}: {part!r} became a symlink")
        if not current.exists():
            current.mkdir()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def list_dir(workspace: Path, user_path: str, *, max_entries: int) -> Listing:
    """The sorted entries of a directory inside the workspace, at most ``max_entries``."""
    path = resolve_inside(workspace, user_path)
    root = workspace.resolve()
    names: list[str] = []
    with os.scandir(path) as it:
        for entry in it:
            if path == root and entry.name in PROTECTED_DIRS:
                continue
            if entry.is_symlink():
                names.append(entry.name + "@")
            elif entry.is_dir():
                names.append(entry.name + "/")
            else:
                names.append(entry.name)
    names.sort()
    return Listing(
        entries=names[:max_entries], total=len(names), truncated=len(names) > max_entries
    )
