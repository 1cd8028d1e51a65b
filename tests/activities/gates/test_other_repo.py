"""Another small Python service, with no gate configuration: the Python preset runs unchanged."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from activities.gates.runner import run_gate
from implflow.models import Thresholds

FILES = {
    "pyproject.toml": """
        [project]
        name = "greeter"
        version = "0.1.0"
        requires-python = ">=3.11"
    """,
    "greeter/__init__.py": '''
        """Greets people over HTTP."""


        def greeting(name: str) -> str:
            """The greeting for ``name``."""
            return f"hello, {name}"
    ''',
    "greeter/__main__.py": '''
        """Run the greeter: ``python -m greeter --port 8000`` (binds 127.0.0.1)."""

        import argparse
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from greeter import greeting


        class Handler(BaseHTTPRequestHandler):
            """GET /health and GET /greet/<name>."""

            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                """Answer with JSON."""
                name = self.path.rsplit("/", 1)[-1] or "world"
                body = json.dumps({"message": greeting(name)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                """Quiet."""


        def main() -> None:
            """Parse the port and serve forever."""
            parser = argparse.ArgumentParser()
            parser.add_argument("--port", type=int, default=8000)
            port = parser.parse_args().port
            # The default listen backlog (5) drops connections when a load test opens
            # dozens at once; a real service sizes it for its clients.
            ThreadingHTTPServer.request_queue_size = 128
            ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


        if __name__ == "__main__":
            main()
    ''',
    "tests/test_greeter.py": '''
        """Tests of the greeting."""

        from greeter import greeting


        def test_greeting() -> None:
            """It greets by name."""
            assert greeting("ada") == "hello, ada"
    ''',
}


async def test_python_preset_on_a_repo_without_gate_config(tmp_path: Path) -> None:
    repo = tmp_path / "greeter"
    for name, text in FILES.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    assert not (repo / ".implflow").exists()  # no gates.toml: detection and presets only

    for phase in ("implement", "validate", "verify"):
        verdict = await run_gate(phase, repo, 1, Thresholds())
        assert verdict.config_source == "preset:python"
        assert verdict.passed, f"{phase}: {verdict.failure_summary}"
    load = next(c for c in verdict.checks if c.name == "load")
    assert float(load.figures["requests_per_s"]) > 0
    assert float(load.figures["p95_ms"]) < 200

    # The one test covers the greeting, not the server: measured, not trusted.
    tested = await run_gate("test", repo, 1, Thresholds())
    coverage = next(c for c in tested.checks if c.name == "coverage")
    assert not tested.passed and float(coverage.figures["line_rate_pct"]) < 80
    assert "below the 80 % threshold" in tested.failure_summary
