"""CT series and chest radiograph instances: scanner-specific image formation and headers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from pair.synth.anatomy import Phantom
from pair.synth.dicomio import StudyContext, base_dataset, set_pixels, uid, write
from pair.synth.disease import Disease
from pair.synth.geometry import F32, Grid
from pair.synth.radiograph import FIELD_MM, RadiographRenderer

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
CR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")
DX_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1.1")
CT_FOV_MM = 360.0
CT_Z_RANGE = (-195.0, 140.0)
REFERENCE_MAS = 120.0


def ct_grid(slices: int, size: int) -> Grid:
    """Axial CT grid: ``size``² pixels over a 360 mm field of view, ``slices`` slices covering
    the lungs from the costophrenic recesses to the apices."""
    px = CT_FOV_MM / size
    half = CT_FOV_MM / 2 - px / 2
    return Grid.make((-half, half, size), (-half + 20, half + 20, size), (*CT_Z_RANGE, slices))


def ct_image(hu: F32, sharpness: float, noise_sd: float, rng: np.random.Generator) -> F32:
    """Reconstruction look: kernel sharpness (edge enhancement or smoothing) and noise texture.

    Sharp kernels give fine-grained, high-frequency noise; smooth kernels blotchy low-frequency
    noise. ``noise_sd`` is the standard deviation of the added noise in HU.
    """
    from scipy import ndimage

    img = ndimage.gaussian_filter(hu, (0, 0.6, 0.6))
    if sharpness > 1:
        img = img + (sharpness - 1.0) * (img - ndimage.gaussian_filter(img, (0, 1.2, 1.2)))
    white = rng.standard_normal(hu.shape, dtype=np.float32)
    if sharpness > 1:
        noise = white - 0.5 * ndimage.gaussian_filter(white, (0, 1.0, 1.0))
    else:
        noise = ndimage.gaussian_filter(white, (0, 1.0 / sharpness, 1.0 / sharpness))
    noise *= noise_sd / (float(noise.std()) or 1.0)
    # Photon starvation is worse where the beam crosses more tissue: a little more noise in the
    # soft tissue of the body than in the lungs.
    weight = np.where(hu > -500, np.float32(1.15), np.float32(0.9))
    return (img + noise * weight).astype(np.float32)


def write_ct_series(
    ctx: StudyContext,
    folder: Path,
    grid: Grid,
    phantom: Phantom,
    hu: F32,
    rng: np.random.Generator,
    uid_parts: tuple[object, ...],
) -> tuple[int, int]:
    """Write one axial CT series (superior slice first). Returns (files, bytes)."""
    spec = ctx.site.ct
    mas = float(rng.uniform(*spec.mas))
    noise_sd = spec.noise_hu * float(np.sqrt(REFERENCE_MAS / mas))
    img = ct_image(hu, spec.kernel_sharpness, noise_sd, rng)
    stored = np.clip(np.rint(img - spec.intercept), -32768, 32767).astype(np.int16)
    dz, dy, dx = grid.spacing
    series_uid = uid(*uid_parts, "series")
    n = grid.shape[0]
    files = size = 0
    for i, k in enumerate(range(n - 1, -1, -1), start=1):
        z = float(grid.z[k])
        sop_uid = uid(*uid_parts, "ct", i)
        desc = f"AXIAL {spec.kernel} {dz:.1f}mm"
        ds = base_dataset(ctx, CT_IMAGE_STORAGE, sop_uid, series_uid, "CT", 2, desc)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SoftwareVersions = spec.software
        ds.FrameOfReferenceUID = ctx.frame_uid
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.InstanceNumber = i
        ds.AcquisitionNumber = 1
        ds.ImagePositionPatient = [float(grid.x[0]), float(grid.y[0]), round(z, 3)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceLocation = round(z, 3)
        ds.SliceThickness = round(dz, 3)
        ds.SpacingBetweenSlices = round(dz, 3)
        ds.PixelSpacing = [round(dy, 6), round(dx, 6)]
        ds.ReconstructionDiameter = CT_FOV_MM
        ds.DataCollectionDiameter = 500.0
        ds.KVP = spec.kvp
        ds.XRayTubeCurrent = round(mas / 0.5)
        ds.ExposureTime = 500
        ds.Exposure = round(mas)
        ds.CTDIvol = round(mas * 0.068 * (spec.kvp / 120) ** 2.5, 2)
        ds.ConvolutionKernel = spec.kernel
        ds.GantryDetectorTilt = 0.0
        ds.TableHeight = 150.0
        ds.RotationDirection = "CW"
        ds.SpiralPitchFactor = 1.0
        ds.RescaleIntercept = spec.intercept
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = [-600, 40]
        ds.WindowWidth = [1500, 400]
        ds.BurnedInAnnotation = "NO"
        set_pixels(ds, stored[k], "MONOCHROME2", 16)
        size += write(ds, folder / f"{i}.dcm", ctx.site.transfer_syntax, stored[k])
        files += 1
    return files, size


def write_radiograph(
    ctx: StudyContext,
    folder: Path,
    renderer: RadiographRenderer,
    disease: Disease,
    scale: float,
    view: str,
    size: int,
    rng: np.random.Generator,
    uid_parts: tuple[object, ...],
) -> tuple[int, int]:
    """Write one chest radiograph (CR or DX per site) in ``view`` (PA or AP)."""
    spec = ctx.site.cxr
    mas = float(rng.uniform(*spec.mas)) * (0.7 if view == "AP" else 1.0)
    noise = 1.6 / np.sqrt(mas)
    img = renderer.render(disease, scale, view, size, noise, rng)
    if spec.photometric == "MONOCHROME1":
        img = (4095 - img).astype(np.uint16)
    dx = CR_IMAGE_STORAGE if spec.modality == "CR" else DX_IMAGE_STORAGE
    desc = f"CHEST {view}" + (" PORTABLE" if view == "AP" else "")
    ds = base_dataset(
        ctx, dx, uid(*uid_parts, "image"), uid(*uid_parts, "series"), spec.modality, 1, desc
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SoftwareVersions = "1.0"
    ds.InstanceNumber = 1
    ds.ViewPosition = view
    ds.PatientOrientation = ["L", "F"]
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator = "51185008", "SCT"
    region.CodeMeaning = "Chest"
    ds.AnatomicRegionSequence = Sequence([region])
    pixel = FIELD_MM / size
    ds.ImagerPixelSpacing = [round(pixel, 6), round(pixel, 6)]
    ds.PixelSpacing = [round(pixel, 6), round(pixel, 6)]
    ds.KVP = round(float(rng.uniform(*spec.kvp)))
    ds.Exposure = max(1, round(mas))
    ds.ExposureInuAs = round(mas * 1000)
    ds.DistanceSourceToDetector = 1800.0 if view == "PA" else 1000.0
    ds.DistanceSourceToPatient = 1600.0 if view == "PA" else 800.0
    if spec.modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageLaterality = "U"
        ds.DetectorType = "SCINTILLATOR"
        ds.ContentLabel = "CHEST"
        ds.PixelIntensityRelationship = "LOG"
        # -1: higher values mean less beam intensity (more attenuation), as in MONOCHROME2 here.
        ds.PixelIntensityRelationshipSign = 1 if spec.photometric == "MONOCHROME1" else -1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "US"
        ds.PresentationLUTShape = "INVERSE" if spec.photometric == "MONOCHROME1" else "IDENTITY"
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    set_pixels(ds, img, spec.photometric, 12)
    return 1, write(ds, folder / "1.dcm", ctx.site.transfer_syntax, img)
