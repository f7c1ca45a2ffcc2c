"""Browser (end-to-end) fixtures: one app server per module, one headless Chromium per test session.

The browser is Debian's Chromium (``/usr/bin/chromium``, or ``$DRAFTSCOPE_CHROMIUM``) driven by Playwright; no browser
is ever downloaded (never run ``playwright install``). Page helpers live in ``tests/e2e/gradio_ui.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest

from tests.e2e.gradio_ui import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TINY_TARGET,
    VIEWPORT,
    free_port,
    open_app,
    screenshot,
)


@pytest.fixture(scope="module")
def app_url():
    """The app on a free local port, closed after the module.

    It is built with ``$DRAFTSCOPE_DEFAULT_TARGET=tiny-llama`` (the app's test hook for its default target); pages
    still select the tiny target in the dropdown when the app ignores the hook.
    """
    previous = os.environ.get("DRAFTSCOPE_DEFAULT_TARGET")
    os.environ["DRAFTSCOPE_DEFAULT_TARGET"] = TINY_TARGET
    try:
        from app.main import build_demo

        demo = build_demo()
    finally:
        if previous is None:
            os.environ.pop("DRAFTSCOPE_DEFAULT_TARGET", None)
        else:
            os.environ["DRAFTSCOPE_DEFAULT_TARGET"] = previous
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    try:
        yield demo.local_url
    finally:
        demo.close()


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"browser tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium; set "
                    "$DRAFTSCOPE_CHROMIUM for another path). Never run `playwright install`.")
    sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright Python package")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.e2e_failed = report.failed


@pytest.fixture
def new_page(browser, app_url, request):
    """Factory: a page in a fresh browser context (so its own Gradio session) with the app open on the tiny target.

    When the test fails, every page it opened is saved as ``<test>-failed[-k].png`` next to the scenario screenshots.
    """
    contexts = []

    def make(target: str = TINY_TARGET):
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(30_000)
        contexts.append(context)
        page = context.new_page()
        open_app(page, app_url, target)
        return page

    yield make
    failed = getattr(request.node, "e2e_failed", False)
    for k, context in enumerate(contexts):
        if failed:
            for page in context.pages:
                try:
                    screenshot(page, f"{request.node.name}-failed" + (f"-{k}" if k else ""))
                except Exception:  # a screenshot must not hide the real failure
                    pass
        context.close()


@pytest.fixture
def app_page(new_page):
    return new_page()
