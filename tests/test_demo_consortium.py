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
        consortium.stop(processes)
    assert all(p.popen.returncode is not None for p in processes)
    # a second run starts from what was prepared: the same credentials, nothing generated again
    again, _ = consortium.prepare(root, sites=3, patients=3)
    assert again == tokens
