"""Phase prompts: what the agent is asked to do in one phase round.

``build_prompt`` assembles one phase round's prompt from the task, the phase's
instructions, the feedback that caused this round, summaries of earlier phases,
the review/design artifacts on the branch (``implflow.layout.ARTIFACT_FILES``) and
the repo's guidelines. The output is deterministic (same inputs, same text) and
bounded, because it travels as a single argv element (Linux caps one argument at
128 KiB). Who the agent is (its specialist) is ``activities.specialists``.

Repository files reach the prompt only from inside the repository: a guideline or
artifact behind a symlink leading outside it is skipped, since task repos are not
trusted to read the worker's files into a prompt.
"""

from __future__ import annotations

import os
from pathlib import Path

from activities.confine import inside
from activities.specialists import Specialist
from implflow.layout import ARTIFACT_FILES, IMPLFLOW_DIR
from implflow.models import PhaseInput

MAX_PROMPT_CHARS = 32_000
"""Default prompt bound: 32 000 characters stay under Linux's 128 KiB per-argument
limit (MAX_ARG_STRLEN) even at four UTF-8 bytes per character."""

MAX_GUIDELINES_CHARS = 12_000
MAX_GUIDELINE_FILE_CHARS = 6_000
MAX_GUIDELINE_FILES = 40
MAX_ARTIFACT_CHARS = 6_000
MAX_ARTIFACTS_CHARS = 12_000
MAX_FEEDBACK_CHARS = 8_000
MAX_PREVIOUS_CHARS = 4_000

GUIDELINES_DIR = Path("documents") / "guidelines"
GUIDELINE_SUFFIXES = (".md", ".txt")
GUIDELINE_FILES = ("CONTRIBUTING.md", "AGENTS.md", "CLAUDE.md")
"""Top-level guideline files, read after ``documents/guidelines/`` in this order."""


# --- guidelines and artifacts ------------------------------------------------------------


def collect_guidelines(
    repo_dir: Path,
    max_chars: int = MAX_GUIDELINES_CHARS,
    *,
    per_file_chars: int = MAX_GUIDELINE_FILE_CHARS,
) -> str:
    """The repo's guidelines as one markdown text of at most ``max_chars``; ``""`` if none.

    Reads ``documents/guidelines/**/*.md|*.txt`` (sorted by path), then
    ``CONTRIBUTING.md``, ``AGENTS.md``, ``CLAUDE.md``. Each file gets a ``## <path>``
    heading; a file cut short (per file or by the overall bound) ends with a
    truncation mark naming it, and files that no longer fit are listed by name.
    Files reached through a symlink leading outside the repo are skipped.
    """
    root = repo_dir.resolve()
    paths = _guideline_paths(root)
    texts = [(rel, _read_inside(root, rel, per_file_chars)) for rel in paths]
    return _join_bounded([(rel, t) for rel, t in texts if t is not None], max_chars)


def _guideline_paths(root: Path) -> list[str]:
    found: list[str] = []
    base = root / GUIDELINES_DIR
    if inside(root, base) is not None and base.is_dir():
        for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
            dirnames.sort()
            for filename in sorted(filenames):
                if filename.endswith(GUIDELINE_SUFFIXES):
                    found.append((Path(dirpath) / filename).relative_to(root).as_posix())
    found.sort()
    found = found[:MAX_GUIDELINE_FILES]
    return found + [name for name in GUIDELINE_FILES if (root / name).is_file()]


def _read_inside(root: Path, rel: str, max_chars: int) -> tuple[str, bool] | None:
    """Text of ``root/rel`` cut to ``max_chars`` and whether it was cut; ``None`` if unusable."""
    resolved = inside(root, root / rel)
    if resolved is None or not resolved.is_file():
        return None
    try:
        with resolved.open("rb") as handle:
            data = handle.read(max_chars * 4 + 4)
            more = bool(handle.read(1))
    except OSError:
        return None
    if b"\x00" in data:
        return None  # binary, not guidance
    text = data.decode("utf-8", errors="replace").strip()
    cut = more or len(text) > max_chars
    return text[:max_chars], cut


