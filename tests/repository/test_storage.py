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


def test_shared_store_recreates_removed_folders(tmp_path: Path) -> None:
    import shutil

    store = ContentStore.at(tmp_path / "s", tmp_path / "t")
    assert ContentStore.at(tmp_path / "s", tmp_path / "t") is store
    _, rel = store.write(b"first")
    shutil.rmtree((tmp_path / "s" / rel).parent)  # a folder the store remembers creating
    _, rel2 = store.write(b"first")
    assert store.read(rel2) == b"first"
    assert not list((tmp_path / "t").iterdir())  # no temp file left behind
    shutil.rmtree(tmp_path / "s")
    assert ContentStore.at(tmp_path / "s", tmp_path / "t") is not store
