"""Train PAIR's DEMO algorithms on synthetic images and write them as algorithm packages.

DEMO ONLY: the models learn to spot lung opacities in computer-made, chest-radiograph-like
images. They have never seen a real radiograph and must never be used on patients. They exist so
that submit → run → evaluate works out of the box.

    PYTHONPATH=src python scripts/train_demo_algorithm.py [--out DIR]            # demo-cxr-opacity
    PYTHONPATH=src python scripts/train_demo_algorithm.py --source synth         # demo-synth-cxr

``--source shapes`` (``demo-cxr-opacity``, used by the tests on the vendored radiographs) draws
its own simple images. ``--source synth`` (``demo-synth-cxr``, registered by ``make demo``)
renders radiographs with ``pair synth``'s own phantom, disease model and RT-PCR/category
probabilities, from patients of a seed the demo never uses, and learns the RT-PCR result: on
the demo's cohort it gives spread, imperfect scores (issue 15: the shapes model saturated at
1.000 on every ``pair synth`` radiograph, a distribution shift, so the demo showed AUC 1.0
with specificity 0).

Reproducible: fixed seeds, deterministic single-threaded training; the same torch version
produces the same model.onnx byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import io
from pathlib import Path

import numpy as np
import torch
import yaml
from scipy import ndimage
from torch import nn

from pair.algorithms.manifest import MANIFEST_NAME, Manifest
from pair.algorithms.preprocess import normalize, resize, scale_to_unit

DATA = Path(__file__).resolve().parents[1] / "src/pair/algorithms/data"
OUT = DATA / "demo-cxr-opacity"
SEED = 20200311  # the day ACR posted its COVID-19 CT use case for comment
RAW = 128  # synthetic "acquisition" size; the model sees 64x64 after preprocessing
SYNTH_SIZE = 256  # pair synth radiographs rendered at this size for training (demo: 1024)

MANIFEST = {
    "format_version": 1,
    "id": "demo-cxr-opacity",
    "name": "DEMO chest radiograph opacity detector (synthetic data, not for clinical use)",
    "version": "1.0.0",
    "vendor": "PAIR project (demo)",
    "licence": "Apache-2.0",
    "description": (
        "DEMO model trained only on synthetic, computer-generated chest-radiograph-like images "
        "to flag 'COVID-like opacities'. It exists to exercise PAIR's algorithm pipeline; its "
        "outputs on real images are meaningless."
    ),
    "intended_use": (
        "DEMO / software testing only. Not a medical device; must not be used for diagnosis, "
        "triage or any clinical decision."
    ),
    "use_case_id": "pair-demo-cxr-opacity",
    "modality": ["CR", "DX"],
    "body_part": "CHEST",
    "model": {"file": "model.onnx", "sha256": ""},
    "input": {
        "tensor_name": "image",
        "layout": "NCHW",
        "dtype": "float32",
        "size": {"height": 64, "width": 64},
        "channels": 1,
        "resampling": "area",
        "scaling": {"kind": "percentile", "lower": 1.0, "upper": 99.0},
        "invert_monochrome1": True,
        "normalization": {"kind": "meanstd", "mean": [0.5], "std": [0.25]},
        "aggregation": "max",
    },
    "output": {
        "kind": "binary",
        "tensor_name": "logit",
        "values": "logits",
        "cde_element": "RDE1360",
        "classes": [
            {"name": "absent", "label": "No opacity (DEMO)", "cde_code": "RDE1360.0"},
            {"name": "present", "label": "Opacity present (DEMO)", "cde_code": "RDE1360.1"},
        ],
        "positive_class": "present",
        "recommended_threshold": 0.5,
    },
}

MODEL_CARD = """# DEMO chest radiograph opacity detector — NOT FOR CLINICAL USE

**This is a demonstration model.** It was trained by `scripts/train_demo_algorithm.py` only on
synthetic, computer-generated images (a body with two dark "lungs", ribs, vessel texture,
clavicles, mediastinum, heart, diaphragm and soft-tissue shadows; positives add diffuse,
peripheral, lower-zone haze). It has never seen a real radiograph. Its outputs on real images
mean nothing: they are not even meant to separate COVID-19 from other images.

