"""A NUL character in any text that reaches the database is a clear 422 on both databases.

PostgreSQL refuses NUL in text with a driver error, SQLite stores it; without the engine-level
check a JSON body or form field holding ``\\u0000`` was a 500 on PostgreSQL only.
"""

from __future__ import annotations

from pair.accounts import service
from pair.core.node import Node
from tests.conftest import admin_test_client


def test_nul_in_json_bodies_is_422_and_writes_nothing(node: Node) -> None:
    client, h = admin_test_client(node)
    r = client.post("/api/tokens", headers=h["admin"], json={"user": "dm", "label": "ward\u00007"})
    assert r.status_code == 422, r.text
    assert "NUL" in r.json()["message"]
    r = client.post(
        "/api/ae-titles",
        headers=h["admin"],
        json={"ae_title": "CT1", "facility": "HOSPA", "description": "room\u00001"},
    )
    assert r.status_code == 422, r.text
    with node.db.session() as s:
        assert not [t for t in service.list_tokens(s) if "ward" in (t.label or "")]
        assert "CT1" not in {a.ae_title for a in service.list_ae_titles(s)}
    # the connection is still usable after the refusal
    assert client.get("/api/users", headers=h["admin"]).status_code == 200


def test_nul_in_a_cli_value_is_a_clear_error(node: Node) -> None:
    import pytest

    from pair.core.errors import Invalid

    with pytest.raises(Invalid, match="NUL"), node.db.session() as s:
        service.create_facility(s, "Clinic\u0000 C", "CLC")
    with node.db.session() as s:
        assert "CLC" not in {f.code for f in service.list_facilities(s)}
