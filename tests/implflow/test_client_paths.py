"""The orchestrator API makes a relative repository path absolute, as the CLI does."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest

from implflow.client import ImplflowClient


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """This program's directory and home (the worker has others)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return {"cwd": tmp_path.resolve(), "home": (tmp_path / "home").resolve()}


@pytest.mark.parametrize(
    ("repo", "expected"),
    [
        ("notes-api", "{cwd}/notes-api"),
        ("./svc/../notes-api", "{cwd}/notes-api"),
        ("~/notes-api", "{home}/notes-api"),
        ("/srv/git/notes-api", "/srv/git/notes-api"),
        (
            "https://git.example.com/team/notes-api.git",
            "https://git.example.com/team/notes-api.git",
        ),
        ("git@git.example.com:team/notes-api.git", "git@git.example.com:team/notes-api.git"),
    ],
)
async def test_a_relative_repo_is_this_programs_not_the_workers(
    repo: str, expected: str, here: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = ImplflowClient(MagicMock())
    sent: list[Any] = []

    async def fake_start(kind: str, inp: Any, *args: Any, **kwargs: Any) -> bool:
        sent.append(inp)
        return True

    monkeypatch.setattr(flow, "_start", fake_start)
    await flow.start({"title": "t", "description": "d", "repo": repo})
    assert sent[0].repo == expected.format(**here)
