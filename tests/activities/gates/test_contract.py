"""One contract for prompts and gates: the files each bundled specialist tells the agent to
write are the files ``implflow/layout.py`` declares and the default gates look for.

The specialist's phase bullets (``- **design** → …``) are parsed for the file paths they
name; an agent that writes exactly those files, with the content the bullets ask for, passes
the review and design gates of the Python preset on a repository with no service of its own
(so the design gate needs the proposed service command), and the design gate's result
carries that command for the person approving the design.
"""

from __future__ import annotations

import re
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from activities.gates.config import load_gate_config
from activities.gates.runner import run_gate
from activities.specialists import parse_agent_file
from implflow.layout import (
    API_CONTRACT,
    API_CONTRACT_CANDIDATES,
    DESIGN_DOC,
    PHASE_ARTIFACTS,
    REVIEW_DOC,
    SERVICE_FILE,
)
from implflow.models import PHASES, Thresholds

BUNDLED = sorted(
    entry.name
    for entry in resources.files("implflow").joinpath("specialists").iterdir()
    if entry.name.endswith(".md")
)
_BULLET = re.compile(r"^\s*- \*\*([a-z]+)\*\* →(.*?)(?=^\s*- \*\*[a-z]+\*\* →|^- |\Z)", re.M | re.S)
_FILE = re.compile(r"`([\w./-]+\.(?:md|ya?ml|json|toml))`")

# What each file holds when an agent writes what the bullets ask for, minimally.
CONTENT = {
    REVIEW_DOC: "# Review\n\n## Requirements\n- notes CRUD\n\n## Open questions\n- paging later?\n",
    DESIGN_DOC: "# Design\n\nOne FastAPI app over an in-memory store.\n",
    **dict.fromkeys(
        API_CONTRACT_CANDIDATES,
        "openapi: 3.0.3\ninfo: {title: notes, version: '1'}\n"
        "paths:\n  /health:\n    get:\n      responses:\n        '200': {description: ok}\n",
    ),
    SERVICE_FILE: (
        'command = ["{python}", "-m", "uvicorn", "notes.main:app", "--port", "{port}"]\n'
        'health_path = "/health"\n'
    ),
}


def specialist_files(name: str) -> dict[str, list[str]]:
    """``{phase: [paths]}`` the specialist's phase bullets tell the agent to write."""
    text = resources.files("implflow").joinpath("specialists", name).read_text(encoding="utf-8")
    body = parse_agent_file(text, f"bundled:{name}").body
    found: dict[str, list[str]] = {}
    for match in _BULLET.finditer(body):
        phase, bullet = match.group(1), match.group(2)
        found[phase] = list(dict.fromkeys(_FILE.findall(bullet)))
    return found


DECLARED = {path for paths in PHASE_ARTIFACTS.values() for path in paths} | set(
    API_CONTRACT_CANDIDATES
)


@pytest.mark.parametrize("name", BUNDLED)
def test_every_file_a_specialist_names_is_declared_and_gated(name: str) -> None:
    found = specialist_files(name)
    assert set(found) == set(PHASES), f"{name}: one bullet per phase"
    named = {path for paths in found.values() for path in paths}
    assert named <= DECLARED, f"{name} names files implflow/layout.py does not declare"
    # What the default review and design gates require, the specialist asks for.
    assert REVIEW_DOC in found["review"]
    assert DESIGN_DOC in found["design"]
    assert set(found["design"]) & set(API_CONTRACT_CANDIDATES), f"{name}: no API contract"


def test_the_default_specialist_names_exactly_the_layouts_files() -> None:
    found = specialist_files("backend-implementer.md")
    named = {phase: paths for phase, paths in found.items() if paths}
    assert named == {phase: list(paths) for phase, paths in PHASE_ARTIFACTS.items()}


def test_the_gates_look_where_the_layout_says(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '0'\n")
    config = load_gate_config(tmp_path)
    reports = {c.name: c.report for phase in ("review", "design") for c in config.checks_for(phase)}
    assert reports["review"] == REVIEW_DOC
    assert reports["design-doc"] == DESIGN_DOC
    assert reports["contract"] == API_CONTRACT == API_CONTRACT_CANDIDATES[0]
    # A repository that keeps its contract elsewhere is checked there instead.
    (tmp_path / ".implflow").mkdir()
    (tmp_path / ".implflow" / "openapi.yaml").write_text("openapi: 3.0.3\n")
    contract = next(
        c for c in load_gate_config(tmp_path).checks_for("design") if c.name == "contract"
    )
    assert contract.report == ".implflow/openapi.yaml"


@pytest.mark.parametrize("name", BUNDLED)
async def test_an_agent_following_the_specialist_literally_passes_review_and_design(
    name: str, tmp_path: Path
) -> None:
    files = specialist_files(name)
    proposes = SERVICE_FILE in files["design"]
    repo = tmp_path / "notes"
    (repo / "notes").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("[project]\nname = 'notes'\nversion = '0.1.0'\n")
    (repo / "notes" / "__init__.py").write_text('"""Notes."""\n')
    if not proposes:  # a specialist that never proposes a command works on a findable service
        (repo / "notes" / "__main__.py").write_text('"""Serve: python -m notes --port N."""\n')
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)

    before = await run_gate("design", repo, 1, Thresholds())
    assert not before.passed  # nothing written yet
    if proposes:  # no service to be found in the code: the gate says where to propose one
        service = next(c for c in before.checks if c.name == "service")
        assert SERVICE_FILE in service.summary

    for phase in ("review", "design"):
        for path in files[phase]:
            target = repo / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(CONTENT[path], encoding="utf-8")
        verdict = await run_gate(phase, repo, 2, Thresholds())
        assert verdict.passed, f"{name} {phase}: {verdict.failure_summary}"

    if not proposes:
        return
    design = await run_gate("design", repo, 3, Thresholds())
    assert design.service_command == [
        "{python}",
        "-m",
        "uvicorn",
        "notes.main:app",
        "--port",
        "{port}",
    ]
    assert design.service_health_path == "/health"
    assert "service command: {python} -m uvicorn notes.main:app" in design.evidence()
    assert (
        f"proposed in {SERVICE_FILE}"
        in next(c for c in design.checks if c.name == "service").summary
    )
