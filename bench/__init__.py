"""Benchmarks and fault-injection runs for implflow; results are kept as files.

- ``python -m bench`` (``--quick`` for a smoke size): per-phase overhead against bare
  Temporal, growth with the number of task branches, approval latency, load on one worker,
  crash recovery, and the LangGraph + SQLite peer (``bench/perf.py``, ``bench/peer.py``).
- ``python -m bench.faults``: a random fault at a random moment of a small task, N times
  (``bench/faults.py``).
- ``python bench/loadtool_ceiling.py``: the load probe's tool against a trivial endpoint.

Everything here starts its own dev server and workers on free 127.0.0.1 ports and stops
them again (``bench/harness.py``), even on Ctrl-C.
"""
