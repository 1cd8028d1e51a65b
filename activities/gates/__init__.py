"""Quality gates: run a phase's checks and turn the tools' standard reports into verdicts.

``reports`` parses JUnit XML, Cobertura XML, SARIF and OpenAPI documents into the small
models of ``verdicts``; nothing here trusts what an agent says about its own work.
"""
