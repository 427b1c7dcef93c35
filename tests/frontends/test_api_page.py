"""The interactive API page at `/docs`, in a real headless Chromium against the production-shaped server:
it opens without a token, shows every operation of `/openapi.json`, and a request tried from it with a
token entered under "Authorize" answers 200 (the admin API, which refuses a caller without one)."""

from __future__ import annotations

import json

import httpx

from tests.browser import Browser

# React reads an input's value through its own setter: set it so, then announce the change.
TYPE_INTO = """(input, text) => {
  Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, "value").set.call(input, text);
  input.dispatchEvent(new Event("input", {bubbles: true}));
}"""


def test_the_page_and_its_files_open_without_a_token_and_nothing_else_is_served(gateway):
    page = httpx.get(f"{gateway.url}/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in page.text and "cdn" not in page.text.lower()
    assert httpx.get(f"{gateway.url}/docs/swagger-ui-bundle.js").status_code == 200
    missing = httpx.get(f"{gateway.url}/docs/index.html", headers=gateway.headers())
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


def test_the_page_shows_the_document_and_tries_a_request_with_a_token(gateway):
    operations = sum(1 for item in httpx.get(f"{gateway.url}/openapi.json").json()["paths"].values()
                     for method in item if method in ("get", "put", "post", "delete"))
    token = gateway.token(scopes="admin")
    with Browser(f"{gateway.url}/docs") as browser:
        assert browser.wait_for(f"document.querySelectorAll('.opblock').length === {operations}")
        # Authorize: the bearer token into the dialog, then close it.
        browser.evaluate("document.querySelector('.auth-wrapper .authorize').click()")
        browser.wait_for("!!document.querySelector('.modal-ux input')")
        browser.evaluate(f"({TYPE_INTO})(document.querySelector('.modal-ux input'), {json.dumps(token)})")
        browser.evaluate("document.querySelector('.modal-ux .auth-btn-wrapper button.authorize').click()")
        browser.evaluate("document.querySelector('.modal-ux button.btn-done').click()")
        # GET /admin/models: open it, "Try it out", "Execute", read the status the page shows.
        op = "document.querySelector('#operations-admin-adminModels')"
        browser.evaluate(f"{op}.querySelector('.opblock-summary-control').click()")
        browser.wait_for(f"!!{op}.querySelector('.try-out__btn')")
        browser.evaluate(f"{op}.querySelector('.try-out__btn').click()")
        browser.wait_for(f"!!{op}.querySelector('button.execute')")
        browser.evaluate(f"{op}.querySelector('button.execute').click()")
        status = browser.wait_for(f"{op}.querySelector('.live-responses-table tr.response .response-col_status')?.textContent.trim()")
        assert status == "200", status
        body = browser.evaluate(f"{op}.querySelector('.live-responses-table tr.response .response-col_description pre')?.textContent")
        assert "digits-sklearn" in body
