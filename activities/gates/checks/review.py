"""Judge the review document: structured (has headings), no unanswered blocking question.

The format::

    ## Open questions
    - [blocking] Should logout revoke every session?
    - [blocking] Which token lifetime?
      Answer: 15 minutes
    - Rate limits later?

An item starting with ``[blocking]`` is unanswered until it, or a line or sub-item under
it, holds ``Answer:`` followed by text. The unanswered ones are the check's ``details``
and its ``unanswered_blocking`` figure counts them: the workflow hands them to a person
(``GateResult.questions``), since no repair round can answer them.
"""

from __future__ import annotations

import re

from activities.gates.context import Evidence, GateContext
from activities.gates.results import failed, judged
from activities.gates.schema import CheckConfig
from implflow.models import UNANSWERED_BLOCKING, GateCheck, GateFigure

__all__ = ["judge_review", "open_questions"]

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_ITEM = re.compile(r"^(\s*)(?:[-*+]|\d+[.)])\s+(.*)$")
_BLOCKING = re.compile(r"^\[blocking\]\s*", re.IGNORECASE)
_ANSWER = re.compile(r"\banswer\s*:\s*\S", re.IGNORECASE)


def open_questions(text: str) -> list[tuple[str, bool, bool]]:
    """``(question, blocking, answered)`` for each item under an "Open questions" heading.

    An item (``-``, ``*``, ``+`` or ``1.``) belongs to the section until the next heading;
    indented lines and sub-items belong to the item above them, and an item counts as
    answered when its text holds ``Answer:`` followed by something.
    """
    items: list[list[str]] = []
    in_section = False
    top_indent: int | None = None
    for line in text.splitlines():
        heading = _HEADING.match(line)
        if heading:
            in_section = heading.group(2).strip().lower().rstrip(":") == "open questions"
            top_indent = None
            continue
        if not in_section or not line.strip():
            continue
        item = _ITEM.match(line)
        indent = len(line) - len(line.lstrip())
        if item and (top_indent is None or indent <= top_indent):
            top_indent = indent if top_indent is None else top_indent
            items.append([item.group(2).strip()])
        elif items:
            items[-1].append(line.strip())
    result = []
    for lines in items:
        question = lines[0]
        blocking = bool(_BLOCKING.match(question))
        answered = any(_ANSWER.search(part) for part in lines)
        result.append((_BLOCKING.sub("", question), blocking, answered))
    return result


def judge_review(check: CheckConfig, ctx: GateContext, evidence: Evidence) -> GateCheck:
    """The review exists, has markdown headings and no unanswered blocking question."""
    report = evidence.report_file()
    rel = ctx.rel(report)
    if not report.is_file():
        return failed(check, f"no review: {rel} does not exist", report=rel)
    text = report.read_text(encoding="utf-8", errors="replace")
    if not any(_HEADING.match(line) for line in text.splitlines()):
        return failed(check, f"{rel} has no markdown headings: not a structured review", report=rel)
    questions = open_questions(text)
    unanswered = [q for q, blocking, answered in questions if blocking and not answered]
    figures: dict[str, GateFigure] = {
        "open_questions": len(questions),
        "blocking": sum(1 for _, blocking, _ in questions if blocking),
        UNANSWERED_BLOCKING: len(unanswered),
    }
    if unanswered:
        summary = f"{len(unanswered)} unanswered blocking question(s); first: {unanswered[0]}"
    else:
        summary = f"review present, {len(questions)} open question(s), none blocking unanswered"
    rule = f"{UNANSWERED_BLOCKING} == 0"
    return judged(check, not unanswered, summary, figures, rule, rel, unanswered)
