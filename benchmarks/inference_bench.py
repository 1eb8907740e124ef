"""Inference pipeline throughput vs bare onnxruntime on the same model and images.

    PYTHONPATH=src python benchmarks/inference_bench.py [--repeat 5] [--rounds 5] [--images DIR]

Images: the chest radiographs vendored in tests/data/images (48 PNGs, long side 256 px; pass
``--images`` for another folder of PNGs, e.g. larger originals) wrapped as DICOM (each PNG wrapped
``--repeat`` times with different identifiers, so every instance is a distinct file). Every
variant reads the DICOM files, preprocesses them per the manifest and runs the demo model:

- bare: one in-process onnxruntime session (created in the timing), a plain loop, no isolation,
  with the same glibc malloc settings as the sandboxed worker (``--default-malloc``: without);
- new worker (``pair evaluate``, ``pair algorithm run``): ``run_inference`` starts a sandboxed
  worker process (no network, memory limit, per-case timeout), hashes every file for the cache;
- what a run costs inside ``pair serve`` (a ``WorkerPool`` with a spare worker; instance
  checksums come from the repository index, as in an evaluation run):
  - first run of an algorithm: the pre-started spare loads the model (the spare was started and
    did its imports before the timing, as it does at server start-up; the replacement spare,
    started when the run hands its worker back, is given the same time before the next run,
    and its CPU is reported separately);
  - later runs: the worker of the previous run, model already loaded, is reused;
  - re-run from the inference cache (resumed or repeated run);
- steady state: per image once the first result is in (worker start excluded).

Every run computes and writes every result (cold cache) except the re-run. The CLI run and a
server's first run start from an empty cache (creating its folders); later server runs add new
instances to the existing cache (the same files under other checksums). CPU seconds count this
process plus its workers (read from /proc for pooled workers, which outlive a run). Target:
overhead <= 25 % over bare onnxruntime.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import pydicom
import yaml

from pair.algorithms.manifest import Manifest
from pair.algorithms.postprocess import to_class_values
from pair.algorithms.preprocess import preprocess_dataset
from pair.algorithms.runner import Case, LoadedAlgorithm, WorkerPool, file_sha256, run_inference
from pair.algorithms.sandbox import MALLOC_ENV, WorkerProcess
from pair.algorithms.wrap import png_to_dicom
from pair.core.config import AlgorithmSettings, get_settings

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src/pair/algorithms/data/demo-cxr-opacity"
IMAGES = ROOT / "tests" / "data" / "images"
TICK = os.sysconf("SC_CLK_TCK")
SPARE_SETTLE_S = 3.0  # a server's spare has long finished its imports when a run comes

BARE = "bare onnxruntime (in-process loop)"
NEW = "new worker per run (pair evaluate / CLI)"
FIRST = "pair serve: first run (pre-started spare)"
WARM = "pair serve: later runs (warm worker)"
REPLAY = "pair serve: re-run from the cache"
NAMES = [BARE, NEW, FIRST, WARM, REPLAY]


def wrap_images(images: Path, out: Path, repeat: int) -> list[Path]:
    pngs = sorted(images.glob("*.png"))
    if not pngs:
        sys.exit(f"no PNG images under {images}")
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for r in range(repeat):
        for png in pngs:
            p = out / f"{png.stem}-{r}.dcm"
            png_to_dicom(png, p, patient_id=f"BENCH{r}", study_uid=f"2.25.{r + 1}{len(paths)}")
            paths.append(p)
    return paths


def _self_cpu() -> float:
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _proc_cpu(pid: int) -> float:
    """CPU seconds of a live child (pooled workers are not waited for, so rusage misses them)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


