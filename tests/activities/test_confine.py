"""Paths an agent supplies stay inside its workspace (``activities.confine``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from activities.confine import (
    PathEscapeError,
    list_dir,
    read_text,
    resolve_inside,
    write_text,
)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    (root / ".git").mkdir()
    return root


@pytest.mark.parametrize(
    ("user_path", "reason"),
    [
        ("../x", "uses '..' to leave the workspace"),
        ("a/../../x", "uses '..' to leave the workspace"),
        ("..", "uses '..' to leave the workspace"),
        ("src/../../../etc/passwd", "uses '..' to leave the workspace"),
        ("/etc/passwd", "is absolute"),
        ("//etc/passwd", "is absolute"),
        ("src/\0/x", "contains a NUL byte"),
        ("", "path is empty"),
        (".git/hooks/pre-commit", "inside .git/"),
    ],
)
def test_escapes_are_refused_with_a_clear_one_line_reason(
    ws: Path, user_path: str, reason: str
) -> None:
    with pytest.raises(PathEscapeError, match=reason) as caught:
        resolve_inside(ws, user_path)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_symlink_to_etc_is_refused(ws: Path) -> None:
    (ws / "etc").symlink_to("/etc")
    for path in ("etc", "etc/passwd", "etc/new-file"):
        with pytest.raises(PathEscapeError, match="outside the workspace through a symlink"):
            resolve_inside(ws, path)


def test_chain_of_symlinked_dirs_leaving_the_workspace_is_refused(ws: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws / "src" / "hop").symlink_to(ws / "src" / "pkg")  # inside: fine on its own
    (ws / "src" / "pkg" / "out").symlink_to(outside)  # the second hop leaves
    with pytest.raises(PathEscapeError, match="symlink"):
        resolve_inside(ws, "src/hop/out/secret")
    with pytest.raises(PathEscapeError, match="symlink"):
        write_text(ws, "src/hop/out/dropped.txt", "x")
    assert list(outside.iterdir()) == []


def test_symlink_loop_is_refused(ws: Path) -> None:
    (ws / "loop").symlink_to(ws / "loop")
    with pytest.raises(PathEscapeError):
        resolve_inside(ws, "loop/x")


def test_normal_nested_paths_resolve_inside(ws: Path) -> None:
    root = ws.resolve()
    assert resolve_inside(ws, "src/pkg/mod.py") == root / "src/pkg/mod.py"
    assert resolve_inside(ws, "./src//pkg/../pkg/mod.py") == root / "src/pkg/mod.py"
    assert resolve_inside(ws, "new/dir/file.txt") == root / "new/dir/file.txt"
    assert resolve_inside(ws, ".") == root
    (ws / "alias").symlink_to(ws / "src")  # a symlink that stays inside is fine
    assert resolve_inside(ws, "alias/pkg/mod.py") == root / "src/pkg/mod.py"
    assert resolve_inside(ws, ".github/workflows/ci.yml") == root / ".github/workflows/ci.yml"


def test_write_creates_parents_and_read_caps_size(ws: Path) -> None:
    written = write_text(ws, "docs/api/README.md", "hello " * 100)
    assert written == ws.resolve() / "docs/api/README.md"
    got = read_text(ws, "docs/api/README.md", max_bytes=10)
    assert (got.text, got.size, got.truncated) == ("hello hell", 600, True)
    assert read_text(ws, "src/pkg/mod.py", max_bytes=100).truncated is False


def test_write_through_a_final_symlink_leaving_is_refused(ws: Path, tmp_path: Path) -> None:
    target = tmp_path / "victim.txt"
    target.write_text("original")
    (ws / "innocent.txt").symlink_to(target)
    with pytest.raises(PathEscapeError, match="symlink"):
        write_text(ws, "innocent.txt", "pwned")
    assert target.read_text() == "original"


def test_list_dir_is_bounded_and_hides_git(ws: Path) -> None:
    for i in range(5):
        (ws / f"f{i}.txt").write_text("")
    os.symlink("src", ws / "link")
    full = list_dir(ws, ".", max_entries=100)
    assert ".git/" not in full.entries
    assert {"src/", "link@", "f0.txt"} <= set(full.entries)
    short = list_dir(ws, ".", max_entries=2)
    assert (len(short.entries), short.total, short.truncated) == (2, full.total, True)
