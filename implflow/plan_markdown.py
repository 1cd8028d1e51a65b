"""Markdown task lists (``tasks.md``, as spec-driven tools write them) read as a plan.

The mapping (also in the README's *Plans* section):

- YAML front matter holds plan fields (``repo``, ``base``, ``concurrency``, ``defaults``...),
  at the top level or under ``implflow:``; a spec-kit ``description`` key is ignored;
- the first ``# `` heading is the title (``# Tasks: Auth service`` -> ``Auth service``);
- a task is a checklist item ``- [ ] T001 [P] [US1] text`` (its indented lines add to the
  description) or a heading ``### T001 text`` (the lines under it are the description);
  ``- [x]`` items are done: left out, and a dependency on one counts as met;
- ``## `` sections are phases and run in order: the first tasks of a phase depend on the
  tasks that end the phase before; inside a phase, a task without ``[P]`` depends on the
  ``[P]`` tasks right before it, else on the task before it; a ``[P]`` task depends only on
  the previous task without ``[P]``, so consecutive ``[P]`` tasks run side by side;
- ``depends on T002, T004`` / ``after T003`` / ``requires`` / ``blocked by`` in a task's text,
  and lines ``T005 depends on T003`` or ``T003 blocks T005`` (ranges ``T004-T007`` too) add
  dependencies; a reference to an id that is not in the file is an error naming the line;
- ``(specialist: name)`` in a task, or in a phase heading for all its tasks, names the specialist.

Pure text processing: no file I/O (``implflow.plans.load_plan`` reads the file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from implflow.errors import InvalidInputError

_ID = r"[A-Z][A-Z0-9]*-?\d+"
_REF = rf"{_ID}(?:\s*(?:-|\u2013|\.\.|to)\s*{_ID})?"
_REFS = rf"{_REF}(?:\s*(?:,|and|&|/)\s*{_REF})*"
_VERB_TEXT = r"(?i:depends\s+on|depend\s+on|after|requires|blocked\s+by)"

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_CHECK_ITEM = re.compile(
    rf"^(?P<indent>\s*)[-*+]\s+\[(?P<mark>[ xX])\]\s+(?P<id>{_ID})\b[:.]?\s*(?P<rest>.*)$"
)
_ID_FIRST = re.compile(rf"^(?P<id>{_ID})\b[:.]?\s*(?P<rest>.*)$")
_PARALLEL = re.compile(r"\[P\]")
_LABEL = re.compile(r"\[(?P<label>[A-Z][A-Za-z0-9_-]{0,15})\]")
_SPECIALIST = re.compile(r"\(\s*(?i:specialist)\s*:\s*(?P<name>[a-z0-9][a-z0-9._-]{0,63})\s*\)")
_DEP_TEXT = re.compile(rf"\b{_VERB_TEXT}\s*:?\s*(?P<ids>{_REFS})")
_DEP_PAREN = re.compile(rf"\(\s*{_VERB_TEXT}[^)]*\)")
_DEP_LINE = re.compile(
    rf"^\s*(?:[-*+]\s+)?(?:\*\*)?(?P<left>{_REFS})(?:\*\*)?\s+"
    rf"(?P<verb>(?i:depends\s+on|depend\s+on|blocks|block|before|after))\s*:?\s*(?P<right>{_REFS})"
)
_ONE_REF = re.compile(rf"(?P<a>{_ID})(?:\s*(?:-|\u2013|\.\.|to)\s*(?P<b>{_ID}))?")
_TITLE_PREFIX = re.compile(r"^(?i:tasks?)\s*[:\-\u2013]\s*")
_IGNORED_FRONT_KEYS = {"description"}


@dataclass
class _Task:
    id: str
    line: int
    text: str
    done: bool
    parallel: bool
    phase: int
    heading: bool
    body: list[str] = field(default_factory=list)
    refs: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class _Phase:
    name: str
    specialist: str | None


def parse_task_list(text: str, name: str = "tasks.md") -> dict[str, Any]:
    """The plan (a mapping for ``implflow.plans.parse_plan``) a markdown task list describes."""
    lines = text.removeprefix("\ufeff").splitlines()
    plan, first = _front_matter(lines, name)
    title: str | None = None
    phases = [_Phase("", None)]
    tasks: list[_Task] = []
    statements: list[tuple[str, str, str, int]] = []
    current: _Task | None = None
    indent = -1
    in_fence = False
    for number, raw in enumerate(lines[first:], first + 1):
        if _FENCE.match(raw):
            in_fence = not in_fence
            if current is not None and current.heading:
                current.body.append(raw)
            continue
        if in_fence:
            if current is not None:
                current.body.append(raw)
            continue
        heading = _HEADING.match(raw)
        if heading:
            level, words = len(heading.group(1)), heading.group(2)
            task_heading = _ID_FIRST.match(words) if level >= 2 else None
            current = None
            if level == 1 and title is None:
                title = _TITLE_PREFIX.sub("", words).strip() or None
            elif task_heading:
                current = _task(task_heading["id"], number, task_heading["rest"], len(phases) - 1)
                current.heading = True
                tasks.append(current)
            elif level == 2:
                spec = _SPECIALIST.search(words)
                label = " ".join(_SPECIALIST.sub("", words).split())
                phases.append(_Phase(label, spec["name"] if spec else None))
            continue
        item = _CHECK_ITEM.match(raw)
        if item:
            current = _task(item["id"], number, item["rest"], len(phases) - 1)
            current.done = item["mark"] in "xX"
            tasks.append(current)
            indent = len(item["indent"].expandtabs(4))
            continue
        statement = _DEP_LINE.match(raw)
        if statement:
            statements.append((statement["left"], statement["verb"], statement["right"], number))
            continue
        if current is None:
            continue
        if current.heading:
            current.body.append(raw)
            current.refs += [(m["ids"], number) for m in _DEP_TEXT.finditer(raw)]
        elif not raw.strip():
            current.body.append("")
        elif len(raw) - len(raw.lstrip()) > indent:
            current.body.append(raw.strip())
            current.refs += [(m["ids"], number) for m in _DEP_TEXT.finditer(raw)]
        else:
            current = None
    if not tasks:
        raise InvalidInputError(
            f"invalid input: {name}: no tasks found (expected checklist items like "
            "'- [ ] T001 ...' or headings like '### T001 ...')"
        )
    return {
        **plan,
        "title": plan.get("title") or title or name,
        "tasks": _plan_tasks(tasks, phases, statements, name),
    }


def _task(ident: str, line: int, rest: str, phase: int) -> _Task:
    task = _Task(ident, line, rest.strip(), False, bool(_PARALLEL.search(rest)), phase, False)
    task.refs = [(m["ids"], line) for m in _DEP_TEXT.finditer(rest)]
    return task


def _front_matter(lines: list[str], name: str) -> tuple[dict[str, Any], int]:
    """Plan fields from a leading ``---`` YAML block, and the index of the first body line."""
    if not lines or lines[0].strip() != "---":
        return {}, 0
    end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), None)
    if end is None:
        raise InvalidInputError(f"invalid input: {name}:1: front matter is not closed by '---'")
    try:
        data = yaml.safe_load("\n".join(lines[1:end])) or {}
    except yaml.YAMLError as err:
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise InvalidInputError(f"invalid input: {name}: front matter: {problem}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"invalid input: {name}: front matter must be a mapping")
    if isinstance(data.get("implflow"), dict):
        return dict(data["implflow"]), end + 1
    return {k: v for k, v in data.items() if k not in _IGNORED_FRONT_KEYS}, end + 1


def _plan_tasks(
    tasks: list[_Task],
    phases: list[_Phase],
    statements: list[tuple[str, str, str, int]],
    name: str,
) -> list[dict[str, Any]]:
    first_line: dict[str, int] = {}
    for task in tasks:
        if task.id in first_line:
            raise InvalidInputError(
                f"invalid input: {name}:{task.line}: task {task.id} appears twice "
                f"(first at line {first_line[task.id]})"
            )
        first_line[task.id] = task.line
    deps = _ordering(tasks)
    for task in tasks:
        for refs, line in task.refs:
            deps[task.id] += _expand(refs, first_line, name, line, task.id)
    for left, verb, right, line in statements:
        lefts = _expand(left, first_line, name, line, None)
        rights = _expand(right, first_line, name, line, lefts[0] if lefts else None)
        later, earlier = (
            (rights, lefts)
            if verb.lower() in ("blocks", "block", "before")
            else (
                lefts,
                rights,
            )
        )
        for ident in later:
            deps[ident] += earlier
    done = {t.id for t in tasks if t.done}
    out: list[dict[str, Any]] = []
    for task in tasks:
        if task.done:
            continue
        met = _unmet(deps[task.id], deps, done, set())
        specialist = _SPECIALIST.search(task.text)
        entry: dict[str, Any] = {
            "id": task.id,
            "title": _title(task.text) or task.id,
            "description": _description(task, phases[task.phase].name),
            "depends_on": [d for d in dict.fromkeys(met) if d != task.id],
        }
        chosen = specialist["name"] if specialist else phases[task.phase].specialist
        if chosen:
            entry["specialist"] = chosen
        out.append(entry)
    if not out:
        raise InvalidInputError(f"invalid input: {name}: every task is already checked off")
    return out


def _ordering(tasks: list[_Task]) -> dict[str, list[str]]:
    """Dependencies from the order of the file: phases in sequence, ``[P]`` tasks side by side."""
    deps: dict[str, list[str]] = {}
    previous_end: list[str] = []
    for phase in sorted({t.phase for t in tasks}):
        barrier = list(previous_end)  # what a task without [P] waited for, or that task
        group: list[str] = []  # [P] tasks since then
        for task in (t for t in tasks if t.phase == phase):
            if task.parallel:
                deps[task.id] = list(barrier)
                group.append(task.id)
            else:
                deps[task.id] = list(group) if group else list(barrier)
                barrier, group = [task.id], []
        previous_end = group or barrier
    return deps


def _expand(
    refs: str, known: dict[str, int], name: str, line: int, subject: str | None
) -> list[str]:
    """The ids a reference list names (``T004-T007`` expanded); unknown ids are an error."""
    found: list[str] = []
    for match in _ONE_REF.finditer(refs):
        a, b = match["a"], match["b"]
        ends = [a] if b is None else [a, b]
        for ident in ends:
            if ident not in known:
                who = f"{subject} depends on" if subject else "a dependency names"
                raise InvalidInputError(
                    f"invalid input: {name}:{line}: {who} {ident}, which is not in the file"
                )
        if b is None:
            found.append(a)
            continue
        head_a, num_a = re.match(r"^(.*?)(\d+)$", a).groups()  # type: ignore[union-attr]
        head_b, num_b = re.match(r"^(.*?)(\d+)$", b).groups()  # type: ignore[union-attr]
        if head_a != head_b or int(num_b) < int(num_a):
            raise InvalidInputError(f"invalid input: {name}:{line}: bad range {a}-{b}")
        width = len(num_a)
        found += [
            f"{head_a}{n:0{width}d}"
            for n in range(int(num_a), int(num_b) + 1)
            if f"{head_a}{n:0{width}d}" in known
        ]
    return found


def _unmet(ids: list[str], deps: dict[str, list[str]], done: set[str], seen: set[str]) -> list[str]:
    """``ids`` with every done task replaced by what it depended on (done counts as met)."""
    out: list[str] = []
    for ident in ids:
        if ident not in done:
            out.append(ident)
        elif ident not in seen:
            seen.add(ident)
            out += _unmet(deps[ident], deps, done, seen)
    return out


def _title(text: str) -> str:
    """The item's words without marks, labels, specialist and dependency clauses (≤ 200)."""
    words = _SPECIALIST.sub("", text)
    words = _DEP_PAREN.sub("", words)
    words = _DEP_TEXT.sub("", words)
    words = _PARALLEL.sub("", words)
    words = _LABEL.sub("", words)
    words = " ".join(words.split()).strip(" ,;:-\u2013\u2014")
    if len(words) <= 200:
        return words
    return words[:199].rsplit(" ", 1)[0] + "…"


def _description(task: _Task, phase: str) -> str:
    labels = [m["label"] for m in _LABEL.finditer(task.text) if m["label"] != "P"]
    head = " ".join(_SPECIALIST.sub("", _PARALLEL.sub("", _LABEL.sub("", task.text))).split())
    body = "\n".join(task.body).strip()
    parts = [head, body]
    if labels:
        parts.append(f"Labels: {', '.join(labels)}")
    if phase:
        parts.append(f"Phase: {phase}")
    return "\n\n".join(p for p in parts if p)[:19_000]