class Bench:
    def __init__(
        self, alg: LoadedAlgorithm, paths: list[Path], limits: AlgorithmSettings, tmp: Path
    ) -> None:
        self.alg, self.paths, self.limits, self.tmp = alg, paths, limits, tmp
        self.shas = [file_sha256(p) for p in paths]  # what the repository index holds
        self.wall: dict[str, list[float]] = {k: [] for k in NAMES}
        self.cpu: dict[str, list[float]] = {k: [] for k in NAMES}
        self.steady: list[float] = []
        self.next_spare_cpu: list[float] = []
        self.runs = 0

    def cases(self, salt: str | None) -> list[Case]:
        """None: the runner hashes the files; "": their checksums given (as the repository
        does); else checksums salted, so the same files count as new instances for the cache."""
        if salt is None:
            return [Case(p.stem, [p]) for p in self.paths]
        shas = [
            s if not salt else hashlib.sha256((s + salt).encode()).hexdigest() for s in self.shas
        ]
        return [Case(p.stem, [p], [s]) for p, s in zip(self.paths, shas, strict=True)]

    def bare(self) -> None:
        c0, t0 = _self_cpu(), time.perf_counter()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.limits.threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(
            str(self.alg.model_path), opts, providers=["CPUExecutionProvider"]
        )
        spec = self.alg.manifest
        for p in self.paths:
            x = preprocess_dataset(pydicom.dcmread(p), spec.input)
            to_class_values(
                sess.run([spec.output.tensor_name], {spec.input.tensor_name: x})[0], spec.output
            )
        self.wall[BARE].append(time.perf_counter() - t0)
        self.cpu[BARE].append(_self_cpu() - c0)

    def run(
        self, name: str, pool: WorkerPool | None, cache: Path, salt: str | None, pids: list[int]
    ) -> None:
        """One timed run; ``pids``: pooled workers whose CPU (from /proc) belongs to it."""
        first: list[float] = []

        def on_progress(done: int, _result: object) -> None:
            if done == 1:
                first.append(time.perf_counter())

        before = {pid: _proc_cpu(pid) for pid in pids}
        cases = self.cases(salt)
        c0, t0 = _self_cpu(), time.perf_counter()
        results = list(run_inference(self.alg, cases, cache, on_progress, self.limits, pool))
        elapsed = time.perf_counter() - t0
        cpu = _self_cpu() - c0 + sum(_proc_cpu(pid) - cpu for pid, cpu in before.items())
        failed = [r for r in results if not r.ok]
        if failed:
            sys.exit(f"{len(failed)} case(s) failed, e.g. {failed[0].error}: {failed[0].message}")
        if name == NEW:
            self.steady.append((t0 + elapsed - first[0]) / (len(cases) - 1))
        self.wall[name].append(elapsed)
        self.cpu[name].append(cpu)

    def fresh_cache(self) -> Path:
        self.runs += 1
        return self.tmp / f"cache{self.runs}"

    def round(self) -> None:
        self.bare()
        self.run(NEW, None, self.fresh_cache(), None, [])
        cache = self.fresh_cache()  # the node's inference cache
        with WorkerPool() as pool:  # a freshly started server
            pool.prestart(self.limits)
            spare = pool._spares[self.limits.model_dump_json()]
            time.sleep(SPARE_SETTLE_S)
            self.run(FIRST, pool, cache, "", [spare.pid])  # also creates the cache's folders
            time.sleep(SPARE_SETTLE_S)  # the next spare (started as the run ended) imports
            self.next_spare_cpu.append(_proc_cpu(pool._spares[self.limits.model_dump_json()].pid))
            self.run(WARM, pool, cache, f"{self.runs}a", [spare.pid])  # new instances
            self.run(WARM, pool, cache, f"{self.runs}b", [spare.pid])
            self.run(REPLAY, pool, cache, f"{self.runs}b", [spare.pid])


