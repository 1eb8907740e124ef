from __future__ import annotations

import pytest
from pydicom.uid import generate_uid

from pair.dicom.parse import InvalidInstance, parse_bytes
from tests.factories import ct_instance, to_bytes


def _ct() -> object:
    return ct_instance(study_uid=generate_uid(), series_uid=generate_uid())


def test_valid_instance_parses() -> None:
    parsed = parse_bytes(to_bytes(_ct()))  # type: ignore[arg-type]
    assert parsed.transfer_syntax_uid == "1.2.840.10008.1.2.1"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b"", "not_dicom"),
        (lambda b: b"hello world, this is not DICOM at all" * 10, "not_dicom"),
        (lambda b: b[: len(b) - 500], "truncated"),
    ],
)
def test_bad_bytes_are_rejected_with_reason(mutate: object, reason: str) -> None:
    data = to_bytes(_ct())  # type: ignore[arg-type]
    with pytest.raises(InvalidInstance) as exc:
        parse_bytes(mutate(data))  # type: ignore[operator]
    assert exc.value.reason_code == reason
    assert exc.value.message


def test_missing_and_invalid_uids() -> None:
    ds = _ct()
    del ds.SeriesInstanceUID  # type: ignore[attr-defined]
    with pytest.raises(InvalidInstance, match="SeriesInstanceUID"):
        parse_bytes(to_bytes(ds))  # type: ignore[arg-type]
    ds = _ct()
    ds.StudyInstanceUID = "1.2.03.4"  # type: ignore[attr-defined]
    with pytest.raises(InvalidInstance, match="not a valid UID"):
        parse_bytes(to_bytes(ds))  # type: ignore[arg-type]


def test_inconsistent_hierarchy() -> None:
    ds = _ct()
    ds.SeriesInstanceUID = ds.StudyInstanceUID  # type: ignore[attr-defined]
    with pytest.raises(InvalidInstance) as exc:
        parse_bytes(to_bytes(ds))  # type: ignore[arg-type]
    assert exc.value.reason_code == "inconsistent_hierarchy"
