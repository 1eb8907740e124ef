from __future__ import annotations

from pathlib import Path

from pair.repository.storage import ContentStore


def test_content_store_is_atomic_and_idempotent(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "s", tmp_path / "t")
    sha, rel = store.write(b"abc" * 100)
    assert store.read(rel) == b"abc" * 100
    assert store.write(b"abc" * 100) == (sha, rel)
    assert store.iter_relative() == [rel]
    (tmp_path / "t" / "x.part").write_bytes(b"half")
    assert store.sweep_temp() == 1
    store.delete(rel)
    assert store.iter_relative() == []
