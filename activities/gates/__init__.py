"""Quality gates: run a phase's checks and judge the standard reports real tools write.

``runner.run_gate`` runs one gate; ``checks/`` holds one module per check kind and the
table that dispatches to them; ``parsers`` reads JUnit, Cobertura, SARIF and OpenAPI
into the small models of ``report_models``. Nothing here trusts what an agent says about
its own work. The map of the package is in ``README.md``.
"""
