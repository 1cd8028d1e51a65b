"""Start an implflow worker: ``python worker.py`` (same as ``implflow worker``).

Configuration comes from the environment: ``TEMPORAL_ADDRESS`` and friends for
the connection, ``IMPLFLOW_*`` for everything else (see README).
"""

from implflow.worker import main

if __name__ == "__main__":
    main()
