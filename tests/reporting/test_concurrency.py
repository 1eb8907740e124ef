"""Two editors of one report: stale revisions get 409; concurrent writers never lose an update.

Runs on SQLite and PostgreSQL (``node`` fixture through ``world``). On PostgreSQL the second
writer waits on the row lock (SELECT ... FOR UPDATE) and then works on the first one's result;
on SQLite it fails at flush because the row's revision moved on.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from pair.accounts.models import User
from pair.audit.service import Actor
from pair.core.errors import Conflict
from pair.reporting import service

GOLDEN = yaml.safe_load((Path(__file__).parent / "data" / "golden.yaml").read_text())
BASE = GOLDEN["ct_base"]  # a complete negative CT report
TYPICAL_INPUTS = {
    **BASE,
    "ggo": "present",
    "ggo_side": "bilateral",
    "ggo_location": "peripheral",
    "ggo_rounded": "absent",
}


def _new(w: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    r = w.client.post(
        "/api/reports",
        json={"study_uid": w.study_uid, "module": "rsna-ct-covid", "inputs": inputs},
        headers=w.h("rad1"),
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _actor(w: Any, name: str = "rad1") -> Actor:
    with w.node.db.session() as s:
        user = s.scalar(select(User).where(User.name == name))
        assert user is not None
        return Actor(user.id, user.name, user.facility_id, user.role, "test")


def test_stale_revision_gets_409_and_current_one_passes(world: Any) -> None:
    w = world
    created = _new(w, BASE)
    rid, rev = created["id"], created["revision"]
    url = f"/api/reports/{rid}"
    saved = w.client.put(
        f"{url}/inputs",
        headers=w.h("rad1"),
        json={"inputs": TYPICAL_INPUTS, "expected_revision": rev},
    )
    assert saved.status_code == 200, saved.text
    assert saved.json()["revision"] == rev + 1
    # a second editor still holding the first revision
    stale = w.client.put(
        f"{url}/inputs", headers=w.h("adm1"), json={"inputs": BASE, "expected_revision": rev}
    )
    assert stale.status_code == 409
    assert "changed by someone else" in stale.json()["message"]
    assert f"you loaded revision {rev}" in stale.json()["message"]
    stale_sign = w.client.post(f"{url}/sign", headers=w.h("rad1"), json={"expected_revision": rev})
    assert stale_sign.status_code == 409
    current = w.client.get(url, headers=w.h("rad1")).json()
    assert current["status"] == "draft" and current["current"]["inputs"] == TYPICAL_INPUTS
    signed = w.client.post(
        f"{url}/sign", headers=w.h("rad1"), json={"expected_revision": current["revision"]}
    )
    assert signed.status_code == 200, signed.text
    assert signed.json()["revision"] == current["revision"] + 1
    assert (
        "Commonly reported imaging features"
        in w.client.get(url, headers=w.h("rad1")).json()["current"]["text"]
    )
    stale_amend = w.client.post(
        f"{url}/amend",
        headers=w.h("rad1"),
        json={"reason": "typo", "expected_revision": current["revision"]},
    )
    assert stale_amend.status_code == 409
    amended = w.client.post(
        f"{url}/amend",
        headers=w.h("rad1"),
        json={"reason": "typo", "expected_revision": signed.json()["revision"]},
    )
    assert amended.status_code == 200 and amended.json()["current_version"] == 2
    # without a revision the API keeps working as before (last writer after the lock wins)
    assert (
        w.client.put(f"{url}/inputs", headers=w.h("rad1"), json={"inputs": BASE}).status_code == 200
    )


def _run(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except Exception as exc:  # reported to the test thread
            out["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    return t, out


@pytest.mark.parametrize("expected", [False, True], ids=["no-revision", "loaded-revision"])
def test_sign_racing_a_draft_save_never_signs_stale_inputs(world: Any, expected: bool) -> None:
    """Editor A saves new inputs and holds its transaction open; editor B signs meanwhile.
    B must either fail with 409 or sign A's inputs, never the ones it read before A's save."""
    w = world
    created = _new(w, TYPICAL_INPUTS)
    rid, rev = created["id"], created["revision"]
    a_actor, b_actor = _actor(w, "adm1"), _actor(w, "rad1")
    a_saved, a_commit = threading.Event(), threading.Event()

    def editor_a() -> None:
        with w.node.db.session() as s:
            service.update_draft(s, a_actor, rid, BASE, expected_revision=rev)
            a_saved.set()
            assert a_commit.wait(30)

    def editor_b() -> Any:
        return service.sign_and_store(
            w.node, b_actor, rid, None, expected_revision=rev if expected else None
        )

    ta, a_out = _run(editor_a)
    assert a_saved.wait(30)
    tb, b_out = _run(editor_b)
    time.sleep(0.5)  # B reaches the row lock (PostgreSQL) or the write lock (SQLite)
    assert tb.is_alive(), b_out  # it waits for A instead of writing past it
    a_commit.set()
    ta.join(30)
    tb.join(30)
    assert "error" not in a_out, a_out
    with w.node.db.session() as s:
        report = service.load_report(s, b_actor, rid)
        version = report.versions[0]
        assert version.inputs == BASE  # A's save is kept
        if "error" in b_out:
            assert isinstance(b_out["error"], Conflict), b_out
            assert "changed by someone else" in b_out["error"].message
            assert version.status == "draft" and version.signed_at is None
        else:
            assert not expected and w.node.db.url.startswith("postgresql")
            # B waited for A's commit and signed what A saved, consistently
            assert version.status == "final"
            assert version.evaluation is not None
            assert version.evaluation["endpoint"] == "negative"
            assert "No CT findings present" in version.text
    if w.node.db.url.startswith("sqlite") or expected:
        assert "error" in b_out


def test_two_concurrent_amendments_make_one_version(world: Any) -> None:
    w = world
    rid = _new(w, BASE)["id"]
    assert w.client.post(f"/api/reports/{rid}/sign", headers=w.h("rad1")).status_code == 200
    actor = _actor(w, "rad1")
    first_done, release = threading.Event(), threading.Event()

    def first() -> None:
        with w.node.db.session() as s:
            service.amend(s, actor, rid, "first")
            first_done.set()
            assert release.wait(30)

    def second() -> Any:
        with w.node.db.session() as s:
            return service.amend(s, actor, rid, "second").version

    t1, out1 = _run(first)
    assert first_done.wait(30)
    t2, out2 = _run(second)
    time.sleep(0.5)
    release.set()
    t1.join(30)
    t2.join(30)
    assert "error" not in out1, out1
    assert isinstance(out2.get("error"), Conflict), out2
    with w.node.db.session() as s:
        report = service.load_report(s, actor, rid)
        assert [v.version for v in report.versions] == [1, 2]
        assert report.versions[1].amend_reason == "first"
