"""The Temporal Web UI shows an implflow task: title, details checklist, workflows list.

A real browser (Debian's ``chromium``, driven by the ``playwright`` package; no
browser is ever downloaded) against the Web UI of a private dev server, with an
in-process worker serving the ``implflow`` task queue. Outside CI the test is
skipped when chromium or playwright is missing; under ``CI`` it fails instead.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from pathlib import Path
from urllib.parse import quote

import pytest

from implflow.client import ImplflowClient
from implflow.connection import connect
from implflow.models import TaskState
from implflow.server import dev_server, free_port, port_open
from implflow.settings import Settings
from implflow.worker import run_worker
from tests.helpers import git_repo

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
TITLE = "Add a health endpoint"


def _missing() -> str | None:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} not found (apt-get install -y chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install playwright)"
    return None


@pytest.fixture
def browser_ready() -> None:
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"UI test cannot run under CI: {missing}")
        pytest.skip(missing)


async def test_web_ui_shows_title_details_and_list(browser_ready: None, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    ui_port = free_port()
    repo = git_repo(tmp_path / "repo")
    settings = Settings(data_dir=tmp_path / "data", executor="shell", shutdown_grace_s=5)
    async with dev_server(ui_port=ui_port, log_file=tmp_path / "server.log") as address:
        client = await connect(address)
        stop = asyncio.Event()
        worker = asyncio.create_task(
            run_worker(settings, stop=stop, client=client, handle_signals=False)
        )
        try:
            flow = ImplflowClient(client)
            wid = await flow.start(
                {
                    "title": TITLE,
                    "description": "GET /health returns 200",
                    "repo": str(repo),
                    "executor": "shell",
                }
            )
            async with asyncio.timeout(30):
                seen = [s async for s in flow.watch(wid, interval_s=0.3)]
            status = seen[-1]
            assert status.state == TaskState.AWAITING_APPROVAL, status
            assert status.current_phase == "design", status
            for _ in range(100):  # the UI port may open after the gRPC one
                if port_open("127.0.0.1", ui_port):
                    break
                await asyncio.sleep(0.1)

            base = f"http://127.0.0.1:{ui_port}/namespaces/default"
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
                )
                try:
                    page = await browser.new_page(viewport={"width": 1400, "height": 1200})
                    page.set_default_timeout(15_000)
                    expect.set_options(timeout=15_000)

                    # The workflow page: summary and current details (User Metadata tab;
                    # each is markdown rendered in its own iframe).
                    await page.goto(f"{base}/workflows/{wid}")
                    await expect(page.get_by_text(wid).first).to_be_visible()
                    await page.get_by_role("tab", name="User Metadata").click()
                    summary = page.frame_locator("#user-metadata-summary").locator("body")
                    await expect(summary).to_contain_text(TITLE)
                    details = page.frame_locator("#user-metadata-current-details").locator("body")
                    await expect(details).to_contain_text("awaiting approval")
                    await page.screenshot(path=str(tmp_path / "workflow.png"), full_page=True)
                    shown = {
                        " ".join(line.split())
                        for line in (await details.inner_text()).splitlines()
                        if line.strip()
                    }
                    assert f"{TITLE} — awaiting_approval" in shown, shown
                    assert any(
                        line.startswith("[x] design — done, round 1")
                        and line.endswith("— awaiting approval")
                        for line in shown
                    ), shown
                    for phase in ("implement", "validate", "test", "verify"):
                        assert f"[ ] {phase} — pending" in shown, shown
                    assert any(line.startswith("Waiting since") for line in shown), shown

                    # The workflows list; then filtered on the search attribute the README
                    # documents, with the ImplState/ImplPhase columns added.
                    await page.goto(f"{base}/workflows")
                    row = page.get_by_test_id("workflows-summary-configurable-table-row")
                    await expect(row.filter(has_text=wid)).to_have_count(1)
                    query = quote("ImplState='awaiting_approval'")
                    await page.goto(f"{base}/workflows?query={query}")
                    await expect(row).to_have_count(1)
                    await expect(row).to_contain_text(wid)
                    configure = page.get_by_test_id("workflows-summary-table-configuration-button")
                    await configure.click()
                    for name in ("ImplState", "ImplPhase"):
                        await page.get_by_test_id(f"orderable-list-item-{name}-add-button").click()
                    await page.get_by_test_id("drawer-close-button").click()
                    await expect(page.get_by_test_id("drawer-close-button")).to_be_hidden()
                    for text in (
                        "Running",
                        "ImplementationWorkflow",
                        "awaiting_approval",
                        "design",
                    ):
                        await expect(row).to_contain_text(text, ignore_case=True)
                    await expect(page.get_by_role("columnheader", name="ImplState")).to_be_visible()
                    await expect(row.get_by_text("awaiting_approval", exact=True)).to_be_visible()
                    await page.set_viewport_size({"width": 2200, "height": 700})
                    await row.get_by_text("design", exact=True).scroll_into_view_if_needed()
                    await page.screenshot(path=str(tmp_path / "list.png"), full_page=True)
                finally:
                    await browser.close()
        finally:
            stop.set()
            await asyncio.wait_for(worker, 30)
