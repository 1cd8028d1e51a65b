"""What prepare, the gates and people established about one run of a task.

Deterministic bookkeeping beside ``ImplementationWorkflow``: the executor and base commit
prepare found, which patched behaviours are on, the task branch, the load baseline and the
service command the gates measure with, and whether a person just decided.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from implflow.models import GateInput, GateResult, ImplementationInput, PrepareResult


@dataclass
class RunFacts:
    """Facts of the run; the workflow holds one."""

    executor: str = ""
    base_commit: str | None = None
    gates: bool = False
    with_gates_and_budgets: bool = False
    gate_decisions: bool = False
    prepared: bool = False
    branch: str | None = None
    pull_request: str | None = None
    baseline: dict[str, float] = field(default_factory=dict)
    service: tuple[list[str], str | None] | None = None
    """The service command and its readiness path, once a gate proposed them."""
    service_from: str | None = None
    """The phase whose gate proposed the service command (design)."""
    tip: str | None = None
    """The task branch's newest commit: a round's commit, then its gate's report commit."""
    decided: bool = False
    """A person just decided: the next phase round runs ahead of queued work."""

    def prepared_with(self, prep: PrepareResult, task: ImplementationInput) -> None:
        """What prepare found; gates run when asked (``on``) or, by default, for agents."""
        self.executor = prep.executor
        self.base_commit = prep.base_commit
        self.branch = prep.branch or self.branch
        self.gates = self.with_gates_and_budgets and (
            task.gates == "on" or (task.gates == "auto" and prep.executor != "shell")
        )
        self.prepared = True

    def take_decided(self) -> bool:
        decided, self.decided = self.decided, False
        return decided

    def learn(self, phase: str, gate: GateResult) -> None:
        """Keep what a gate measured that later gates compare against or run with."""
        self.tip = gate.commit or self.tip
        if not self.baseline:  # the first load figures measured are the baseline
            self.baseline = gate.load_baseline()
        if gate.service_command and self.service_from in (None, phase):
            # The phase that proposed how the service runs fixes it for the task: it is shown
            # in that phase's approval; later phases cannot change how they are measured.
            self.service_from = phase
            self.service = (list(gate.service_command), gate.service_health_path)

    def gate_input(
        self, workflow_id: str, task: ImplementationInput, phase: str, round: int
    ) -> GateInput:
        """What a phase's gate is given: thresholds, the base commit, baseline and service."""
        command, health = self.service or (None, None)
        return GateInput(
            workflow_id=workflow_id,
            repo=task.repo,
            phase=phase,
            round=round,
            thresholds=task.thresholds,
            base_commit=self.base_commit,
            baseline=self.baseline,
            service_command=command,
            service_health_path=health,
            branch_tip=self.tip,
        )
