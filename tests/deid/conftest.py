from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from pair.deid.engine import Deidentifier
from pair.deid.profile import DeidProfile, parse_profile
from pair.deid.store import InMemoryMappingStore

SECRET = b"test-site-secret-0123456789abcdef"
# The engine tests exercise every option the engine supports; the site default enables only
# two of them (tests/deid/test_default_profile.py covers the default itself).
RICH_PROFILE = parse_profile(
    "name: pair-rich\n"
    "options: {retain_longitudinal_modified_dates: true, retain_patient_characteristics: true,"
    " retain_device_identity: true, retain_safe_private: true, clean_descriptors: true}\n"
)


@pytest.fixture
def dicom_dir(shared_data: Path) -> Path:
    return shared_data / "dicom"


@pytest.fixture
def load(dicom_dir: Path) -> Callable[[str], Dataset]:
    def _load(name: str) -> Dataset:
        return pydicom.dcmread(dicom_dir / name)

    return _load


@pytest.fixture
def make_deid() -> Callable[..., Deidentifier]:
    def _make(
        profile: DeidProfile | None = None,
        secret: bytes = SECRET,
        store: InMemoryMappingStore | None = None,
    ) -> Deidentifier:
        return Deidentifier(profile or RICH_PROFILE, secret, store or InMemoryMappingStore(), "GH")

    return _make
