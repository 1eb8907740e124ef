"""End-to-end checks of `pair synth` output: validity, hierarchy, ground truth, PHI, determinism."""

from __future__ import annotations

import csv
import hashlib
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from pair.cli.main import app
from pair.synth import config, generate
from pair.synth.anatomy import LOBES
from pair.synth.dicomio import PRIVATE_CREATOR, PRIVATE_GROUP

ARGS = ["--sites", "2", "--patients", "3", "--seed", "7", "--ct-slices", "10"]
ARGS += ["--ct-size", "64", "--cxr-size", "128", "--workers", "2"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ds"
    # Any value that breaks its VR (length, characters) raises instead of warning.
    # (pydicom checks values on assignment with the *reading* mode.)
    settings = pydicom.config.settings
    modes = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom.config.RAISE
    try:
        result = CliRunner().invoke(app, ["synth", "--out", str(out), *ARGS])
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = modes
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.output
    return out


@pytest.fixture(scope="module")
def files(dataset: Path) -> list[tuple[Path, pydicom.Dataset]]:
    paths = sorted(dataset.rglob("*.dcm"))
    assert paths
    return [(p, pydicom.dcmread(p)) for p in paths]


@pytest.fixture(scope="module")
def truth(dataset: Path) -> list[dict[str, str]]:
    with (dataset / "ground_truth.csv").open() as fh:
        return list(csv.DictReader(fh))


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_bytes_whatever_the_worker_count(
    dataset: Path, tmp_path: Path
) -> None:
    again = generate(
        tmp_path / "again", 2, 3, seed=7, workers=1, ct_slices=10, ct_size=64, cxr_size=128
    )
    assert _hashes(dataset) == _hashes(again.out)
    other = generate(tmp_path / "other", 1, 1, seed=8, ct_slices=10, ct_size=64, cxr_size=128)
    assert _hashes(other.out)["clinical.csv"] != _hashes(dataset)["clinical.csv"]


def test_every_file_is_valid_dicom_with_decodable_pixels(
    files: list[tuple[Path, pydicom.Dataset]],
) -> None:
    sop_uids = set()
    for path, ds in files:
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID, path
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID, path
        for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID"):
            assert str(ds.get(key, "")).strip(), f"{path}: {key} missing"
        arr = ds.pixel_array
        assert arr.shape == (ds.Rows, ds.Columns)
        sop_uids.add(ds.SOPInstanceUID)
    assert len(sop_uids) == len(files)
    syntaxes = {ds.file_meta.TransferSyntaxUID for _, ds in files}
    assert syntaxes == {pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.RLELossless}


def test_hierarchy_is_consistent(files: list[tuple[Path, pydicom.Dataset]]) -> None:
    study_of_folder: dict[Path, set[str]] = defaultdict(set)
    series_of_folder: dict[Path, set[str]] = defaultdict(set)
    patient_of_study: dict[str, set[str]] = defaultdict(set)
    for path, ds in files:
        study_of_folder[path.parent.parent].add(ds.StudyInstanceUID)
        series_of_folder[path.parent].add(ds.SeriesInstanceUID)
        patient_of_study[ds.StudyInstanceUID].add(ds.PatientID)
    assert all(len(v) == 1 for v in study_of_folder.values())
    assert all(len(v) == 1 for v in series_of_folder.values())
    assert all(len(v) == 1 for v in patient_of_study.values())
    all_series = [next(iter(v)) for v in series_of_folder.values()]
    assert len(set(all_series)) == len(all_series)


def test_ct_geometry_is_consistent(files: list[tuple[Path, pydicom.Dataset]]) -> None:
    series: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for _, ds in files:
        if ds.Modality == "CT":
            series[ds.SeriesInstanceUID].append(ds)
    assert series
    for slices in series.values():
        slices.sort(key=lambda d: int(d.InstanceNumber))
        assert len({d.FrameOfReferenceUID for d in slices}) == 1
        assert slices[0].PhotometricInterpretation == "MONOCHROME2"
        zs = [float(d.ImagePositionPatient[2]) for d in slices]
        assert zs == sorted(zs, reverse=True)  # head first
        steps = np.diff(zs)
        assert np.allclose(-steps, float(slices[0].SpacingBetweenSlices), atol=1e-2)
        assert float(slices[0].SliceThickness) == pytest.approx(-steps[0], abs=1e-2)
        for d in slices:
            assert float(d.SliceLocation) == pytest.approx(float(d.ImagePositionPatient[2]))
            assert [float(v) for v in d.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
            assert d.pixel_array.dtype == np.int16


def test_ct_hounsfield_units_look_like_a_chest(
    files: list[tuple[Path, pydicom.Dataset]], truth: list[dict[str, str]]
) -> None:
    severity = {r["study_instance_uid"]: int(r["severity_total"]) for r in truth}
    checked = 0
    for _, ds in files:
        if ds.Modality != "CT" or int(ds.InstanceNumber) != 5:
            continue
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert -1300 < hu.min() < -900 and 300 < hu.max() < 1600
        soft = ((hu > -20) & (hu < 100)).mean()
        assert soft > 0.05, "no soft tissue in a mid-chest slice"
        if severity[ds.StudyInstanceUID] == 0:  # clear lungs: a large mode around -850 HU
            lung = (hu > -950) & (hu < -750)
            assert lung.mean() > 0.1, "no aerated lung in a mid-chest slice"
            assert -900 < float(np.median(hu[lung])) < -800
            checked += 1
    assert checked


def test_radiographs_vary_in_modality_photometry_and_view(
    files: list[tuple[Path, pydicom.Dataset]],
) -> None:
    seen = set()
    for _, ds in files:
        if ds.Modality == "CT":
            continue
        assert ds.ViewPosition in ("PA", "AP")
        assert ds.BitsStored == 12 and ds.HighBit == 11
        img = ds.pixel_array.astype(float)
        assert img.max() <= 4095
        # The mediastinum (centre) is whiter than the lung fields on screen; with MONOCHROME1
        # the stored values are inverted.
        rows, cols = img.shape
        band = img[rows * 25 // 100 : rows * 40 // 100]
        centre = band[:, cols * 47 // 100 : cols * 53 // 100].mean()
        right = band[:, cols * 28 // 100 : cols * 36 // 100].mean()
        left = band[:, cols * 64 // 100 : cols * 72 // 100].mean()
        if ds.PhotometricInterpretation == "MONOCHROME2":
            assert centre > max(right, left) + 200
        else:
            assert centre < min(right, left) - 200
        seen.add((ds.Modality, ds.PhotometricInterpretation))
    assert seen == {("DX", "MONOCHROME2"), ("CR", "MONOCHROME1")}


def test_ground_truth_rows_match_the_files(
    dataset: Path, files: list[tuple[Path, pydicom.Dataset]], truth: list[dict[str, str]]
) -> None:
    by_study = {row["study_instance_uid"]: row for row in truth}
    assert len(by_study) == len(truth)
    on_disk = {ds.StudyInstanceUID for _, ds in files}
    assert on_disk == set(by_study)
    for row in truth:
        study_files = sorted((dataset / row["study_dir"]).rglob("*.dcm"))
        assert len(study_files) == int(row["instances"])
        ds = pydicom.dcmread(study_files[0], stop_before_pixels=True)
        assert ds.StudyInstanceUID == row["study_instance_uid"]
        assert ds.PatientID == row["patient_id"]
        assert ds.AccessionNumber == row["accession_number"]
        assert ds.Modality == row["modality"]
        assert ds.StudyDate == row["study_date"].replace("-", "")
        assert row["rtpcr_result"] in ("positive", "negative")
        assert row["rsna_category"] in ("typical", "indeterminate", "atypical", "negative")
        assert row["admission_date"] <= row["study_date"] <= row["discharge_date"]
    with (dataset / "clinical.csv").open() as fh:
        clinical = {r["patient_id"]: r for r in csv.DictReader(fh)}
    assert set(clinical) == {row["patient_id"] for row in truth}
    for row in truth:
        c = clinical[row["patient_id"]]
        assert c["covid19_positive"] == ("Yes" if row["rtpcr_result"] == "positive" else "No")
        assert c["test_method"] == "RT-PCR"
    assert "SYNTHETIC" in (dataset / "README.txt").read_text()


def test_severity_is_0_to_5_per_lobe_and_sums(truth: list[dict[str, str]]) -> None:
    for row in truth:
        scores = [int(row[f"severity_{lobe}"]) for lobe in LOBES]
        assert all(0 <= s <= 5 for s in scores)
        assert sum(scores) == int(row["severity_total"])
        if row["rsna_category"] == "negative":
            assert sum(scores) == 0


def test_sites_differ_in_equipment(files: list[tuple[Path, pydicom.Dataset]]) -> None:
    makers: dict[tuple[str, str], set[str]] = defaultdict(set)
    kernels: dict[str, set[str]] = defaultdict(set)
    for path, ds in files:
        site = path.relative_to(path.parents[4]).parts[0]
        makers[(ds.Modality if ds.Modality == "CT" else "CXR", site)].add(ds.Manufacturer)
        if ds.Modality == "CT":
            kernels[site].add(ds.ConvolutionKernel)
    assert makers[("CT", "site-01")] != makers[("CT", "site-02")]
    assert makers[("CXR", "site-01")] != makers[("CXR", "site-02")]
    assert kernels["site-01"] != kernels["site-02"]


def test_headers_carry_fake_phi_in_text_sequences_and_private_tags(
    files: list[tuple[Path, pydicom.Dataset]],
) -> None:
    for path, ds in files:
        last, first = str(ds.PatientName).split("^")[:2]
        assert last and first
        free_text = " ".join(
            str(ds.get(k, ""))
            for k in ("ImageComments", "PatientComments", "AdditionalPatientHistory")
        )
        assert first in free_text, f"{path}: no name in free text"
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
        assert block[0x01].value == f"{first} {last}"
        assert block[0x02].value == ds.PatientID
        assert ds.PatientBirthDate and ds.PatientAddress and ds.PatientTelephoneNumbers
        assert ds.OtherPatientIDsSequence[0].PatientID
        assert ds.RequestAttributesSequence[0].AccessionNumber == ds.AccessionNumber
        assert ds.ReferringPhysicianName and ds.InstitutionName and ds.AccessionNumber


@pytest.mark.integration
def test_dcmtk_parses_every_file_without_complaint(
    files: list[tuple[Path, pydicom.Dataset]],
) -> None:
    paths = [str(p) for p, _ in files]
    for i in range(0, len(paths), 50):
        run = subprocess.run(
            ["dcmdump", *paths[i : i + 50]],
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        assert not run.stderr.strip(), run.stderr


def test_sites_differ_in_dose_noise_prevalence_and_age(
    files: list[tuple[Path, pydicom.Dataset]],
) -> None:
    """Each site's CT follows its archetype: tube current-time product, CTDIvol and noise."""
    exposures: dict[str, set[int]] = defaultdict(set)
    ctdi: dict[str, list[float]] = defaultdict(list)
    noise: dict[str, list[float]] = defaultdict(list)
    for path, ds in files:
        if ds.Modality != "CT":
            continue
        site = path.relative_to(path.parents[4]).parts[0]
        exposures[site].add(int(ds.Exposure))
        ctdi[site].append(float(ds.CTDIvol))
        if int(ds.InstanceNumber) == 5:  # air in front of the chest: pure reconstruction noise
            hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            corner = hu[:6, :6]
            assert float(corner.mean()) < -900
            noise[site].append(float(corner.std()))
    for index, site in enumerate(("site-01", "site-02")):
        spec = config.site_archetype(index).ct
        assert all(spec.mas[0] - 1 <= e <= spec.mas[1] + 1 for e in exposures[site]), site
    # site-01's sharp kernel and high noise against site-02's smooth, low-noise protocol
    assert np.mean(noise["site-01"]) > 1.5 * np.mean(noise["site-02"])
    assert ctdi["site-01"] and ctdi["site-02"]
    first, second = config.site_archetype(0), config.site_archetype(1)
    assert first.covid_prevalence != second.covid_prevalence
    assert first.age.mean != second.age.mean
