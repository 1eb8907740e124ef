"""Sign-in, the success banner, sign-out and the portal's pages in Chromium under the
Content-Security-Policy, on SQLite and PostgreSQL: every page works with its scripts and styles
from static files, and the browser reports no CSP violation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from pair.core.node import Node
from tests.portal_data import PASSWORD, build_world
from tests.web.test_browser import browser, serve_app  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.browser]
NEW_PASSWORD = "Ward7-Lumen-Quartz"
PAGES = [
    "/",
    "/cases",
    "/upload",
    "/cdes",
    "/algorithms",
    "/evaluations",
    "/evaluations/new",
    "/admin/users",
    "/admin/tokens",
    "/admin/ae-titles",
    "/admin/deid",
    "/admin/quarantine",
    "/admin/audit",
    "/admin/sessions",
    "/account/password",
]


@pytest.fixture
def page(browser: Browser, node: Node) -> Iterator[tuple[Page, str, list[str]]]:  # noqa: F811
    """A browser page, the server's base URL and the CSP violations / script errors seen."""
    with node.db.session() as s:
        build_world(s)
    problems: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        text = msg.text
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            problems.append(text)

    with serve_app(node) as base:
        context = browser.new_context()
        p = context.new_page()
        p.on("console", on_console)
        p.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        try:
            yield p, base, problems
        finally:
            context.close()


def test_sign_in_banner_sign_out_and_pages_under_the_csp(
    page: tuple[Page, str, list[str]],
) -> None:
    p, base, problems = page
    p.goto(base + "/cases")
    expect(p.get_by_role("heading", name="Sign in to PAIR")).to_be_visible()
    p.get_by_label("User name").fill("admin-a")
    p.get_by_label("Password").fill(PASSWORD)
    p.get_by_role("button", name="Sign in").click()
    expect(p).to_have_url(base + "/cases")
    expect(p.locator(".userbox")).to_contain_text("admin-a")

    case = p.locator("a[href^='/cases/']").first.get_attribute("href")
    for path in [*PAGES, case]:
        assert path
        response = p.goto(base + path)
        assert response is not None and response.status == 200, path
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    # the error page's "Go back" link works without a javascript: URL
    p.goto(base + "/account/password")
    response = p.goto(base + "/no-such-page")
    assert response is not None and response.status == 404
    p.get_by_role("link", name="Go back").click()
    expect(p).to_have_url(base + "/account/password")

    # scripts from static files run: the CDE filter (was an inline script)
    p.goto(base + "/cdes")
    rows = p.locator("#cde-table tbody tr")
    total = rows.count()
    assert total > 1
    p.locator("#cde-filter").fill("zzzz-no-such-element")
    expect(p.locator("#cde-table tbody tr:visible")).to_have_count(0)

    # the banner comes from the session after a form, never from the URL
    p.goto(base + "/admin/users")
    p.locator("#u-name").fill("banner-user")
    p.locator("#u-role").select_option("radiologist")
    p.locator("#u-password").fill(NEW_PASSWORD)
    p.get_by_role("button", name="Create user").click()
    expect(p.get_by_role("status")).to_contain_text("User banner-user created.")
    assert "?" not in p.url
    p.reload()
    expect(p.get_by_text("User banner-user created.")).to_have_count(0)
    p.goto(base + "/admin/users?ok=%3Cb%3Epwned%3C/b%3E")
    expect(p.get_by_text("pwned")).to_have_count(0)

    # the admin sees this session in the session list
    p.goto(base + "/admin/sessions")
    expect(p.locator("#sessions-table")).to_contain_text("this session")

    # sign-out: the banner says so, and the pages ask for sign-in again
    p.get_by_role("button", name="Sign out").click()
    expect(p.get_by_role("heading", name="Sign in to PAIR")).to_be_visible()
    expect(p.get_by_role("status")).to_contain_text("You have signed out.")
    p.goto(base + "/admin/users")
    expect(p.get_by_role("heading", name="Sign in to PAIR")).to_be_visible()

    assert problems == [], problems
