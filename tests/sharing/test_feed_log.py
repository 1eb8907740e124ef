"""The feed's numbers are commit-ordered on PostgreSQL: a reader that resumes from the last
number it saw never misses an event committed later with a smaller number.

The scenario: writer 1 takes a number and holds its transaction open; writer 2 takes a number
after it and commits at once; a reader reads in between and again after writer 1's commit.
With the counter row, writer 2 waits for writer 1 (its number is larger and committed later),
so the reader sees both. The same scenario with a database sequence (what an autoincrement
id is) lets writer 2's event appear first; the reader then skips writer 1's: the control case
shows the test can tell the two apart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from pair.audit import feedlog
from pair.core.config import get_settings
from pair.core.node import Node, open_node
from pair.db.throwaway import PostgresServer
from pair.sharing.feed.events import events_after

HOLD_S = 1.0


@pytest.fixture
def pg_node(tmp_path: Path, postgres_server: PostgresServer) -> Iterator[Node]:
    url = postgres_server.create_database()
    node = open_node(settings=get_settings(tmp_path / "node", database_url=url))
    yield node
    node.close()


def _scenario(node: Node) -> tuple[list[int], float, dict[str, int]]:
    """Returns the numbers the following reader saw, how long writer 2 waited for its
    number, and each writer's number."""
    drawn = threading.Event()
    seqs: dict[str, int] = {}
    waited: list[float] = []

    def seq_of(session: Session, name: str) -> int:
        return int(
            session.execute(
                text("SELECT seq FROM feed_event WHERE study_uid = :u"), {"u": name}
            ).scalar_one()
        )

    def writer1() -> None:
        with node.db.session() as s:
            feedlog.record_change(s, None, "test", study_uid="w1")
            seqs["w1"] = seq_of(s, "w1")
            drawn.set()
            time.sleep(HOLD_S)  # the rest of a long ingest transaction

    def writer2() -> None:
        drawn.wait()
        start = time.monotonic()
        with node.db.session() as s:
            feedlog.record_change(s, None, "test", study_uid="w2")
            waited.append(time.monotonic() - start)
            seqs["w2"] = seq_of(s, "w2")

    seen: list[int] = []
    cursor = 0

    def read() -> None:
        nonlocal cursor
        with node.db.session() as s:
            for event in events_after(s, cursor, 100):
                seen.append(event["seq"])
                cursor = event["seq"]

    t1, t2 = threading.Thread(target=writer1), threading.Thread(target=writer2)
    t1.start()
    t2.start()
    drawn.wait()
    time.sleep(HOLD_S / 2)  # writer 2 has committed by now unless it waits for writer 1
    read()
    t1.join()
    t2.join()
    read()
    return seen, waited[0], seqs


def test_a_reader_never_misses_an_event_committed_later(pg_node: Node) -> None:
    seen, waited, seqs = _scenario(pg_node)
    assert seqs["w2"] == seqs["w1"] + 1
    assert waited >= HOLD_S * 0.8  # writer 2 waited for writer 1's commit
    assert seen == [seqs["w1"], seqs["w2"]]


def test_control_a_sequence_draw_would_lose_an_event(
    pg_node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pg_node.db.session() as s:
        s.execute(text("CREATE SEQUENCE feed_test_seq"))

    def sequence_draw(session: Session, n: int) -> int:
        last = 0
        for _ in range(n):
            last = int(session.execute(text("SELECT nextval('feed_test_seq')")).scalar_one())
        return last

    draw: Callable[[Session, int], int] = sequence_draw
    monkeypatch.setattr(feedlog, "_draw", draw)
    seen, waited, seqs = _scenario(pg_node)
    assert waited < HOLD_S / 2  # nothing orders writer 2 after writer 1
    assert seqs["w1"] < seqs["w2"]
    assert seen == [seqs["w2"]]  # writer 1's event, committed after the read, is skipped


def test_numbers_have_no_gaps_after_a_rollback(pg_node: Node) -> None:
    with pytest.raises(RuntimeError), pg_node.db.session() as s:
        feedlog.record_change(s, None, "test", study_uid="rolled-back")
        raise RuntimeError("the change failed")
    with pg_node.db.session() as s:
        feedlog.record_changes(s, None, [("test", "a", {}), ("test", "b", {"n": 1})])
    with pg_node.db.session() as s:
        events = events_after(s, 0, 10)
    assert [(e["seq"], e["study_uid"]) for e in events] == [(1, "a"), (2, "b")]
    assert events[1]["payload"] == {"n": 1}
