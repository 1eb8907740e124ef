"""The benchmark harness itself: data it generates, index rows it loads, servers it drives.

No timing is asserted here; these tests check that what the benchmarks measure is real work
(valid files, the expected rows, instances that actually arrive).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pair.core.node import Node
from pair.repository.models import Instance, Series, Study
from pair.repository.multipart import split_related
from pair.repository.query import find_instances, find_studies, parse_query

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import common
import ingest_bench
import qido_bench
import reliability


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> common.DataSet:
    out = tmp_path_factory.mktemp("bench-data")
    return common.make_dataset(out, ct=4, cr=1, ct_per_series=2, cr_size=128, seed=3)


def test_generated_files_are_valid_dicom_with_phi(small_data: common.DataSet) -> None:
    assert len(small_data.files) == 5
    assert small_data.studies == 3
    ct = pydicom.dcmread(small_data.files[0])
    assert (ct.Modality, ct.Rows, ct.Columns, ct.PixelRepresentation) == ("CT", 512, 512, 1)
    assert ct.pixel_array.shape == (512, 512)
    assert str(ct.PatientName) and ct.PatientID.startswith("MRN") and ct.PatientAddress
    cr = pydicom.dcmread(small_data.files[-1])
    assert (cr.Modality, cr.Rows, cr.BitsStored) == ("CR", 128, 12)
    series = {pydicom.dcmread(p).SeriesInstanceUID for p in small_data.files}
    assert len(series) == 3
    again = common.make_dataset(
        small_data.files[0].parent / "again", ct=4, cr=1, ct_per_series=2, cr_size=128, seed=3
    )
    assert pydicom.dcmread(again.files[0]).SOPInstanceUID == ct.SOPInstanceUID  # deterministic


def test_stow_bodies_split_back_into_the_files(small_data: common.DataSet) -> None:
    bodies = ingest_bench.stow_bodies(small_data.files, 2)
    assert [n for _, _, n in bodies] == [2, 2, 1]
    parts = [
        data
        for body, ctype, _ in bodies
        for _, data in split_related(body, ctype, "application/dicom")
    ]
    assert parts == [p.read_bytes() for p in small_data.files]


def test_populate_loads_the_declared_shape(node: Node) -> None:
    from pair.accounts import service

    with node.db.session() as s:
        facility_id = service.create_facility(s, "Bench", "BENCH").id
    cat = qido_bench.populate(node.settings.resolved_database_url, facility_id, 2000, seed=5)
    with Session(node.db.engine) as s:
        assert s.scalar(select(func.count()).select_from(Study)) == 10
        assert s.scalar(select(func.count()).select_from(Series)) == 40
        assert s.scalar(select(func.count()).select_from(Instance)) == 2000
        studies = find_studies(s, facility_id, parse_query([("PatientID", cat.patients[0])]))
        assert studies and all(st.patient_id_value == cat.patients[0] for st in studies)
        study_uid, series_uid = cat.series[0]
        rows = find_instances(s, facility_id, parse_query([]), study_uid, series_uid)
        assert len(rows) == 50
        one = find_instances(s, facility_id, parse_query([("SOPInstanceUID", cat.sops[0])]))
        assert [i.sop_instance_uid for i, _, _ in one] == [cat.sops[0]]


@pytest.mark.integration
def test_orthanc_takes_stow_and_refuses_unknown_calling_ae(
    small_data: common.DataSet, tmp_path: Path
) -> None:
    from pynetdicom import AE

    with common.running(common.OrthancServer(tmp_path)) as orthanc:
        _, failed = ingest_bench.stow(orthanc, ingest_bench.stow_bodies(small_data.files[:2], 2), 1)
        assert failed == 0
        assert orthanc.count_instances() == 2
        ae = AE(ae_title="STRANGER")
        ae.add_requested_context(pydicom.dcmread(small_data.files[2]).SOPClassUID)
        assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title=orthanc.ae_title)
        if assoc.is_established:
            status = assoc.send_c_store(pydicom.dcmread(small_data.files[2]))
            assoc.release()
            assert not status or status.Status != 0x0000
        assert orthanc.count_instances() == 2
        timing = ingest_bench.storescu(orthanc, small_data.files[2:], 1)
        assert timing.wall_s > 0
        assert orthanc.count_instances() == 5


@pytest.mark.integration
def test_pair_node_receives_stow_and_c_store(small_data: common.DataSet, tmp_path: Path) -> None:
    with common.running(common.PairNode(tmp_path)) as pair:
        _, failed = ingest_bench.stow(pair, ingest_bench.stow_bodies(small_data.files[:3], 3), 1)
        assert failed == 0
        _, failed = ingest_bench.pynetdicom_store(pair, small_data.files[3:], 2)
        assert failed == 0
        assert pair.count_instances() == 5
        studies, instances = ingest_bench.instance_paths(pair)
        assert len(studies) == 3 and len(instances) == 5
        _, parts, mb = ingest_bench.retrieve(pair, studies, 2)
        assert parts == 5 and mb > 2


@pytest.mark.integration
def test_floor_server_stores_what_it_receives(small_data: common.DataSet, tmp_path: Path) -> None:
    """The floor target stores every byte it gets, durably, over both doors."""
    floor = common.FloorServer(tmp_path)
    with common.running(floor):
        _, failed = ingest_bench.stow(floor, ingest_bench.stow_bodies(small_data.files[:3], 3), 1)
        assert failed == 0
        ingest_bench.storescu(floor, small_data.files[3:], 1)
        assert floor.count_instances() == 5
    stored = sorted((floor.dir / "storage").glob("??/??/*.dcm"))
    assert len(stored) == 5
    sent = {p.read_bytes()[132:] for p in small_data.files[:3]}  # STOW parts are the files
    assert sent <= {p.read_bytes()[132:] for p in stored}


def test_disk_ceiling_writes_what_it_reports_and_cleans_up(tmp_path: Path) -> None:
    import disk_ceiling

    folder = tmp_path / "files"
    folder.mkdir()
    assert disk_ceiling.many_files(folder, 4096, 60, 2, "fsync") == 4096 * 60
    stored = sorted(folder.iterdir())
    assert len(stored) == 60 and all(p.stat().st_size == 4096 for p in stored)
    assert len({p.read_bytes()[:8] for p in stored}) == 60  # distinct, like real instances

    (tmp_path / "m").mkdir()
    rows = disk_ceiling.measure(tmp_path / "m", 65536, 4 * 1024 * 1024)
    assert rows[0][0].startswith("sequential O_DIRECT")
    assert all(written == 4 * 1024 * 1024 for _, _, written, _, _ in rows)
    assert not any((tmp_path / "m").iterdir())
    args = disk_ceiling.argparse.Namespace(size=65536, orthanc_mb_s=100.0)
    assert "needs 1000 MB/s" in disk_ceiling.report(rows, args)


def test_reliability_run_loses_nothing_across_kill9() -> None:
    """A very short reliability run on both databases: the table has one row per database,
    instances were acknowledged before and after the kill -9, none was lost, none refused."""
    rows = reliability.main(
        ["--duration", "6", "--stow", "2", "--cstore", "1", "--batch", "2", "--kill-at", "0.3"]
    )
    assert [r[0] for r in rows] == ["sqlite", "postgresql"]
    for row in rows:
        cells = dict(zip(reliability.HEADERS, row, strict=True))
        assert int(cells["acknowledged"]) > 0
        assert cells["lost"] == "0"
        assert cells["errors"] == "0", row
        assert cells["deadlocks (errors / retried)"].startswith("0 /")


def test_stage_report_counts_every_stage_and_unwraps() -> None:
    """The per-stage CPU report stores real instances, times each stage it names, and puts
    the wrapped functions back afterwards."""
    import ingest_stages

    from pair.repository import prepare

    parse_before = prepare._parse
    args = ingest_stages.argparse.Namespace(ct=6, batch=2, seed=3, db="sqlite", load_before="-")
    clock, cpu, wall, n = ingest_stages.run(args)
    assert n == 4 and cpu > 0 and wall > 0
    names = [stage for stage, _, _ in ingest_stages.STAGES]
    assert set(clock.cpu) == set(names)  # every stage ran
    assert sum(clock.cpu.values()) <= cpu * 1.05  # exclusive times: nothing counted twice
    assert prepare._parse is parse_before
    text = ingest_stages.report(clock, cpu, wall, n, args)
    assert "parse + de-identify + scan + encode + index" in text and "index transaction" in text


def test_hub_bench_pairs_each_acknowledged_batch_with_its_feed_event() -> None:
    """The feed latency pairs a study's acknowledged batches with its study.updated events in
    order; a batch with no event yet counts nothing (it is not a zero)."""
    import hub_bench

    acks = [(10.0, ["1.1"]), (11.0, ["1.1", "1.2"]), (12.0, ["1.3"])]
    events = [
        (10.5, {"kind": "study.updated", "study_uid": "1.1"}),
        (11.25, {"kind": "study.updated", "study_uid": "1.2"}),
        (11.5, {"kind": "study.updated", "study_uid": "1.1"}),
        (11.75, {"kind": "study.retracted", "study_uid": "1.1"}),
    ]
    assert sorted(hub_bench.feed_latencies(acks, events)) == [0.25, 0.5, 0.5]
    stow = {"00081199": {"Value": [
        {"00081190": {"Value": ["http://h/dicomweb/studies/1.2.3/series/4/instances/5"]}},
        {"00081190": {"Value": ["http://h/dicomweb/studies/1.2.3/series/4/instances/6"]}},
    ]}}  # fmt: skip
    import httpx

    assert hub_bench._study_uids(httpx.Response(200, json=stow)) == ["1.2.3"]