## Intended use
Exercising PAIR's algorithm repository: package validation, sandboxed inference, evaluation
reports. Not a medical device; not for diagnosis, triage or any clinical decision.

## Model
- Input: one 64×64 grey image (`image`, float32, NCHW, dynamic batch), built from a DICOM
  instance by: Modality LUT → 1st–99th percentile scaling → MONOCHROME1 inversion → area resize →
  (x − 0.5) / 0.25.
- Network: three 3×3 stride-2 convolutions (8, 16, 16 channels, ReLU), global average
  pooling, one linear unit. Output `logit` [N, 1]; PAIR applies a sigmoid to get P(opacity present).
- Training: {n_train} synthetic images, {epochs} epochs, Adam, seed {seed}.
- Synthetic held-out accuracy at threshold 0.5: {accuracy:.3f} ({n_test} images) — a statement
  about the synthetic task only.

## CDE binding
Output classes are bound to RadElement codes `RDE1360.0` / `RDE1360.1` (element RDE1360,
"Ground glass opacity", from the RDES296 COVID-19 set as listed in PAIR's reference notes,
where the element ids are marked *inferred*). Confirm the codes against the CDE catalog before
relying on them.

## Limitations
Everything. See above.
"""


SYNTH_MANIFEST = {
    **MANIFEST,
    "id": "demo-synth-cxr",
    "name": "DEMO chest radiograph COVID-19 classifier (pair synth phantom, not for clinical use)",
    "description": (
        "DEMO model trained only on radiographs rendered by PAIR's synthetic cohort generator "
        "(pair synth) to predict the simulated RT-PCR result. It exists so that the demo node "
        "shows an honest evaluation; its outputs on real images are meaningless."
    ),
}

SYNTH_MODEL_CARD = """\
# DEMO chest radiograph COVID-19 classifier (pair synth) — NOT FOR CLINICAL USE

**This is a demonstration model.** It was trained by
`scripts/train_demo_algorithm.py --source synth` only on radiographs rendered by PAIR's own
synthetic cohort generator (`pair synth`: a chest phantom projected like a radiograph, with
COVID-19-like lesions drawn from the RSNA category that the simulated RT-PCR result makes
likely). Its target is the simulated RT-PCR result, which the image only partly reveals (RT-PCR
positives without lesions, negatives with atypical lesions), so even a perfect reader of these
images is imperfect. It has never seen a real radiograph.

## Intended use
The `make demo` node: an evaluation of this model on the demo's own synthetic cohort shows
spread scores and an AUC with its confidence interval. The training patients come from a seed
the demo does not use. Not a medical device; not for diagnosis, triage or any clinical decision.

## Model
- Input: one 64×64 grey image (`image`, float32, NCHW, dynamic batch), built from a DICOM
  instance by: Modality LUT → 1st–99th percentile scaling → MONOCHROME1 inversion → area resize →
  (x − 0.5) / 0.25.
- Network: three 3×3 stride-2 convolutions (8, 16, 16 channels, ReLU), global max
  pooling, one linear unit. Output `logit` [N, 1]; PAIR applies a sigmoid to get P(RT-PCR positive).
- Training: {n_train} synthetic radiographs ({size}×{size}), {epochs} epochs, Adam, seed {seed}.
- Synthetic held-out accuracy at threshold 0.5: {accuracy:.3f} ({n_test} images) — a statement
  about the synthetic task only.