def same_malloc_as_worker() -> None:
    """Give the bare loop (this process) the glibc malloc settings of the worker (MALLOC_ENV):
    without them, mmap/munmap of every image's arrays costs the bare loop ~25 % more CPU, and
    the comparison would flatter the pipeline."""
    import ctypes

    libc = ctypes.CDLL(None)
    libc.mallopt(-3, int(MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]))  # M_MMAP_THRESHOLD
    libc.mallopt(-1, int(MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"]))  # M_TRIM_THRESHOLD


def worker_start_cpu(alg: LoadedAlgorithm, limits: AlgorithmSettings) -> float:
    """CPU seconds of starting a worker (process, sandbox, imports, model load), then closing it."""
    c0 = _self_cpu()
    WorkerProcess(alg, limits).close()
    return _self_cpu() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--images", type=Path, default=IMAGES, help="folder of chest PNGs")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave this process's glibc malloc at its defaults (the bare loop then runs ~25 %% "
        "slower than with the settings the sandboxed worker gets)",
    )
    args = parser.parse_args()
    if not args.default_malloc:
        same_malloc_as_worker()
    m = Manifest.model_validate(yaml.safe_load((DEMO / "pair-algorithm.yaml").read_text()))
    alg = LoadedAlgorithm(m, DEMO / "model.onnx", file_sha256(DEMO / "model.onnx"))
    # the PAIR_ALGORITHM_* settings, with the thread count of this run
    limits = get_settings().algorithms.model_copy(update={"threads": args.threads})
    with tempfile.TemporaryDirectory(prefix="pair-bench-") as tmp:
        paths = wrap_images(args.images, Path(tmp) / "dicom", args.repeat)
        bench = Bench(alg, paths, limits, Path(tmp))
        for p in paths:  # warm the page cache for every variant alike
            p.read_bytes()
        starts = []
        for _ in range(args.rounds):  # interleaved: every variant sees the same machine load
            bench.round()
            starts.append(worker_start_cpu(alg, limits))
    report(bench, args, m, len(paths), statistics.median(starts))


def report(bench: Bench, args: argparse.Namespace, m: Manifest, n: int, start_cpu: float) -> None:
    load = os.getloadavg()[0]
    print(
        f"{n} DICOM instances ({args.repeat} x {n // args.repeat} chest radiographs), model "
        f"{m.id} {m.version}, {args.threads} thread(s), {os.cpu_count()} CPUs, load average "
        f"{load:.1f}; median of {args.rounds} interleaved rounds; bare loop with "
        f"{'default' if args.default_malloc else 'the worker'} malloc settings\n"
    )
    print(
        f"{'variant':<44} {'seconds':>8} {'images/s':>9} {'overhead':>9} "
        f"{'CPU s':>7} {'CPU overhead':>12}"
    )
    base = bench.wall[BARE]
    cpu_base = statistics.median(bench.cpu[BARE])
    for name in NAMES:
        secs, cpu = statistics.median(bench.wall[name]), statistics.median(bench.cpu[name])
        paired = statistics.median([100 * (v - b) / b for b, v in _pairs(base, bench.wall[name])])
        print(
            f"{name:<44} {secs:>8.3f} {n / secs:>9.1f} {paired:>8.1f}% "
            f"{cpu:>7.2f} {100 * (cpu - cpu_base) / cpu_base:>11.1f}%"
        )
    steady = statistics.median(bench.steady)
    per_bare = statistics.median(base) / n
    print(
        f"{'new worker, steady state (start excluded)':<44} {steady * n:>8.3f} {1 / steady:>9.1f} "
        f"{100 * (steady - per_bare) / per_bare:>8.1f}%"
    )
    print(
        f"\noverhead = median over rounds of (variant - bare) / bare, each round's bare run as its "
        f"base.\nworker start (process, sandbox, imports, model load): {start_cpu:.2f} CPU s; "
        f"paid by every CLI run, by pair serve once at start-up (the spare) and again in the "
        f"background after a first run (the next spare: "
        f"{statistics.median(bench.next_spare_cpu):.2f} CPU s, not counted above)."
    )
    for name in (NEW, FIRST, WARM):
        paired = statistics.median([100 * (v - b) / b for b, v in _pairs(base, bench.wall[name])])
        verdict = "OK" if paired <= 25 else "ABOVE TARGET"
        print(f"target <= 25 %: {name}: {paired:.1f}% {verdict}")


def _pairs(base: list[float], values: list[float]) -> list[tuple[float, float]]:
    """Each round's bare time with the same round's runs of a variant (WARM runs twice)."""
    per_round = len(values) // len(base)
    return [(base[i // per_round], v) for i, v in enumerate(values)]


if __name__ == "__main__":
    main()
