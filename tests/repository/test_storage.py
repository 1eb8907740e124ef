from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from pair.core.node import Node
from pair.repository.storage import ContentStore, persist


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


def test_staged_files_appear_only_once_persisted(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "s", tmp_path / "t")
    staged = [store.stage(bytes([n]) * 4096) for n in range(12)]
    assert store.iter_relative() == []  # nothing under a final name before persist
    assert len(list((tmp_path / "t").glob("*.part"))) == 12
    persist([write for _, _, write in staged])
    assert sorted(store.iter_relative()) == sorted(rel for _, rel, _ in staged)
    assert all(store.read(rel) == bytes([n]) * 4096 for n, (_, rel, _) in enumerate(staged))
    assert not list((tmp_path / "t").iterdir())
    # the folders this store created are reported, so that persist syncs their parents too
    assert all(w.new_dirs for _, _, w in staged[:1])

    sha, rel, again = store.stage(bytes([0]) * 4096)  # already stored: only the folder is synced
    assert (sha, rel) == staged[0][:2] and again.tmp == "" and again.final.endswith(rel)
    persist([again])
    assert store.read(rel) == bytes([0]) * 4096


def test_failed_persist_leaves_no_temp_file_and_no_final_name(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "s", tmp_path / "t")
    staged = [store.stage(bytes([n]) * 1000) for n in range(5)]
    Path(staged[2][2].tmp).unlink()  # the file vanished (disk trouble, an operator)
    with pytest.raises(FileNotFoundError):
        persist([write for _, _, write in staged])
    assert store.iter_relative() == []
    assert not list((tmp_path / "t").iterdir())


def test_a_batch_whose_files_cannot_be_stored_is_rejected_whole(node: Node) -> None:
    """Stage one reports the storage failure per instance; stage two then indexes nothing."""
    from pair.accounts import service as accounts
    from pair.accounts.models import Facility
    from pair.repository.ingest import Outcome, Payload, Preparer, commit_prepared
    from pair.repository.models import Instance
    from pair.repository.storage import Stores
    from tests.factories import ct_instance, to_bytes

    with node.db.session() as session:
        facility = accounts.create_facility(session, "Storage Trouble", "TROUBLE")
        session.flush()
        study, series = generate_uid(), generate_uid()
        payloads = [
            Payload(to_bytes(ct_instance(study_uid=study, series_uid=series, index=i)))
            for i in (1, 2, 3)
        ]
        facility_row = session.get(Facility, facility.id)
        assert facility_row is not None
        stores = Stores.for_settings(node.settings)
        preparer = Preparer(node, session, facility_row, "test", stores)
        prepared = [preparer.prepare(p) for p in payloads]
        Path(preparer._pending[1][1].tmp).unlink()
        preparer.finish()
        assert [p.result.outcome for p in prepared] == [Outcome.REJECTED] * 3
        assert all(p.result.reason_code == "processing_failed" for p in prepared)
        assert all("could not be stored" in p.result.reason for p in prepared)
        assert commit_prepared(session, facility.id, prepared) == []
        assert session.scalar(select(func.count()).select_from(Instance)) == 0
    assert not list(node.settings.tmp_dir.glob("*.part"))
    assert not list(node.settings.storage_dir.glob("??/??/*.dcm"))


def test_stage_one_decides_quarantine_and_writes_to_the_stores_it_is_given(
    node: Node, tmp_path: Path
) -> None:
    """Residual PHI is decided once, in stage one (stage two only adds the row), and ingest
    writes to the stores handed in, not to ones it looks up."""
    from pair.accounts import service as accounts
    from pair.audit.service import Actor
    from pair.repository.ingest import Outcome, Payload, ingest_batch
    from pair.repository.models import QuarantineItem
    from pair.repository.prepare import prepare_batch
    from pair.repository.storage import Stores
    from tests.factories import ct_instance, leaky_instance, to_bytes

    with node.db.session() as session:
        facility = accounts.create_facility(session, "Given Stores", "GIVEN")
        session.flush()
        facility_id = facility.id
    stores = Stores(
        ContentStore(tmp_path / "content", tmp_path / "tmp"),
        ContentStore(tmp_path / "held", tmp_path / "tmp"),
    )
    clean = ct_instance(study_uid=generate_uid(), series_uid=generate_uid())
    payloads = [Payload(to_bytes(leaky_instance()), "leaky"), Payload(to_bytes(clean), "clean")]
    leaky, stored = prepare_batch(node, stores, facility_id, "test", None, payloads)
    assert (
        leaky.result.outcome is Outcome.QUARANTINED and leaky.result.reason_code == "residual_phi"
    )
    assert leaky.result.quarantine_id is None and leaky.quarantine is not None
    assert stored.result.outcome is Outcome.STORED and stored.record is not None
    assert stores.quarantine.path(leaky.quarantine["storage_path"]).exists()
    assert stores.content.path(stored.record.instance["storage_path"]).exists()

    actor = Actor.system("test", facility_id=facility_id)
    again = [
        Payload(to_bytes(leaky_instance()), "leaky"),
        Payload(to_bytes(ct_instance(study_uid=generate_uid(), series_uid=generate_uid()))),
    ]
    held, new = ingest_batch(node, facility_id, again, "test", actor, stores=stores)
    assert held.outcome is Outcome.QUARANTINED and held.quarantine_id is not None
    assert new.outcome is Outcome.STORED
    with node.db.session() as session:
        item = session.get(QuarantineItem, held.quarantine_id)
        assert item is not None and stores.quarantine.path(item.storage_path).exists()
    assert len(stores.content.iter_relative()) == 2  # the clean instances, none elsewhere
    assert not list(node.settings.storage_dir.glob("??/??/*.dcm"))


def test_start_up_repair_spares_young_files_of_another_process(tmp_path: Path) -> None:
    """Several server processes share one storage (docs/hub.md): a process starting while
    another ingests must not delete the files that one wrote and has not committed yet."""
    import os
    import time

    from pair.core.config import get_settings
    from pair.core.node import open_node
    from pair.repository.ingest import content_store, reconcile

    settings = get_settings(tmp_path / "node", reconcile_min_age_s=600)
    node = open_node(settings=settings)
    try:
        store = content_store(node)
        _, rel = store.write(b"written by another process, rows not committed yet")
        part = settings.tmp_dir / "other-process.part"
        part.write_bytes(b"half")
        assert reconcile(node) == {"orphans": 0, "temp": 0}
        assert store.iter_relative() == [rel] and part.exists()
        old = time.time() - 3600  # an hour later: a real orphan of a crash
        for path in (settings.storage_dir / rel, part):
            os.utime(path, (old, old))
        assert reconcile(node) == {"orphans": 1, "temp": 1}
        assert store.iter_relative() == [] and not part.exists()
    finally:
        node.close()
