"""An impossible date in the case search is refused with a sentence (issue 15), not silently
matched as text; both YYYY-MM-DD and YYYYMMDD are accepted."""

from __future__ import annotations

from fastapi.testclient import TestClient

from pair.core.node import Node
from pair.web.app import create_app
from tests.portal_data import build_world
from tests.web.test_pages import HTML, sign_in


def test_invalid_search_dates_are_refused_with_a_sentence(sqlite_node: Node) -> None:
    with sqlite_node.db.session() as s:
        build_world(s)
    c = TestClient(create_app(sqlite_node))
    sign_in(c, "radiologist-a")
    page = c.get("/cases?study_date_from=2020-13-45", headers=HTML)
    assert page.status_code == 200
    assert "Study date from &#39;2020-13-45&#39; is not a date" in page.text
    assert "0 cases found" in page.text or 'id="result-count"' not in page.text
    api = c.get("/api/cases?study_date_to=31/12/2020")
    assert api.status_code == 422 and "is not a date" in api.json()["message"]
    good = c.get("/cases?study_date_from=20200101&study_date_to=2020-12-31", headers=HTML)
    assert "is not a date" not in good.text and "cases found" in good.text
