"""Executor contract tests (real agent CLIs against scripted local model servers)."""