def _join_bounded(items: list[tuple[str, tuple[str, bool]]], max_chars: int) -> str:
    """``## path`` sections within ``max_chars``, cuts marked, omitted files named."""
    sections: list[str] = []
    used = 0
    for index, (rel, (text, cut)) in enumerate(items):
        rest = [r for r, _ in items[index + 1 :]]
        room = max_chars - used - (2 if sections else 0) - _omitted_room(rest)
        section = _section(rel, text, cut, room)
        if section is None:
            sections.append(_omitted_note([r for r, _ in items[index:]]))
            break
        sections.append(section)
        used += len(section) + (2 if len(sections) > 1 else 0)
    return _cap("\n\n".join(sections), max_chars)


def _section(rel: str, text: str, cut: bool, room: int) -> str | None:
    heading = f"## {rel}\n\n"
    whole = heading + text + (_cut_mark(rel) if cut else "")
    if len(whole) <= room:
        return whole
    keep = room - len(heading) - len(_cut_mark(rel))
    if keep < 200:  # too little to be useful: name the file instead
        return None
    return heading + text[:keep].rstrip() + _cut_mark(rel)


def _cut_mark(rel: str) -> str:
    return f"\n\n[truncated: {rel} is longer; read the file itself for the rest]"


def _omitted_note(rels: list[str]) -> str:
    return f"[omitted for size: {len(rels)} more guideline file(s): {', '.join(rels)}]"


def _omitted_room(rels: list[str]) -> int:
    """Space kept free for naming the files after this one, should they not fit."""
    return min(len(_omitted_note(rels)) + 2, 600) if rels else 0


def read_artifacts(repo_dir: Path, max_chars: int = MAX_ARTIFACT_CHARS) -> dict[str, str]:
    """The earlier phases' artifacts present on the branch (``ARTIFACT_FILES``), bounded."""
    root = repo_dir.resolve()
    found: dict[str, str] = {}
    for rel in ARTIFACT_FILES:
        read = _read_inside(root, rel, max_chars)
        if read is not None:
            text, cut = read
            found[rel] = text + (_cut_mark(rel) if cut else "")
    return found


# --- the prompt --------------------------------------------------------------------------


