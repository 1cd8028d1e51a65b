"""Specialists (agent files): parsing, lookup, and how agent executors resolve them."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.specialists import (
    SpecialistError,
    find_specialist,
    list_specialists,
    parse_agent_file,
)
from implflow.layout import API_CONTRACT, DESIGN_DOC, REVIEW_DOC


def _agent(
    name: str = "helper", tools: str = "tools: Read, Grep", body: str = "Be helpful."
) -> str:
    return f"---\nname: {name}\ndescription: A helper\nmodel: haiku\n{tools}\n---\n\n{body}\n"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- parsing ---------------------------------------------------------------------------


def test_parse_tools_as_comma_separated_string() -> None:
    spec = parse_agent_file(_agent(tools="tools: Read, Grep ,Bash(git diff:*)"), "x.md")
    assert spec.name == "helper"
    assert spec.description == "A helper"
    assert spec.model == "haiku"
    assert spec.tools == ["Read", "Grep", "Bash(git diff:*)"]
    assert spec.body == "Be helpful."
    assert spec.system_prompt() == "Be helpful."
    assert spec.source == "x.md"


def test_parse_tools_as_yaml_list_and_defaults() -> None:
    spec = parse_agent_file(_agent(tools="tools:\n  - Read\n  - Edit"), Path("a.md"))
    assert spec.tools == ["Read", "Edit"]
    bare = parse_agent_file("---\nname: bare\n---\nBody\n", "b.md")
    assert (bare.description, bare.model, bare.tools) == ("", None, [])
    inherit = parse_agent_file("---\nname: i\nmodel: inherit\n---\nBody\n", "i.md")
    assert inherit.model is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("no header here\n", "no YAML header"),
        ("", "no YAML header"),
        ("---\nname: x\nBody without a closing line\n", "not closed"),
        ("---\nname: [unclosed\n---\nBody\n", "bad YAML header"),
        ("---\n- a list\n---\nBody\n", "must be a mapping"),
        ("---\ndescription: nameless\n---\nBody\n", "no 'name'"),
        ("---\nname: '  '\n---\nBody\n", "no 'name'"),
        ("---\nname: x\n---\n\n", "body"),
        ("---\nname: x\ntools: 3\n---\nBody\n", "'tools'"),
        ("---\nname: x\nmodel: [a]\n---\nBody\n", "'model' must be a string"),
    ],
)
def test_parse_refuses_malformed_files_in_one_line(text: str, problem: str) -> None:
    with pytest.raises(SpecialistError) as caught:
        parse_agent_file(text, "agents/bad.md")
    message = str(caught.value)
    assert message.startswith("agents/bad.md: ")
    assert problem in message
    assert "\n" not in message
    assert isinstance(caught.value, ValueError)


# --- lookup ----------------------------------------------------------------------------


def test_lookup_order_repo_then_settings_dir_then_bundled(tmp_path: Path) -> None:
    repo, extra = tmp_path / "repo", tmp_path / "extra"
    repo.mkdir()
    bundled = find_specialist("backend-implementer", repo, extra)
    assert bundled.source == "bundled:backend-implementer.md"

    _write(extra / "backend-implementer.md", _agent("from-settings"))
    assert find_specialist("backend-implementer", repo, extra).name == "from-settings"

    repo_file = _write(repo / ".claude/agents/backend-implementer.md", _agent("from-repo"))
    found = find_specialist("backend-implementer", repo, extra)
    assert found.name == "from-repo"
    assert found.source == repo_file
    assert find_specialist("backend-implementer", repo, None).name == "from-repo"


def test_unknown_name_lists_what_is_available(tmp_path: Path) -> None:
    _write(tmp_path / ".claude/agents/mine.md", _agent("mine"))
    with pytest.raises(SpecialistError, match="unknown specialist 'nope'") as caught:
        find_specialist("nope", tmp_path)
    assert "backend-implementer" in str(caught.value)
    assert "mine" in str(caught.value)
    listed = list_specialists(tmp_path)  # the repo's and every bundled one, sorted
    assert {"backend-implementer", "mine"} <= set(listed) and listed == sorted(listed)
    assert "mine" not in list_specialists(tmp_path / "another-repo")


@pytest.mark.parametrize(
    "name", ["../x", "/etc/passwd", "a/b", "..", ".hidden", "", "UPPER", "a\\b", "x\n", "a" * 65]
)
def test_names_that_are_paths_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(SpecialistError, match="is not allowed"):
        find_specialist(name, tmp_path, tmp_path)


def test_repo_symlink_leading_outside_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    outside = _write(tmp_path / "secret.md", _agent("stolen", body="secret"))
    (repo / ".claude/agents").mkdir(parents=True)
    (repo / ".claude/agents/evil.md").symlink_to(outside)
    with pytest.raises(SpecialistError, match="outside the repository"):
        find_specialist("evil", repo)


def test_repo_agents_dir_symlinked_outside_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _write(tmp_path / "elsewhere/backend-implementer.md", _agent("stolen"))
    (repo / ".claude").mkdir(parents=True)
    (repo / ".claude/agents").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SpecialistError, match="outside the repository"):
        find_specialist("backend-implementer", repo)


def test_repo_symlink_inside_the_repo_is_fine(tmp_path: Path) -> None:
    target = _write(tmp_path / "docs/agent.md", _agent("linked"))
    (tmp_path / ".claude/agents").mkdir(parents=True)
    (tmp_path / ".claude/agents/linked.md").symlink_to(target)
    assert find_specialist("linked", tmp_path).name == "linked"


def test_bad_repo_file_names_itself(tmp_path: Path) -> None:
    _write(tmp_path / ".claude/agents/broken.md", "---\nname: [x\n---\nbody\n")
    with pytest.raises(SpecialistError, match=r"broken\.md: bad YAML header"):
        find_specialist("broken", tmp_path)


def test_bundled_specialist_states_the_targets(tmp_path: Path) -> None:
    spec = find_specialist("backend-implementer", tmp_path)
    assert spec.name == "backend-implementer"
    assert spec.tools == ["Read", "Write", "Edit", "Bash", "Glob", "Grep"]
    assert spec.description
    body = spec.body
    for needle in ("≥ 80 %", "< 200 ms", "≥ 1000 requests/s", "< 512 MB", "OWASP", "high-severity"):
        assert needle in body
    for needle in ("REST", "GraphQL", "WebSocket", "repositor", "transaction", "Caching"):
        assert needle in body
    for artifact in (REVIEW_DOC, DESIGN_DOC, API_CONTRACT):  # the paths the gates look for
        assert f"`{artifact}`" in body
    assert "Do not commit" in body


def test_agent_executors_resolve_the_task_specialist(tmp_path: Path) -> None:
    from temporalio.exceptions import ApplicationError

    from activities.executors.agent_common import specialist_prompt
    from implflow.models import PhaseInput, PhaseSpec

    agents = tmp_path / ".claude" / "agents"
    agents.mkdir(parents=True)
    (agents / "api-hardener.md").write_text(
        "---\nname: api-hardener\ndescription: d\n---\nHARDEN EVERY ENDPOINT.\n"
    )
    pin = PhaseInput(
        workflow_id="w",
        title="t",
        description="d",
        repo=str(tmp_path),
        executor="claude-code",
        phase=PhaseSpec(name="validate"),
        round=1,
        specialist="api-hardener",
    )
    assert "HARDEN EVERY ENDPOINT." in specialist_prompt(pin, tmp_path, None)
    default = specialist_prompt(pin.model_copy(update={"specialist": None}), tmp_path, None)
    assert "80" in default  # the bundled backend specialist states its targets
    with pytest.raises(ApplicationError) as info:
        specialist_prompt(pin.model_copy(update={"specialist": "nobody"}), tmp_path, None)
    assert info.value.type == "InvalidInput" and info.value.non_retryable
