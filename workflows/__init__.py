"""Deterministic orchestration only: no I/O, no clocks, no randomness."""

from workflows.implementation import ImplementationWorkflow

WORKFLOWS = [ImplementationWorkflow]

__all__ = ["WORKFLOWS", "ImplementationWorkflow"]
