"""Phantom, disease and encoding units: HU ranges per tissue, RSNA patterns, severity bins."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pair.core.errors import Invalid
from pair.synth import config, generate
from pair.synth.anatomy import Phantom, random_anatomy, render
from pair.synth.dicomio import TRANSFER_SYNTAXES, set_pixels, uid, usable_syntax, write
from pair.synth.disease import (
    CONSOLIDATION_HU,
    GGO_HU,
    DiseaseMap,
    apply,
    lobe_severity,
    render_disease,
    sample_disease,
    severity_score,
)
from pair.synth.geometry import F32
from pair.synth.modalities import ct_grid

KINDS = {
    "typical": config.clinical()["typical_kinds"],
    "atypical": config.clinical()["atypical_kinds"],
}
GRID = ct_grid(24, 96)


def _patient(
    seed: int, category: str, extent: float = 0.6, **kinds: dict[str, float]
) -> tuple[Phantom, DiseaseMap, F32]:
    rng = np.random.default_rng(seed)
    a = random_anatomy(rng, "M")
    ph = render(a, GRID)
    d = sample_disease(a, rng, category, extent, {**KINDS, **kinds})
    dm = render_disease(a, d, ph, GRID)
    hu = ph.hu.copy()
    apply(hu, ph, dm)
    return ph, dm, hu


def test_tissue_hounsfield_units() -> None:
    ph, dm, hu = _patient(1, "typical", typical={"ggo": 1.0})
    lung = ph.lung & (dm.density < 0.05)
    assert -900 < float(np.median(ph.hu[lung])) < -800
    heart_region = (ph.hu > 20) & (ph.hu < 60)
    assert heart_region.sum() > 1000
    ggo = ph.lung & (dm.density > 0.8) & (dm.target == GGO_HU)
    assert ggo.sum() > 50
    assert -750 < float(np.median(hu[ggo])) < -400
    assert float(np.median(hu[ggo])) > float(np.median(hu[lung])) + 150


def test_five_lobes_are_labelled() -> None:
    ph, _, _ = _patient(2, "negative")
    counts = np.bincount(ph.lobes.ravel(), minlength=6)[1:]
    assert (counts > 0).all()
    total = counts.sum()
    assert all(0.03 < c / total < 0.4 for c in counts)


def test_negative_has_no_findings() -> None:
    ph, dm, hu = _patient(3, "negative")
    assert dm.density.max() == 0 and not dm.effusion.any()
    assert all(s == 0 for _, s in lobe_severity(ph, dm).values())
    assert np.array_equal(hu, ph.hu)


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("lobar_consolidation", "lobar"),
        ("cavity", "air"),
        ("effusion", "fluid"),
        ("tree_in_bud", "nodules"),
    ],
)
def test_atypical_patterns(kind: str, check: str) -> None:
    ph, dm, hu = _patient(4, "atypical", atypical={kind: 1.0})
    sev = lobe_severity(ph, dm)
    if check == "lobar":
        assert max(s for _, s in sev.values()) >= 4
        assert float(np.median(hu[dm.density > 0.9])) > -150
    elif check == "air":
        hole = (dm.target == -1000) & (dm.density > 0.5) & ph.lung
        assert hole.sum() > 3
        assert (hu[hole] < -900).all()
        wall = (dm.target > 0) & (dm.density > 0.9)
        assert float(np.median(hu[wall])) > -100
    elif check == "fluid":
        assert dm.effusion.sum() > 100
        assert np.allclose(hu[dm.effusion], 12.0)
    else:
        assert 0 < (dm.density > 0.5).sum() < 0.1 * ph.lung.sum()


@pytest.mark.parametrize(
    "kind", ["ggo", "rounded_ggo", "crazy_paving", "consolidation", "reverse_halo"]
)
def test_typical_patterns_are_peripheral_and_involve_lung(kind: str) -> None:
    _, dm, _ = _patient(5, "typical", typical={kind: 1.0})
    involved = dm.density > 0.5
    assert involved.sum() > 50
    # Bilateral: both lungs (x < 0 right, x > 0 left) are involved.
    x = np.broadcast_to(GRID.x[None, None, :], involved.shape)
    assert (involved & (x < 0)).any() and (involved & (x > 0)).any()


def test_indeterminate_is_diffuse() -> None:
    ph, dm, _ = _patient(6, "indeterminate", extent=0.8)
    sev = lobe_severity(ph, dm)
    assert sum(1 for _, s in sev.values() if s >= 2) >= 2


@pytest.mark.parametrize(
    ("fraction", "score"),
    [(0, 0), (0.001, 1), (0.049, 1), (0.05, 2), (0.25, 2), (0.26, 3), (0.5, 3), (0.51, 4),
     (0.75, 4), (0.76, 5), (1.0, 5)],
)  # fmt: skip
def test_severity_bins(fraction: float, score: int) -> None:
    assert severity_score(fraction) == score


@pytest.mark.parametrize("syntax", sorted(TRANSFER_SYNTAXES))
def test_every_transfer_syntax_round_trips(syntax: str, tmp_path: Path) -> None:
    assert usable_syntax(syntax) == syntax  # the project's dependencies provide every encoder
    rng = np.random.default_rng(0)
    for arr, photometric, bits in (
        (rng.integers(-1024, 2000, (32, 40)).astype(np.int16), "MONOCHROME2", 16),
        (rng.integers(0, 4096, (32, 40)).astype(np.uint16), "MONOCHROME1", 12),
    ):
        ds = pydicom.Dataset()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        ds.SOPInstanceUID = uid("test", syntax, bits)
        set_pixels(ds, arr, photometric, bits)
        write(ds, tmp_path / f"{bits}.dcm", syntax, arr)
        back = pydicom.dcmread(tmp_path / f"{bits}.dcm")
        assert back.file_meta.TransferSyntaxUID == TRANSFER_SYNTAXES[syntax]
        assert back.SOPInstanceUID == ds.SOPInstanceUID
        assert np.array_equal(back.pixel_array, arr)


def test_previous_output_is_replaced_but_other_folders_are_refused(tmp_path: Path) -> None:
    small = {"ct_slices": 4, "ct_size": 32, "cxr_size": 64, "workers": 1}
    first = generate(tmp_path / "ds", 1, 2, seed=1, **small)  # type: ignore[arg-type]
    assert (first.out / "site-01" / "P0002").is_dir()
    second = generate(tmp_path / "ds", 1, 1, seed=1, **small)  # type: ignore[arg-type]
    assert not (second.out / "site-01" / "P0002").exists()
    assert second.instances == len(list(second.out.rglob("*.dcm")))
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    with pytest.raises(Invalid, match="not empty"):
        generate(other, 1, 1, **small)  # type: ignore[arg-type]
    assert (other / "keep.txt").read_text() == "precious"


def test_bad_options_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(Invalid, match="sites and patients"):
        generate(tmp_path, 0, 1)
    with pytest.raises(Invalid, match="ct_size"):
        generate(tmp_path, 1, 1, ct_size=8)
    with pytest.raises(TypeError):
        generate(tmp_path, 1, 1, colour="blue")


def test_airways_and_vessels_are_drawn() -> None:
    """Air lumens through the mediastinum (trachea, main bronchi); soft-tissue lung vessels."""
    a = random_anatomy(np.random.default_rng(11), "F")
    assert a.airways and a.vessels
    full = render(a, GRID)
    no_airways = render(replace(a, airways=[]), GRID)
    no_vessels = render(replace(a, vessels=[]), GRID)
    lumen = (full.hu < -900) & ~full.lung & (no_airways.hu > -200)
    assert lumen.sum() > 20, "no airway lumen through the mediastinum"
    x = np.broadcast_to(GRID.x[None, None, :], lumen.shape)
    assert float(np.median(np.abs(x[lumen]))) < 40  # central: trachea and main bronchi
    vessel = full.lung & (full.hu > -200) & (no_vessels.hu < -600)
    assert vessel.sum() > 100, "no vessels in the lungs"
    assert (x[vessel] < 0).any() and (x[vessel] > 0).any()  # in both lungs


@pytest.mark.parametrize(
    ("kind", "targets"),
    [
        ("ggo", {GGO_HU}),
        ("consolidation", {GGO_HU, CONSOLIDATION_HU}),  # a solid core in ground glass
        ("crazy_paving", {GGO_HU + 60, -250.0}),  # ground glass crossed by septal lines
        ("rounded_ggo", {GGO_HU + 40}),
        ("reverse_halo", {GGO_HU, CONSOLIDATION_HU - 20}),  # a dense ring round ground glass
    ],
)
def test_each_typical_pattern_has_its_own_densities(kind: str, targets: set[float]) -> None:
    _, dm, _ = _patient(5, "typical", typical={kind: 1.0})
    assert set(np.unique(dm.target[dm.density > 0.3]).tolist()) == targets
