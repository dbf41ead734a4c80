from __future__ import annotations

import os
from pathlib import Path

import pytest
from lab_server import CHROMIUM_ARGS, find_chromium, stop_servers

ARTIFACTS = Path(os.environ.get("E2E_ARTIFACTS", Path(__file__).parents[2] / "e2e-artifacts"))


def _skip_or_fail(reason: str) -> None:
    # CI sets E2E_REQUIRE_BROWSER=1 so a missing browser fails instead of silently skipping
    if os.environ.get("E2E_REQUIRE_BROWSER") == "1":
        pytest.fail(f"E2E_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _skip_or_fail("playwright is not installed (pip install playwright)")
    path = find_chromium()
    if path is None:
        _skip_or_fail("no Chromium found (apt-get install chromium, or set CHROMIUM_PATH)")
    return path


@pytest.fixture(scope="module")
def browser(chromium_path):
    """One headless Chromium for a test module (a launch is about 1 s); each test gets a fresh
    context of it, with its own storage, from :func:`page`. Not for the session: Playwright's
    sync API keeps an asyncio loop running in this thread while it is open, and the tests
    after the e2e ones call asyncio.run."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True,
                                    args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        yield pg
    finally:
        context.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def pytest_sessionfinish(session, exitstatus):
    # the JupyterLab and Notebook 7 servers serve every e2e test of the session (lab_server)
    stop_servers(ARTIFACTS)
