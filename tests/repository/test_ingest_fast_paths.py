"""Stage one of ingest gives the same answer with the fast paths on and off (``PAIR_FAST_PATHS``).

The library path (fast paths off) is the reference: pydicom's read-time validation as shipped,
index values converted by pydicom. Every file of the test corpus (``tests/data/dicom``), a
benchmark CT slice, every transfer syntax ingest accepts, and an instance with residual PHI go
through the real stage one (``prepare_batch``) both ways, on SQLite and PostgreSQL: the same
outcome, the same de-identified file (its SHA-256 and size: the store is content-addressed),
the same index values and the same residual-PHI findings.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import config
from pydicom.uid import UID, generate_uid

from pair.accounts import service as accounts
from pair.core import fastpaths
from pair.core.node import Node
from pair.repository.outcomes import Outcome, Payload
from pair.repository.prepare import Prepared, prepare_batch
from pair.repository.storage import Stores
from tests.conftest import TEST_DATA
from tests.factories import INGEST_TRANSFER_SYNTAXES, ct_instance, leaky_instance, to_bytes

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import common


@contextlib.contextmanager
def _fast_paths(on: bool) -> Iterator[None]:
    before = fastpaths.enabled()
    fastpaths.configure(on)
    try:
        yield
    finally:
        fastpaths.configure(before)


def _corpus() -> list[tuple[str, bytes]]:
    files = sorted((TEST_DATA / "dicom").glob("*.dcm"))
    assert len(files) >= 5
    out = [(f.name, f.read_bytes()) for f in files]
    rng = np.random.default_rng(3)
    phi = {"PatientName": "FAST^PATHS", "PatientID": "FP0001"}
    ct = common.ct_slice(rng, generate_uid(), generate_uid(), generate_uid(), 1, phi)
    out.append(("benchmark CT slice", to_bytes(ct)))
    study, series = generate_uid(), generate_uid()
    for n, ts in enumerate(INGEST_TRANSFER_SYNTAXES, 1):
        ds = ct_instance(study_uid=study, series_uid=series, index=n, size=64)
        if UID(ts).is_compressed:
            ds.compress(ts)
        else:
            ds.file_meta.TransferSyntaxUID = ts
        out.append((f"CT in {UID(ts).name}", to_bytes(ds)))
    out.append(("residual PHI", to_bytes(leaky_instance())))
    return out


def _plain(p: Prepared) -> dict[str, object]:
    return {"result": asdict(p.result), "record": p.record and asdict(p.record), "q": p.quarantine}


def test_stage_one_is_the_same_with_fast_paths_on_and_off(node: Node) -> None:
    with node.db.session() as s:
        facility_id = accounts.create_facility(s, "Fast paths", "FASTP").id
    stores = Stores.for_settings(node.settings)
    corpus = _corpus()
    payloads = [Payload(data, label) for label, data in corpus]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference (pydicom's validation) warns
        with _fast_paths(True):
            fast = prepare_batch(node, stores, facility_id, "test", None, payloads)
        with _fast_paths(False):
            reference = prepare_batch(node, stores, facility_id, "test", None, payloads)
    outcomes = {label: p.result.outcome for (label, _), p in zip(corpus, fast, strict=True)}
    assert outcomes["residual PHI"] is Outcome.QUARANTINED
    assert outcomes["benchmark CT slice"] is Outcome.STORED
    assert sum(o is Outcome.STORED for o in outcomes.values()) >= len(corpus) - 2, outcomes
    for (label, _), got, expected in zip(corpus, fast, reference, strict=True):
        assert _plain(got) == _plain(expected), label
    for p in fast:  # the files are there, with the content their name promises
        if p.record is not None:
            data = stores.content.path(p.record.instance["storage_path"]).read_bytes()
            assert stores.content.digest(data) == p.record.sha256
            assert pydicom.dcmread(stores.content.path(p.record.instance["storage_path"]))


def test_reading_validation_is_off_only_inside_stage_one_and_restored() -> None:
    before = config.settings.reading_validation_mode
    with _fast_paths(True):
        with fastpaths.unvalidated_reading():
            assert config.settings.reading_validation_mode == config.IGNORE
            with fastpaths.unvalidated_reading():  # concurrent stage ones share the setting
                assert config.settings.reading_validation_mode == config.IGNORE
            assert config.settings.reading_validation_mode == config.IGNORE
        assert config.settings.reading_validation_mode == before
    with _fast_paths(False), fastpaths.unvalidated_reading():
        assert config.settings.reading_validation_mode == before


def test_a_raise_mode_set_by_the_operator_is_kept() -> None:
    before = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.RAISE
    try:
        with _fast_paths(True), fastpaths.unvalidated_reading():
            assert config.settings.reading_validation_mode == config.RAISE
        assert config.settings.reading_validation_mode == config.RAISE
    finally:
        config.settings.reading_validation_mode = before


@pytest.mark.parametrize("on", [True, False])
def test_invalid_values_pass_the_same_checks_either_way(node: Node, on: bool) -> None:
    """A value pydicom's validation would warn about (a malformed date) is de-identified the
    same way, and stage one takes no more notice of it with the fast paths on."""
    with node.db.session() as s:
        facility_id = accounts.create_facility(s, f"Fast {on}", f"FAST{int(on)}").id
    ds = ct_instance(study_uid=generate_uid(), series_uid=generate_uid())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.StudyDate = "2020"  # not a DA value: the de-identifier removes what it cannot shift
        with _fast_paths(on):
            stores = Stores.for_settings(node.settings)
            payload = Payload(to_bytes(ds))
            (p,) = prepare_batch(node, stores, facility_id, "t", None, [payload])
    assert p.result.outcome is Outcome.STORED
    assert p.record is not None and p.record.study["study_date"] == ""
