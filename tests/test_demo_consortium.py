"""``make demo`` as a consortium (issue 13): a hub and three sites as separate processes on
loopback. Each site imports its own synthetic cohort, evaluates the demo algorithm and shares
with the hub; the hub holds every site's studies and their evaluation feedback, a site pulls
the other sites' cases from the hub's feed, and stopping leaves no process behind."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pair.core.node import open_node
from pair.db.throwaway import free_port
from pair.demo import consortium

pytestmark = pytest.mark.integration


def _report(quarantined: int, cases: int) -> consortium.SiteReport:
    return consortium.SiteReport(
        1, "SITE01", "State University Clinics", 150, quarantined, cases, cases,
        "no evaluation (the cohort has no positive case, so no AUC can be computed)", 6,
    )  # fmt: skip


def test_welcome_says_where_to_look_without_wrapping() -> None:
    """The quarantined item's page and login, why a generated patient is missing, every login;
    lines fit an 80-column terminal (long notes broken by the demo, indented)."""
    procs = [
        consortium.Process(name, f"http://127.0.0.1:{8000 + i}", None)  # type: ignore[arg-type]
        for i, name in enumerate(("hub", "site-1"))
    ]
    lines = consortium.welcome_lines(procs, [_report(1, 5)])
    assert all(len(line) <= 80 for line in lines), [x for x in lines if len(x) > 80]
    text = " ".join(" ".join(lines).split())
    assert "sign in as admin, open http://127.0.0.1:8001/admin/quarantine" in text
    assert "5 of 6 generated patients are listed: the only image of the other 1 is held" in text
    assert "logins: admin (admin), radiologist (radiologist)" in text
    assert "hub (hub-operator), analyst (registry-analyst)" in text
    plain = " ".join(consortium.welcome_lines(procs, [_report(0, 6)]))
    assert "quarantine" not in plain and "generated patients" not in plain


def test_hub_and_three_sites(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    tokens, reports = consortium.prepare(root, sites=3, patients=3)
    assert sorted(tokens) == ["SITE01", "SITE02", "SITE03"]
    assert all(r.stored > 0 for r in reports), reports
    port, dicom_port = free_port(), free_port()
    processes = consortium.launch(root, tokens, host="127.0.0.1", port=port, dicom_port=dicom_port)
    try:
        deadline = time.monotonic() + 240
        counts: dict[str, int] = {}
        pulled: dict[str, int] = {}
        while time.monotonic() < deadline:
            counts = consortium.hub_counts(root)
            pulled = consortium.pulled_counts(root, 1)
            if len(counts) == 3 and set(pulled) >= {"SITE02", "SITE03"}:
                break
            assert all(p.popen.poll() is None for p in processes), "a node stopped"
            time.sleep(3)
        assert set(counts) == {"SITE01", "SITE02", "SITE03"}, counts
        assert set(pulled) >= {"SITE02", "SITE03"} and "SITE01" not in pulled, pulled
        # pulled cases are never pushed back: the hub holds each site's own studies, no echo
        own = consortium.own_study_counts(root, 3)
        deadline = time.monotonic() + 60
        while consortium.hub_counts(root) != own and time.monotonic() < deadline:
            time.sleep(3)
        time.sleep(8)  # a few more push rounds after the pulls
        assert consortium.hub_counts(root) == own
        from pair.registry.performance.models import PerfFeedback

        evaluated = sum(1 for r in reports if r.evaluation.startswith("evaluation #"))
        hub = open_node(root / "hub")
        try:
            with hub.db.session() as s:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    n = s.scalar(select(func.count()).select_from(PerfFeedback)) or 0
                    if n >= evaluated:
                        break
                    s.rollback()
                    time.sleep(2)
                assert n == evaluated >= 1
        finally:
            hub.close()
    finally:
        welcome = consortium.welcome_lines(processes, reports)
        consortium.stop(processes)
    assert all(p.popen.returncode is not None for p in processes)
    # the welcome names every login and fits an 80-column terminal
    assert all(len(line) <= 80 for line in welcome), [x for x in welcome if len(x) > 80]
    text = "\n".join(welcome)
    for name, role in [*consortium.HUB_USERS, *consortium.SITE_USERS]:
        assert f"{name} ({role})" in text
    assert all(p.url in text for p in processes)
    quarantined = [r for r in reports if r.quarantined]
    assert all(f"{processes[r.index].url}/admin/quarantine" in text for r in quarantined)
    # a second run starts from what was prepared: the same credentials, nothing generated again
    again, _ = consortium.prepare(root, sites=3, patients=3)
    assert again == tokens
