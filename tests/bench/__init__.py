"""Smoke runs of ``python -m bench`` and ``python -m bench.faults`` at tiny sizes."""