def build_prompt(
    pin: PhaseInput,
    repo_dir: Path,
    artifacts: dict[str, str] | None = None,
    max_chars: int = MAX_PROMPT_CHARS,
    *,
    specialist: Specialist | None = None,
) -> str:
    """The prompt of one phase round: deterministic, at most ``max_chars`` characters.

    Sections: the task, the phase and its instructions, the feedback that caused
    this round (clearly marked), summaries of earlier phases, the review/design
    artifacts (``artifacts`` maps path to text and wins over the files read from
    ``repo_dir``), the repo's guidelines, and how to finish. Pass ``specialist``
    only to executors that have no system-prompt channel: its body then leads.
    When space runs short, the lower sections are cut first (guidelines, then
    artifacts, earlier phases, the task text); each cut is marked.
    """
    phase = pin.phase.name
    intro = (
        f"You are doing the {phase!r} phase (round {pin.round}) of a software implementation "
        "task in the repository that is your working directory."
    )
    closing = (
        "# How to finish\n\n"
        "Change files only inside the working directory. Do not commit or push: implflow "
        "commits your changes when the phase ends. Keep the phase's artifacts under "
        f"`{IMPLFLOW_DIR}/`. Finish with a short summary of what you did and what is left open."
    )
    budget = _Budget(max_chars - len(intro) - len(closing) - 4)  # 2 separators of "\n\n"

    lead = budget.take(
        f"# Specialist: {specialist.name}\n\n{specialist.body}" if specialist else "", "specialist"
    )
    # Shares, so that a long feedback list or long instructions never crowd out the task.
    feedback_room = budget.room(min(MAX_FEEDBACK_CHARS, budget.left // 3))
    feedback = budget.take(_feedback_section(pin.feedback, feedback_room), "feedback")
    instructions = pin.phase.instructions.strip() or "(no further instructions for this phase)"
    phase_text = budget.take(
        f"# Phase: {phase} (round {pin.round})\n\n{instructions}", phase, budget.left // 2
    )
    task = budget.take(f"# Task: {pin.title}\n\n{pin.description.strip()}", "task")
    previous = budget.take(_previous_section(pin), "earlier phases", MAX_PREVIOUS_CHARS)
    arts = budget.take(
        _artifacts_section(repo_dir, artifacts, budget.room(MAX_ARTIFACTS_CHARS)), "artifacts"
    )
    room = budget.left - len("# Repository guidelines\n\n") - 2
    guidelines = collect_guidelines(repo_dir, min(room, MAX_GUIDELINES_CHARS)) if room > 300 else ""
    guide = budget.take(
        f"# Repository guidelines\n\n{guidelines}" if guidelines else "", "guidelines"
    )

    sections = [intro, lead, task, phase_text, feedback, previous, arts, guide, closing]
    return _cap("\n\n".join(s for s in sections if s), max_chars)


class _Budget:
    """Characters left for the prompt's sections, handed out in priority order."""

    def __init__(self, left: int) -> None:
        self.left = max(0, left)

    def room(self, cap: int | None = None) -> int:
        """Characters the next section may use (one separator is kept back for it)."""
        return min(self.left - 2, cap if cap is not None else self.left)

    def take(self, text: str, what: str, cap: int | None = None) -> str:
        if not text:
            return ""
        fitted = _cap(text, self.room(cap), f"\n\n[truncated: the {what} section is longer]")
        self.left -= (len(fitted) + 2) if fitted else 0
        return fitted


FEEDBACK_START = "# >>> FEEDBACK TO ADDRESS (this round exists because of it) <<<"
FEEDBACK_END = "# >>> END OF FEEDBACK <<<"


def _feedback_section(feedback: list[str], limit: int) -> str:
    """The marked feedback section within ``limit``; when short of space, older items go."""
    notes = [note.strip() for note in feedback if note.strip()]
    if not notes:
        return ""
    head = (
        f"{FEEDBACK_START}\n\n"
        "A gate failed or a reviewer rejected the previous round. Address every item below "
        "before anything else; the newest is last.\n\n"
    )
    tail = f"\n\n{FEEDBACK_END}"
    room = limit - len(head) - len(tail) - 60  # 60: the "older items omitted" line
    kept: list[str] = []
    for number in range(len(notes), 0, -1):  # newest first
        item = f"{number}. {notes[number - 1]}"
        if len(item) + 2 > room:
            # The newest item may be cut to fit; an older one only while it stays useful.
            item = _cap(item, room - 2 if not kept else room // 2, " [... truncated]")
            if not item or (kept and len(item) < 200):
                break
        kept.insert(0, item)
        room -= len(item) + 2
    omitted = len(notes) - len(kept)
    more = f"({omitted} older feedback item(s) omitted for size)\n\n" if omitted else ""
    return head + more + "\n\n".join(kept) + tail


def _previous_section(pin: PhaseInput) -> str:
    if not pin.previous:
        return ""
    lines = [f"- {p.name} (round {p.round}): {' '.join(p.summary.split())}" for p in pin.previous]
    return "# Earlier phases\n\n" + "\n".join(lines)


def _artifacts_section(repo_dir: Path, given: dict[str, str] | None, limit: int) -> str:
    """Artifacts in pipeline order, each cut to an equal share of ``limit`` (cuts marked)."""
    merged = read_artifacts(repo_dir)
    merged.update(given or {})
    head = "# Artifacts of earlier phases (files on the branch; read them for details)"
    if not merged or limit < len(head) + 200:
        return ""
    order = {rel: index for index, rel in enumerate(ARTIFACT_FILES)}
    ordered = sorted(merged, key=lambda rel: (order.get(rel, len(order)), rel))
    share = min(MAX_ARTIFACT_CHARS, (limit - len(head)) // len(ordered))
    parts = [head]
    for rel in ordered:
        heading = f"## {rel}\n\n"
        text = _cap(merged[rel].strip(), share - len(heading) - 2, _cut_mark(rel))
        if text:
            parts.append(heading + text)
    return "\n\n".join(parts) if len(parts) > 1 else ""


def _cap(text: str, limit: int, mark: str = "\n\n[truncated]") -> str:
    """``text`` if it fits in ``limit`` characters, else cut with ``mark`` (never longer)."""
    if len(text) <= limit:
        return text
    if limit <= len(mark):
        return ""
    return text[: limit - len(mark)].rstrip() + mark
