"""Specialists: who the agent is in a phase, read from Claude Code agent files.

A *specialist* is a Claude Code agent file: markdown with a YAML front matter
header (``name``, ``description``, ``model``, ``tools``) whose body is the
specialist's standing instructions. Executors hand the body to the agent as its
system prompt (``claude --append-system-prompt``) or, where an agent has no such
channel, put it at the top of the prompt (``activities.prompts.build_prompt(...,
specialist=...)``; what the agent is asked to do is built there).

Lookup order for a name: the target repo's ``.claude/agents/<name>.md``, then a
directory from the worker's settings, then the files bundled in
``implflow/specialists/``. Names are plain identifiers, never paths, and a repo
file that is a symlink leading outside the repo is refused: task repos are not
trusted to read the worker's files into a prompt.
"""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from activities.confine import inside
from implflow.errors import ImplflowError

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""Specialist names: a file stem, never a path (no ``/``, no leading ``.``)."""

DEFAULT_SPECIALIST = "backend-implementer"
"""The bundled specialist used when a task or the settings name none."""

REPO_AGENTS_DIR = Path(".claude") / "agents"
BUNDLED_PACKAGE = "implflow"
BUNDLED_DIR = "specialists"

MAX_AGENT_FILE_BYTES = 64 * 1024
MAX_SPECIALIST_CHARS = 24_000
"""Bound on a specialist body: it becomes one argv element (``--append-system-prompt``)."""


class SpecialistError(ImplflowError, ValueError):
    """A specialist cannot be found or parsed. ``str()`` is one line naming the file."""


class Specialist(BaseModel):
    """One parsed agent file."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    model: str | None = None
    """``sonnet``, ``opus``, ``haiku`` or a model id; ``None`` = the executor's default."""
    tools: list[str] = Field(default_factory=list)
    body: str
    source: Path | str
    """Where it came from: a path, or ``bundled:<name>.md``."""

    def system_prompt(self) -> str:
        """The text an executor appends to the agent's system prompt."""
        return self.body


# --- parsing ---------------------------------------------------------------------------


def parse_agent_file(text: str, source: Path | str) -> Specialist:
    """Parse a Claude Code agent file (``---`` YAML header, then the markdown body).

    ``tools`` may be a comma-separated string or a YAML list; ``model: inherit``
    means "the executor's default" and becomes ``None``. Unknown header keys
    (``color``, ...) are ignored. Raises ``SpecialistError`` naming ``source``.
    """
    lines = text.removeprefix("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        raise SpecialistError(f"{source}: no YAML header (the first line must be '---')")
    end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), None)
    if end is None:
        raise SpecialistError(f"{source}: YAML header is not closed (no second '---' line)")
    try:
        header = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError as err:
        raise SpecialistError(f"{source}: bad YAML header: {_one_line(str(err))}") from None
    if not isinstance(header, dict):
        raise SpecialistError(f"{source}: YAML header must be a mapping of keys to values")

    name = header.get("name")
    if not isinstance(name, str) or not name.strip():
        raise SpecialistError(f"{source}: header has no 'name'")
    name = name.strip()
    if len(name) > 64 or _has_control_chars(name):
        raise SpecialistError(f"{source}: 'name' must be one line of at most 64 characters")
    body = "\n".join(lines[end + 1 :]).strip()
    if not body:
        raise SpecialistError(f"{source}: the body (the specialist's instructions) is empty")
    if len(body) > MAX_SPECIALIST_CHARS:
        raise SpecialistError(
            f"{source}: body has {len(body)} characters; at most {MAX_SPECIALIST_CHARS} allowed"
        )
    model = _optional_str(header, "model", source)
    return Specialist(
        name=name,
        description=_optional_str(header, "description", source) or "",
        model=None if model in (None, "inherit") else model,
        tools=_tools(header.get("tools"), source),
        body=body,
        source=source,
    )


def _optional_str(header: dict[Any, Any], key: str, source: Path | str) -> str | None:
    value = header.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SpecialistError(f"{source}: '{key}' must be a string, not {type(value).__name__}")
    return " ".join(value.split()) or None


def _tools(value: object, source: Path | str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, list):
        items = value
    else:
        raise SpecialistError(f"{source}: 'tools' must be a comma-separated string or a list")
    tools: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise SpecialistError(f"{source}: 'tools' entries must be strings, got {item!r}")
        if item.strip():
            tools.append(item.strip())
    return tools


# --- lookup ----------------------------------------------------------------------------


def find_specialist(name: str, repo_dir: Path, extra_dir: Path | None = None) -> Specialist:
    """The specialist ``name``: from the repo, else ``extra_dir``, else the bundled ones.

    Raises ``SpecialistError`` for a name that is not a plain identifier, a repo
    file that is a symlink leading outside the repo, a file that does not parse,
    or an unknown name (the message lists the available ones).
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise SpecialistError(
            f"specialist name {name!r} is not allowed: use lowercase letters, digits, "
            "'.', '_', '-' (at most 64, starting with a letter or digit)"
        )
    filename = f"{name}.md"
    root = repo_dir.resolve()
    repo_file = repo_dir / REPO_AGENTS_DIR / filename
    if repo_file.is_file() or repo_file.is_symlink():
        resolved = inside(root, repo_file)
        if resolved is None:
            raise SpecialistError(
                f"{repo_file}: refused: it is a symlink that leads outside the repository"
            )
        if resolved.is_file():
            return parse_agent_file(_read_agent_file(resolved, repo_file), repo_file)
    if extra_dir is not None:
        extra_file = extra_dir / filename
        if extra_file.is_file():
            return parse_agent_file(_read_agent_file(extra_file, extra_file), extra_file)
    bundled = _bundled_dir().joinpath(filename)
    if bundled.is_file():
        return parse_agent_file(bundled.read_text(encoding="utf-8"), f"bundled:{filename}")
    known = ", ".join(list_specialists(repo_dir, extra_dir)) or "none"
    places = [str(repo_dir / REPO_AGENTS_DIR)]
    places += [str(extra_dir)] if extra_dir is not None else []
    raise SpecialistError(
        f"unknown specialist {name!r} (looked in {', '.join(places)} and the bundled ones); "
        f"available: {known}"
    )


def list_specialists(repo_dir: Path, extra_dir: Path | None = None) -> list[str]:
    """Names of every specialist ``find_specialist`` could look up, sorted."""
    names: set[str] = set()
    for directory in (repo_dir / REPO_AGENTS_DIR, extra_dir):
        if directory is not None and directory.is_dir():
            names.update(p.stem for p in directory.glob("*.md"))
    names.update(
        entry.name.removesuffix(".md")
        for entry in _bundled_dir().iterdir()
        if entry.name.endswith(".md")
    )
    return sorted(n for n in names if NAME_PATTERN.fullmatch(n))


def _bundled_dir() -> Traversable:
    return resources.files(BUNDLED_PACKAGE).joinpath(BUNDLED_DIR)


def _read_agent_file(path: Path, shown: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_AGENT_FILE_BYTES + 1)
    except OSError as err:
        raise SpecialistError(f"{shown}: cannot read: {err.strerror or err}") from None
    if len(data) > MAX_AGENT_FILE_BYTES:
        raise SpecialistError(f"{shown}: larger than {MAX_AGENT_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecialistError(f"{shown}: not UTF-8 text") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def _has_control_chars(text: str) -> bool:
    return any(ord(c) < 32 for c in text)
