"""The residual-PHI scanner finds planted fragments anywhere and never reports values."""

from __future__ import annotations

import copy
from collections.abc import Callable

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from pair.deid.engine import Deidentifier
from pair.deid.scanner import collect_phi, scan_residual_phi
from tests.factories import ct_instance


def test_scanner_finds_planted_fragments(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    original = load("deid_ctbrain1.dcm")
    out = make_deid().deidentify(copy.deepcopy(original)).dataset
    assert scan_residual_phi(original, out) == []
    out.SeriesDescription = "series of Mr Simpson"  # name token
    out.add_new(0x00091010, "UN", b"\x00\x01SIMPSON^HOMER\x00")  # private bytes
    out.add_new(0x00090010, "LO", "ACME 1.0")
    item = Dataset()
    item.CodeMeaning = "accession 999887722"  # identifier in a nested sequence
    out.ProcedureCodeSequence = Sequence([item])
    out.ImageComments = "pt born 2020-07-04"  # birth date as a phrase
    out.StudyComments = "hx of trauma noted"  # free-text shingle from ReasonForStudy
    findings = scan_residual_phi(original, out)
    got = {(f.path, f.kind) for f in findings}
    assert ("(0008,103E)", "name") in got
    assert ("(0009,1010)", "name") in got
    assert ("(0008,1032)[0](0008,0104)", "identifier") in got
    assert ("(0020,4000)", "date") in got
    assert ("(0032,4000)", "free-text") in got
    for f in findings:
        for value in ("simpson", "homer", "999887722", "2020", "trauma"):
            assert value not in f.message.lower()


def test_scanner_ignores_common_words_and_short_ids(load: Callable[[str], Dataset]) -> None:
    index = collect_phi(load("deid_ctbrain1.dcm"))
    assert not index.match("SPRINGFIELD GENERAL HOSPITAL".replace("SPRINGFIELD", "SHELBYVILLE"))
    assert index.match("springfield")
    assert not index.match("RIS report")  # 'RIS' from a physician name is a stop word


def test_institution_can_be_excluded(load: Callable[[str], Dataset]) -> None:
    original = load("deid_ctbrain1.dcm")
    out = Dataset()
    out.InstitutionName = "SGH SPRINGFIELD GENERAL HOSPITAL"
    assert {f.kind for f in scan_residual_phi(original, out)} == {"institution"}
    assert scan_residual_phi(original, out, exclude_kinds=frozenset({"institution"})) == []


def test_own_method_attributes_are_not_scanned(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    from pair.deid.profile import parse_profile

    original = load("deid_ctbrain1.dcm")
    original.InstitutionName = "PAIR General"  # shares a word with (0012,0063)'s profile label
    deid = make_deid(parse_profile("name: pair-default\noptions: {}\n"))
    result = deid.deidentify(original)
    assert any("PAIR" in m for m in result.dataset.DeidentificationMethod)
    assert result.findings == []


def test_scanner_finds_address_and_accession_anywhere() -> None:
    """Patient address and accession number fragments are found in nested sequences and in
    private elements, named by kind and source attribute."""
    original = ct_instance(study_uid=generate_uid(), series_uid=generate_uid())
    assert original.PatientAddress == "12 Elm Street, Springfield"
    out = Dataset()
    item = Dataset()
    item.CodeMeaning = "lives on elm st"  # address word, one level down
    out.AnatomicRegionSequence = Sequence([item])
    out.add_new(0x00190010, "LO", "ACME 1.0")
    out.add_new(0x00191001, "LO", "order acc9900123")  # accession in a private element
    got = {(f.path, f.kind, f.source) for f in scan_residual_phi(original, out)}
    assert got == {
        ("(0008,2218)[0](0008,0104)", "address", "PatientAddress"),
        ("(0019,1001)", "identifier", "AccessionNumber"),
    }
