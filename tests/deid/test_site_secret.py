"""The site secret is created once, even when several processes start at the same moment
(ingest workers, a CLI next to the server): all of them must use the same key."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from pair.core.config import get_settings


def _first_use(node: Path, start: Any, out: Any) -> None:
    settings = get_settings(node)
    start.wait()
    try:
        out.put(settings.site_secret.hex())
    except Exception as exc:
        out.put(f"error: {type(exc).__name__}: {exc}")


def test_concurrent_first_use_yields_one_secret(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")  # fast to start; the function needs no threads
    for attempt in range(10):  # a race: several rounds, so that a broken version fails
        node = tmp_path / f"node{attempt}"
        get_settings(node).ensure_dirs()
        start, out = ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=_first_use, args=(node, start, out)) for _ in range(8)]
        for p in procs:
            p.start()
        answers = {out.get(timeout=60) for _ in procs}
        for p in procs:
            p.join(60)
        assert len(answers) == 1, answers
        (key,) = answers
        assert len(bytes.fromhex(key)) == 32
        names = sorted(p.name for p in (node / "private").iterdir())
        assert names == ["site-secret.key"]  # no temp file left
        assert get_settings(node).site_secret.hex() == key