## Limitations
Everything. See above.
"""


def synthetic_image(rng: np.random.Generator, positive: bool) -> np.ndarray:
    """One chest-radiograph-like image in arbitrary detector units, ``RAW × RAW``.

    Body, two lungs with ribs and vessel texture, mediastinum, heart and diaphragm; positives
    add diffuse, peripheral/lower-zone haze of random extent and density ("opacities").
    """
    yy, xx = np.mgrid[0:RAW, 0:RAW].astype(np.float32) / RAW
    cx = 0.5 + rng.normal(0, 0.03)
    top, bottom = 0.12 + rng.normal(0, 0.03), 0.78 + rng.normal(0, 0.04)
    img = np.full((RAW, RAW), 0.75, np.float32)
    img[np.abs(xx - cx) > 0.46 + rng.normal(0, 0.02)] = 0.15  # air beside the body
    lungs = np.zeros_like(img)
    for side in (-1, 1):
        lx = cx + side * (0.215 + rng.normal(0, 0.015))
        rx = 0.18 + rng.normal(0, 0.012)
        ly, ry = (top + bottom) / 2, (bottom - top) / 2
        dome = bottom - 0.06 * np.cos((xx - lx) / rx * np.pi / 2)  # diaphragm
        inside = (((xx - lx) / rx) ** 2 + ((yy - ly) / ry) ** 2 < 1.0) & (yy < dome)
        lungs = np.maximum(lungs, inside.astype(np.float32))
    lungs = ndimage.gaussian_filter(lungs, 1.5)
    heart = np.exp(-(((xx - cx - 0.07) / 0.13) ** 2 + ((yy - bottom + 0.13) / 0.12) ** 2))
    lung_darkness = rng.uniform(0.45, 0.65)
    img -= lung_darkness * lungs * (1 - 0.8 * heart)
    img += 0.12 * np.exp(-(((xx - cx) / 0.08) ** 2))  # mediastinum, spine
    ribs = np.sin((yy + 0.25 * (xx - cx) ** 2) * rng.uniform(55, 75) + rng.uniform(0, 6))
    img += rng.uniform(0.02, 0.15) * np.clip(ribs, 0, 1) * lungs
    vessels = ndimage.gaussian_filter(rng.normal(0, 1, img.shape).astype(np.float32), 1.0)
    hilum = np.exp(-(((np.abs(xx - cx) - 0.1) / 0.12) ** 2 + ((yy - 0.45) / 0.2) ** 2))
    img += rng.uniform(0.05, 0.25) * np.abs(vessels) * lungs * (0.4 + hilum)
    for side in (-1, 1):  # clavicles
        clav = np.exp(
            -(((yy - top - 0.02 - side * 0.3 * (xx - cx) * rng.uniform(0.3, 0.8)) / 0.015) ** 2)
        )
        img += rng.uniform(0.1, 0.3) * clav * (np.abs(xx - cx - side * 0.18) < 0.2)
    if rng.random() < 0.5:  # smooth soft-tissue (breast) shadows over both lower zones
        for side in (-1, 1):
            shadow = np.exp(
                -(((xx - cx - side * 0.25) / 0.15) ** 2 + ((yy - bottom + 0.05) / 0.12) ** 2)
            )
            img += rng.uniform(0.05, 0.2) * shadow * lungs
    if positive:
        haze = np.zeros_like(img)
        for _ in range(rng.integers(1, 4)):
            side = rng.choice([-1, 1])
            px = cx + side * rng.uniform(0.18, 0.3)  # peripheral
            py = rng.uniform(0.45, 0.85) * (bottom - top) + top  # mid/lower zones
            sx, sy = rng.uniform(0.06, 0.16), rng.uniform(0.08, 0.2)
            haze += np.exp(-(((xx - px) / sx) ** 2 + ((yy - py) / sy) ** 2))
        texture = 0.7 + 0.3 * ndimage.gaussian_filter(rng.random(img.shape), 2) * 2
        img += rng.uniform(0.08, 0.35) * np.clip(haze, 0, 1) * texture.astype(np.float32) * lungs
    img += rng.normal(0, 0.02, img.shape).astype(np.float32)
    img = np.clip(img, 0.01, None) ** rng.uniform(0.8, 1.25)  # exposure / processing curve
    gain, offset = rng.uniform(800, 3000), rng.uniform(0, 500)
    return (img * gain + offset).astype(np.float32)


def synth_radiograph(index: int) -> tuple[np.ndarray, bool]:
    """One ``pair synth`` radiograph (MONOCHROME2) and its RT-PCR result, drawn as the generator
    draws a patient: RT-PCR at 50 %, RSNA category given RT-PCR, disease, PA or AP view, and an
    initial (1.0), milder (0.45) or worse (1.35) follow-up severity."""
    from pair.synth import config
    from pair.synth.anatomy import random_anatomy
    from pair.synth.disease import sample_disease
    from pair.synth.radiograph import RadiographRenderer
    from pair.synth.sampling import weighted

    clin = config.clinical()
    rng = np.random.default_rng([SEED, index])
    positive = bool(rng.random() < 0.5)
    category = weighted(rng, clin["rsna_given_pcr"]["positive" if positive else "negative"])
    extent = 0.0 if category == "negative" else float(rng.beta(1.6, 2.4))
    anatomy = random_anatomy(rng, "M" if rng.random() < 0.5 else "F")
    kinds = {"typical": clin["typical_kinds"], "atypical": clin["atypical_kinds"]}
    disease = sample_disease(anatomy, rng, category, extent, kinds)
    view = "AP" if rng.random() < 0.4 else "PA"
    scale = float(rng.choice([1.0, 1.0, 0.45, 1.35]))
    noise = 1.6 / np.sqrt(rng.uniform(1.5, 8.0))
    renderer = RadiographRenderer(anatomy, SYNTH_SIZE)
    img = renderer.render(disease, scale, view, SYNTH_SIZE, noise, rng)
    return img.astype(np.float32), positive


def to_input(raw: np.ndarray) -> np.ndarray:
    """The manifest's preprocessing, using PAIR's own functions (train == inference)."""
    spec = Manifest.model_validate(
        {**MANIFEST, "model": {"file": "model.onnx", "sha256": "0" * 64}}
    )
    unit = scale_to_unit(raw, spec.input)
    small = resize(unit, 64, 64, spec.input.resampling)
    return normalize(np.clip(small, 0, 1)[None], spec.input)


def dataset(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = rng.integers(0, 2, n)
    x = np.stack([to_input(synthetic_image(rng, bool(y))) for y in labels])
    return torch.from_numpy(x), torch.from_numpy(labels.astype(np.float32))[:, None]


def synth_dataset(start: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [synth_radiograph(i) for i in range(start, start + n)]
    x = np.stack([to_input(img) for img, _ in pairs])
    y = np.array([float(p) for _, p in pairs], np.float32)
    return torch.from_numpy(x), torch.from_numpy(y)[:, None]


class DemoNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # type: ignore[no-any-return]


def train(n_train: int, n_test: int, epochs: int, source: str = "shapes") -> tuple[DemoNet, float]:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if source == "synth":
        x, y = synth_dataset(0, n_train)
        xt, yt = synth_dataset(n_train, n_test)
    else:
        rng = np.random.default_rng(SEED)
        x, y = dataset(rng, n_train)
        xt, yt = dataset(rng, n_test)
    model = DemoNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        for idx in torch.randperm(n_train, generator=gen).split(64):
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float(((model(xt) > 0).float() == yt).float().mean())
    return model, acc


def export(model: DemoNet) -> bytes:
    buf = io.BytesIO()
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 64, 64),),
        buf,
        input_names=["image"],
        output_names=["logit"],
        dynamic_axes={"image": {0: "batch"}, "logit": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("shapes", "synth"), default="shapes")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    synth = args.source == "synth"
    args.out = args.out or (DATA / "demo-synth-cxr" if synth else OUT)
    args.n_train = args.n_train or (400 if synth else 2000)
    n_test = 200 if synth else 500
    model, acc = train(args.n_train, n_test, args.epochs, args.source)
    onnx_bytes = export(model)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model.onnx").write_bytes(onnx_bytes)
    manifest = {
        **(SYNTH_MANIFEST if synth else MANIFEST),
        "model": {"file": "model.onnx", "sha256": hashlib.sha256(onnx_bytes).hexdigest()},
    }
    Manifest.model_validate(manifest)
    header = (
        "# PAIR algorithm package manifest - DEMO model, written by "
        "scripts/train_demo_algorithm.py\n"
    )
    (args.out / MANIFEST_NAME).write_text(header + yaml.safe_dump(manifest, sort_keys=False))
    card = SYNTH_MODEL_CARD if synth else MODEL_CARD
    (args.out / "README.md").write_text(
        card.format(
            n_train=args.n_train,
            epochs=args.epochs,
            seed=SEED,
            accuracy=acc,
            n_test=n_test,
            size=SYNTH_SIZE,
        )
    )
    print(f"wrote {args.out} (model {len(onnx_bytes)} bytes, synthetic accuracy {acc:.3f})")


if __name__ == "__main__":
    main()
