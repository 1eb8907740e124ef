"""Inference pipeline throughput vs bare onnxruntime on the same model and images.

    PYTHONPATH=src /work/venv/bin/python benchmarks/inference_bench.py [--repeat 5] [--threads 1]

Images: the chest radiographs in ../shared/data/images wrapped as DICOM (each PNG wrapped
``--repeat`` times with different identifiers, so every instance is a distinct file). Both
sides read the DICOM file, preprocess it per the manifest and run the demo model:

- bare: one in-process onnxruntime session, a plain loop, no isolation;
- pipeline: ``run_inference`` (worker process with no network, memory limit and per-case
  timeout; SHA-256 of every instance; JSON over pipes), without cache, with a cold cache
  (writes results), and a re-run from the warm cache.

Target: pipeline overhead ≤ 25 % (cold run, worker start included).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import pydicom
import yaml

from pair.algorithms.limits import Limits
from pair.algorithms.manifest import Manifest
from pair.algorithms.postprocess import to_class_values
from pair.algorithms.preprocess import preprocess_dataset
from pair.algorithms.runner import Case, LoadedAlgorithm, file_sha256, run_inference
from pair.algorithms.wrap import png_to_dicom

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src/pair/algorithms/data/demo-cxr-opacity"
SHARED = Path(os.environ.get("PAIR_SHARED_DATA", ROOT.parent / "shared" / "data"))


def wrap_images(out: Path, repeat: int) -> list[Path]:
    pngs = sorted((SHARED / "images").glob("*.png"))
    if not pngs:
        sys.exit(f"no PNG images under {SHARED / 'images'} (set PAIR_SHARED_DATA)")
    paths = []
    for r in range(repeat):
        for png in pngs:
            p = out / f"{png.stem}-{r}.dcm"
            png_to_dicom(png, p, patient_id=f"BENCH{r}", study_uid=f"2.25.{r + 1}{len(paths)}")
            paths.append(p)
    return paths


def bare(alg: LoadedAlgorithm, paths: list[Path], threads: int) -> float:
    t0 = time.perf_counter()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(alg.model_path), opts, providers=["CPUExecutionProvider"])
    spec = alg.manifest
    for p in paths:
        x = preprocess_dataset(pydicom.dcmread(p), spec.input)
        to_class_values(
            sess.run([spec.output.tensor_name], {spec.input.tensor_name: x})[0], spec.output
        )
    return time.perf_counter() - t0


STEADY: list[float] = []  # per-image seconds after the first result (worker start excluded)


def pipeline(alg: LoadedAlgorithm, paths: list[Path], cache: Path | None, limits: Limits) -> float:
    first: list[float] = []

    def on_progress(done: int, _result: object) -> None:
        if done == 1:
            first.append(time.perf_counter())

    t0 = time.perf_counter()
    cases = [Case(p.stem, [p]) for p in paths]
    results = list(run_inference(alg, cases, cache, on_progress, limits))
    elapsed = time.perf_counter() - t0
    if cache is None:
        STEADY.append((t0 + elapsed - first[0]) / (len(paths) - 1))
    failed = [r for r in results if not r.ok]
    if failed:
        sys.exit(f"{len(failed)} case(s) failed, e.g. {failed[0].error}: {failed[0].message}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="best of N for each timing")
    args = parser.parse_args()
    m = Manifest.model_validate(yaml.safe_load((DEMO / "pair-algorithm.yaml").read_text()))
    alg = LoadedAlgorithm(m, DEMO / "model.onnx", file_sha256(DEMO / "model.onnx"))
    limits = Limits(threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="pair-bench-") as tmp:
        paths = wrap_images(Path(tmp) / "dicom", args.repeat)
        n = len(paths)
        for p in paths:  # warm the page cache for both sides alike
            p.read_bytes()
        rows: list[tuple[str, float]] = []
        rows.append(
            (
                "bare onnxruntime (in-process loop)",
                min(bare(alg, paths, args.threads) for _ in range(args.rounds)),
            )
        )
        rows.append(
            (
                "pipeline, no cache",
                min(pipeline(alg, paths, None, limits) for _ in range(args.rounds)),
            )
        )
        cold = []
        for i in range(args.rounds):
            cold.append(pipeline(alg, paths, Path(tmp) / f"cache{i}", limits))
        rows.append(("pipeline, cold cache (writes)", min(cold)))
        rows.append(
            (
                "pipeline, warm cache (re-run)",
                min(pipeline(alg, paths, Path(tmp) / "cache0", limits) for _ in range(args.rounds)),
            )
        )
    base = rows[0][1]
    print(
        f"{n} DICOM instances ({args.repeat} x {n // args.repeat} chest radiographs), "
        f"model {m.id} {m.version}, {args.threads} thread(s), best of {args.rounds}\n"
    )
    print(f"{'variant':<36} {'seconds':>8} {'images/s':>9} {'overhead':>9}")
    for name, secs in rows:
        print(f"{name:<36} {secs:>8.3f} {n / secs:>9.1f} {100 * (secs - base) / base:>8.1f}%")
    steady = min(STEADY)
    per_bare = base / n
    print(
        f"{'pipeline, steady state (no cache)':<36} {steady * n:>8.3f} {1 / steady:>9.1f} "
        f"{100 * (steady - per_bare) / per_bare:>8.1f}%   (worker start excluded)"
    )
    cold_overhead = 100 * (rows[2][1] - base) / base
    verdict = "OK" if cold_overhead <= 25 else "ABOVE TARGET"
    print(
        f"\ncold-cache pipeline overhead {cold_overhead:.1f}% (target <= 25%): {verdict}; "
        f"the worker start is a one-off cost of about {rows[1][1] - steady * n:.2f} s per run"
    )
    startup = max(rows[1][1] - steady * n, 0.0)
    margin = 0.25 * per_bare - (steady - per_bare)
    if margin > 0:
        print(
            f"with that start-up, overhead is <= 25% from about {startup / margin:.0f} images "
            f"per run (steady-state cost {1000 * steady:.2f} ms/image vs bare "
            f"{1000 * per_bare:.2f} ms/image)"
        )


if __name__ == "__main__":
    main()
