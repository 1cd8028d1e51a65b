"""The peer: the same 8 steps and one interrupt on LangGraph with its SQLite checkpointer.

LangGraph runs the graph in this process and checkpoints every step to a SQLite file, so
its figure is the in-process floor of "durable steps with a human interrupt": no separate
server, no worker failover, no git. It is measured only when ``langgraph`` and
``langgraph-checkpoint-sqlite`` are installed (``pip install -e '.[bench]'``); otherwise
the table says so.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import itertools
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from implflow.models import PHASES

PACKAGES = ("langgraph", "langgraph-checkpoint-sqlite")
INTERRUPT_AFTER = "design"
"""Where the graph stops for a person, as implflow's default first approval."""


def available() -> tuple[bool, str]:
    """Whether the peer can run here, and if not, why (with the command that fixes it)."""
    for module in ("langgraph", "langgraph.checkpoint.sqlite"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return False, f"{module} is not installed: pip install -e '.[bench]'"
    return True, ""


def versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in PACKAGES}


class _State(TypedDict):
    done: list[str]


@dataclass(frozen=True)
class PeerRun:
    total_s: float
    """From the first invoke to the end of the last step, without the person's wait."""
    resume_to_next_s: float
    """From the resume call to the start of the step after the interrupt."""
    steps: int


class PeerRunner:
    """A compiled 8-step graph with ``interrupt_after=[design]`` on a SQLite file."""

    def __init__(self, db: Path) -> None:
        # Imported by name: the peer is optional (the `bench` extra), and the type check
        # of this module must not need it installed.
        sqlite_saver: Any = importlib.import_module("langgraph.checkpoint.sqlite").SqliteSaver
        graphs: Any = importlib.import_module("langgraph.graph")
        START, END = graphs.START, graphs.END

        self._next_started = 0.0
        graph: Any = graphs.StateGraph(_State)
        for name in PHASES:
            graph.add_node(name, self._step(name))
        graph.add_edge(START, PHASES[0])
        for a, b in itertools.pairwise(PHASES):
            graph.add_edge(a, b)
        graph.add_edge(PHASES[-1], END)
        self._conn = sqlite3.connect(str(db), check_same_thread=False)
        self._app = graph.compile(
            checkpointer=sqlite_saver(self._conn), interrupt_after=[INTERRUPT_AFTER]
        )

    def _step(self, name: str) -> Any:
        after_interrupt = PHASES[PHASES.index(INTERRUPT_AFTER) + 1]

        def step(state: _State) -> dict[str, list[str]]:
            if name == after_interrupt:
                self._next_started = time.perf_counter()
            return {"done": [*state["done"], name]}

        return step

    def run_once(self, thread_id: str) -> PeerRun:
        """Run to the interrupt, resume at once, run to the end."""
        config = {"configurable": {"thread_id": thread_id}}
        began = time.perf_counter()
        self._app.invoke({"done": []}, config)
        resumed = time.perf_counter()
        final = self._app.invoke(None, config)
        ended = time.perf_counter()
        steps = len(final["done"])
        if steps != len(PHASES):
            raise RuntimeError(f"LangGraph ran {steps} steps, expected {len(PHASES)}")
        return PeerRun(
            total_s=ended - began, resume_to_next_s=self._next_started - resumed, steps=steps
        )

    def close(self) -> None:
        self._conn.close()
