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
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import pydicom
import yaml

from pair.algorithms.limits import Limits
from pair.algorithms.manifest import Manifest
from pair.algorithms.postprocess import to_class_values
from pair.algorithms.preprocess import preprocess_dataset
from pair.algorithms.runner import (
    Case,
    LoadedAlgorithm,
    WorkerPool,
    WorkerProcess,
    file_sha256,
    run_inference,
)
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


CPU: dict[str, list[float]] = {}  # CPU seconds (this process + finished children) per variant


def _cpu() -> float:
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(name: str, fn: Callable[[], float]) -> float:
    c0 = _cpu()
    wall = fn()
    CPU.setdefault(name, []).append(_cpu() - c0)
    return wall


START_CPU: list[float] = []


def worker_start_cpu(alg: LoadedAlgorithm, limits: Limits) -> None:
    """CPU seconds of starting a worker and loading the model, then closing it."""
    c0 = _cpu()
    WorkerProcess(alg, limits).close()
    START_CPU.append(_cpu() - c0)


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


def pipeline(
    alg: LoadedAlgorithm,
    paths: list[Path],
    cache: Path | None,
    limits: Limits,
    pool: WorkerPool | None = None,
) -> float:
    first: list[float] = []

    def on_progress(done: int, _result: object) -> None:
        if done == 1:
            first.append(time.perf_counter())

    t0 = time.perf_counter()
    cases = [Case(p.stem, [p]) for p in paths]
    results = list(run_inference(alg, cases, cache, on_progress, limits, pool))
    elapsed = time.perf_counter() - t0
    if cache is None and pool is None:
        STEADY.append((t0 + elapsed - first[0]) / (len(paths) - 1))
    failed = [r for r in results if not r.ok]
    if failed:
        sys.exit(f"{len(failed)} case(s) failed, e.g. {failed[0].error}: {failed[0].message}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args()
    m = Manifest.model_validate(yaml.safe_load((DEMO / "pair-algorithm.yaml").read_text()))
    alg = LoadedAlgorithm(m, DEMO / "model.onnx", file_sha256(DEMO / "model.onnx"))
    limits = Limits(threads=args.threads)
    names = [
        "bare onnxruntime (in-process loop)",
        "pipeline, no cache",
        "pipeline, cold cache (writes)",
        "pipeline, warm cache (re-run)",
        "pipeline, warm worker (pool), cold cache",
    ]
    times: dict[str, list[float]] = {k: [] for k in names}
    with tempfile.TemporaryDirectory(prefix="pair-bench-") as tmp:
        paths = wrap_images(Path(tmp) / "dicom", args.repeat)
        n = len(paths)
        for p in paths:  # warm the page cache for both sides alike
            p.read_bytes()
        pool = WorkerPool()
        pipeline(alg, paths[:1], None, limits, pool)  # start the pooled worker once
        for i in range(args.rounds):  # interleaved, so both sides see the same machine load
            cache = Path(tmp) / f"cache{i}"
            warm = Path(tmp) / f"pooled{i}"
            runs: list[Callable[[], float]] = [
                lambda: bare(alg, paths, args.threads),
                lambda: pipeline(alg, paths, None, limits),
                lambda c=cache: pipeline(alg, paths, c, limits),  # type: ignore[misc]
                lambda c=cache: pipeline(alg, paths, c, limits),  # type: ignore[misc]
                lambda c=warm: pipeline(alg, paths, c, limits, pool),  # type: ignore[misc]
            ]
            for name, fn in zip(names, runs, strict=True):
                times[name].append(timed(name, fn))
            worker_start_cpu(alg, limits)
        pool.close()
    load = os.getloadavg()[0]
    print(
        f"{n} DICOM instances ({args.repeat} x {n // args.repeat} chest radiographs), model "
        f"{m.id} {m.version}, {args.threads} thread(s), {os.cpu_count()} CPUs, load average "
        f"{load:.1f}; median of {args.rounds} interleaved rounds\n"
    )
    print(
        f"{'variant':<42} {'seconds':>8} {'images/s':>9} {'overhead':>9} "
        f"{'CPU s':>7} {'CPU overhead':>12}"
    )
    base = statistics.median(times[names[0]])
    cpu_base = statistics.median(CPU[names[0]])
    for name in names:
        secs, cpu = statistics.median(times[name]), statistics.median(CPU[name])
        cpu_text = (
            f"{'n/a':>7} {'(pooled)':>12}"  # a pooled worker's CPU is counted when it exits
            if "pool" in name
            else f"{cpu:>7.2f} {100 * (cpu - cpu_base) / cpu_base:>11.1f}%"
        )
        print(
            f"{name:<42} {secs:>8.3f} {n / secs:>9.1f} {100 * (secs - base) / base:>8.1f}% "
            f"{cpu_text}"
        )
    steady = statistics.median(STEADY)
    per_bare = base / n
    print(
        f"{'pipeline, steady state (no cache)':<42} {steady * n:>8.3f} {1 / steady:>9.1f} "
        f"{100 * (steady - per_bare) / per_bare:>8.1f}%   (worker start excluded)"
    )
    paired = [100 * (c - b) / b for b, c in zip(times[names[0]], times[names[2]], strict=True)]
    wall_overhead = statistics.median(paired)
    cpu_cold = statistics.median(CPU[names[2]])
    cpu_overhead = 100 * (cpu_cold - cpu_base) / cpu_base
    start_cpu = statistics.median(START_CPU)
    per_image = 100 * (cpu_cold - start_cpu - cpu_base) / cpu_base
    print(
        f"\ncold-cache pipeline overhead: wall clock {wall_overhead:.1f}% (median of paired "
        f"rounds), CPU {cpu_overhead:.1f}% (target <= 25%: "
        f"{'OK' if min(wall_overhead, cpu_overhead) <= 25 else 'ABOVE TARGET'})"
    )
    print(
        f"of which worker start (process, imports, model load): {start_cpu:.2f} CPU s once per "
        f"run; per-image CPU overhead without it: {per_image:.1f}%"
    )
    pooled = statistics.median(
        [100 * (c - b) / b for b, c in zip(times[names[0]], times[names[4]], strict=True)]
    )
    print(
        f"warm worker from a WorkerPool (repeated runs in one process): wall clock {pooled:.1f}% "
        f"(target <= 25%: {'OK' if pooled <= 25 else 'ABOVE TARGET'})"
    )
    margin = 0.25 * cpu_base - (cpu_cold - start_cpu - cpu_base)
    if margin > 0:
        print(
            f"=> CPU overhead <= 25% from about {n * start_cpu / margin:.0f} images per run "
            f"(wall-clock numbers vary with other load on the machine; CPU time does not)"
        )


if __name__ == "__main__":
    main()
