from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pair.accounts import service as accounts
from pair.cde import catalog
from pair.cde.catalog import DATA_DIR, Catalog, parse_set, validate_set_json
from pair.core.errors import Invalid, NotFound
from pair.core.node import Node
from pair.web.app import create_app


@pytest.mark.parametrize("path", sorted(DATA_DIR.glob("*.cdes.json")), ids=lambda p: p.name)
def test_every_shipped_set_matches_the_schema(path: Path) -> None:
    validate_set_json(json.loads(path.read_text()), path.name)


def test_schema_rejects_broken_sets() -> None:
    data = json.loads((DATA_DIR / "RDES296.cdes.json").read_text())
    data["elements"][0]["value_set"]["values"][0]["code"] = "bad code"
    del data["elements"][1]["value_set"]
    data["status"]["name"] = "Draft"
    with pytest.raises(Invalid) as err:
        validate_set_json(data, "broken")
    msg = err.value.message
    assert "elements/0/value_set/values/0/code" in msg
    assert "status/name" in msg
    assert "elements/1" in msg


def test_lookup_values_and_verification_status() -> None:
    c = catalog()
    assert c is catalog()  # cached
    assert set(c.sets) == {"RDES296", "RDES76", "RDES268", "PAIR-RDES1"}
    assert c.set("RDES296").name == "CT Chest - COVID-19"
    assert c.set("PAIR-RDES1").status == "Proposed"
    ggo = c.element("RDE1360")
    assert ggo.name == "Ground glass opacity" and ggo.verification == "inferred"
    assert [v.name for v in ggo.values] == ["absent", "present", "indeterminate", "unknown"]
    assert c.value("RDE1360", "present").code == "RDE1360.1"
    assert c.value("RDE1360", "RDE1360.3").name == "unknown"
    assert c.value("RDE1359", "typical pattern").code == "RDE1359.1"
    assert c.find_value("PAIR-RDE9.5").name == "CO-RADS 5"
    assert c.element("PAIR-RDE14").raw["index_codes"][0]["code"] == "RID1303"
    assert c.element("RDES268-E4").verification == "unassigned"
    with pytest.raises(Invalid, match=r"no value 'maybe'; allowed: RDE1360.0 \(absent\)"):
        c.value("RDE1360", "maybe")
    with pytest.raises(NotFound, match="No CDE element 'RDE9999999'"):
        c.element("RDE9999999")
    with pytest.raises(Invalid, match="integer element"):
        c.value("PAIR-RDE19", "3")


def test_export_round_trip(tmp_path: Path) -> None:
    c = catalog()
    for set_id in c.sets:
        c.export_set(set_id, tmp_path / f"{set_id}.cdes.json")
    again = Catalog.load(tmp_path)
    assert again.sets.keys() == c.sets.keys()
    assert again.element("RDE1606") == c.element("RDE1606")


def test_duplicate_and_misparented_elements_are_rejected() -> None:
    data = json.loads((DATA_DIR / "RDES76.cdes.json").read_text())
    s = parse_set(data)
    with pytest.raises(Invalid, match="defined twice"):
        Catalog([s, s])
    data["elements"][0]["parent_set"] = "RDES1"
    with pytest.raises(Invalid, match="parent_set"):
        parse_set(data)


def test_api(node: Node) -> None:
    with node.db.session() as s:
        f = accounts.create_facility(s, "Clinic")
        u = accounts.create_user(s, f, "res1", "researcher", "Ward7-Lumen-Quartz")
        _, token = accounts.create_token(s, u)
    client = TestClient(create_app(node))
    assert client.get("/api/cdes").status_code == 401
    h = {"Authorization": f"Bearer {token}"}
    listing = client.get("/api/cdes", headers=h).json()
    ids = {s["id"]: s for s in listing}
    assert ids["RDES296"]["elements"][1]["verification"] == "inferred"
    element = client.get("/api/cdes/RDE1360", headers=h).json()
    assert element["verification"] == "inferred" and element["parent_set"] == "RDES296"
    assert client.get("/api/cdes/PAIR-RDES1", headers=h).json()["status"]["name"] == "Proposed"
    missing = client.get("/api/cdes/RDE0", headers=h)
    assert missing.status_code == 404
    assert "No CDE set or element with id 'RDE0'" in missing.json()["message"]
