"""How fast this machine's disk can store instances durably: the ceiling for any ingest here.

Every ingest server that acknowledges only what is on disk (PAIR: write, fsync, rename, fsync of
the folder) is bounded by the disk's sustained durable write rate, whatever its language. This
script measures, in a temporary folder on the file system the benchmarks use:

- ``sequential O_DIRECT``: one file written in 1 MiB blocks, bypassing the page cache: the
  device's best case (large sequential writes, no per-file cost);
- ``files, fsync each``: the content store's pattern (one file per instance: write, fsync,
  rename, fsync of the folder) with 1 and 2 threads;
- ``files, one sync per 50``: the same files with one ``os.sync`` per 50 (a group commit);
- ``files, no fsync``: page cache only (not durable: what a store that skips fsync could do).

With ``--orthanc-mb-s`` (Orthanc's measured ingest rate, e.g. from ``ingest_bench.py``) it also
prints the rate that 10x Orthanc would need. Each run writes ``--total`` bytes (default 2 GiB)
so that the disk's write cache is exhausted and the rate is the sustained one.

Run:  python benchmarks/disk_ceiling.py [--size 528000] [--total 2048] [--orthanc-mb-s 164]
"""

from __future__ import annotations

import argparse
import mmap
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import (
    append_markdown,
    command_line,
    fmt,
    loadavg,
    machine_description,
    print_table,
    workdir,
)

MiB = 1024 * 1024


def _rate(run: Callable[[], int]) -> tuple[float, float, float]:
    """(seconds, bytes written, CPU seconds of this process) of one measured run."""
    os.sync()
    t0, c0 = time.perf_counter(), time.process_time()
    written = run()
    wall = time.perf_counter() - t0
    return wall, float(written), time.process_time() - c0


def sequential_direct(folder: Path, total: int) -> int:
    """Write ``total`` bytes to one file with O_DIRECT (page-aligned 1 MiB buffer).

    Where the file system refuses O_DIRECT (tmpfs on older kernels) the file is written through
    the page cache and fsynced once, which is the next best case.
    """
    block = mmap.mmap(-1, MiB)
    block.write(os.urandom(MiB))
    path = folder / "direct.bin"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for _ in range(total // MiB):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    return total // MiB * MiB


def many_files(folder: Path, size: int, count: int, threads: int, mode: str) -> int:
    """Store ``count`` distinct files of ``size`` bytes the way the content store does."""
    payload = bytearray(os.urandom(size))
    folder_fd = os.open(folder, os.O_RDONLY)

    def one(i: int) -> None:
        tmp = folder / f".tmp-{i}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, i.to_bytes(8, "little") + payload[8:])
            if mode == "fsync":
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, folder / f"f{i}")
        if mode == "fsync":
            os.fsync(folder_fd)
        elif mode == "group" and i % 50 == 49:
            os.sync()

    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(count)))
        if mode == "group":
            os.sync()
    finally:
        os.close(folder_fd)
    return size * count


def measure(root: Path, size: int, total: int) -> list[tuple[str, float, float, float, int]]:
    """Rows of (name, seconds, bytes, CPU seconds, files) for each write pattern."""
    count = max(1, total // size)

    def files(threads: int, mode: str) -> Callable[[Path], int]:
        return lambda d: many_files(d, size, count, threads, mode)

    plans: list[tuple[str, Callable[[Path], int], int]] = [
        ("sequential O_DIRECT, 1 MiB blocks", lambda d: sequential_direct(d, total), 0),
        ("files, fsync each, 1 thread", files(1, "fsync"), count),
        ("files, fsync each, 2 threads", files(2, "fsync"), count),
        ("files, one sync per 50, 1 thread", files(1, "group"), count),
        ("files, no fsync (not durable), 1 thread", files(1, "none"), count),
        ("files, no fsync (not durable), 2 threads", files(2, "none"), count),
    ]
    rows = []
    for name, plan, files in plans:
        folder = root / f"run{len(rows)}"
        folder.mkdir()
        wall, written, cpu = _rate(lambda: plan(folder))  # noqa: B023
        rows.append((name, wall, written, cpu, files))
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
        print(f"  {name:42s} {written / wall / 1e6:8.0f} MB/s")
    return rows


def report(rows: Sequence[tuple[str, float, float, float, int]], args: argparse.Namespace) -> str:
    table = []
    for name, wall, written, cpu, files in rows:
        mb_s = written / wall / 1e6
        per_s = files / wall if files else written / args.size / wall
        ratio = mb_s / (10 * args.orthanc_mb_s) if args.orthanc_mb_s else None
        table.append(
            [
                name,
                fmt(written / MiB, 0),
                fmt(wall, 2),
                fmt(mb_s, 0),
                fmt(per_s, 0),
                fmt(cpu / files * 1000, 2) if files else "",
                fmt(ratio, 2) if ratio is not None else "",
            ]
        )
    headers = ["write pattern", "MiB", "wall s", "MB/s", f"instances/s ({args.size} B)"]
    headers += ["CPU ms/file", "÷ 10x Orthanc's MB/s"]
    md = print_table("Durable write ceiling of this disk", headers, table)
    lines = [f"`{command_line()}`", "", f"{machine_description()}; load {loadavg()}", "", md]
    if args.orthanc_mb_s:
        need = 10 * args.orthanc_mb_s
        lines.append(
            f"10x Orthanc ({args.orthanc_mb_s:g} MB/s measured) needs {need:.0f} MB/s"
            " stored durably."
        )
        print(lines[-1])
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=528_000, help="bytes per file (a CT slice)")
    p.add_argument("--total", type=int, default=2048, help="MiB written per pattern")
    p.add_argument("--orthanc-mb-s", type=float, help="Orthanc's measured ingest MB/s")
    p.add_argument("--folder", type=Path, help="file system to test (default: the temp folder)")
    p.add_argument("--markdown", type=Path, help="append the result table to this file")
    args = p.parse_args(argv)
    with workdir("pair-disk-", args.folder) as root:
        rows = measure(root, args.size, args.total * MiB)
    append_markdown(args.markdown, report(rows, args))


if __name__ == "__main__":
    main()
