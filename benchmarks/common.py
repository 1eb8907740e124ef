"""Shared benchmark machinery: throwaway PAIR nodes, Orthanc and PostgreSQL servers, test data,
statistics and tables.

Every server listens on 127.0.0.1 (Orthanc 1.10 has no bind-address option: its HTTP server
refuses non-loopback clients with ``RemoteAccessAllowed: false`` and its DICOM server accepts
C-STORE only from the one declared peer AE at 127.0.0.1), keeps its data in a temporary
directory that is removed on stop, and is stopped by a context manager even when a benchmark
fails. Nothing here asserts on timings: benchmarks measure and print.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from pair.db.throwaway import PostgresServer, free_port

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

ORTHANC_BIN = Path(os.environ.get("PAIR_ORTHANC_BIN", "/usr/sbin/Orthanc"))
ORTHANC_DICOMWEB = Path(
    os.environ.get("PAIR_ORTHANC_DICOMWEB", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
)
PEER_AE = "BENCHSCU"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer {url} within {START_TIMEOUT_S:.0f} s:\n{_tail(log)}")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---- PostgreSQL ------------------------------------------------------------------------------


@contextmanager
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(prefix="pair-bench-pg-")
    try:
        yield server.start("-c shared_buffers=256MB")
    finally:
        server.stop()


@contextmanager
def database_url(backend: str, pg: PostgresServer | None, workdir: Path) -> Iterator[str]:
    """A fresh empty database of the given backend ('sqlite' or 'postgresql')."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'pair.db'}"
    elif backend == "postgresql":
        if pg is None:
            raise ValueError("a PostgreSQL server is needed for backend 'postgresql'")
        yield pg.create_database()
    else:
        raise ValueError(f"unknown backend {backend!r}: use sqlite or postgresql")


# ---- PAIR ------------------------------------------------------------------------------------


class PairNode:
    """A ``pair serve`` subprocess with one facility, a data-manager, its token and a DICOM peer."""

    name = "PAIR"

    def __init__(self, workdir: Path, db_url: str | None = None, ae_title: str = "PAIR") -> None:
        self.data_dir = workdir / "pair-node"
        self.db_url = db_url or f"sqlite:///{(self.data_dir / 'pair.db').resolve()}"
        self.port = free_port()
        self.dicom_port = free_port()
        self.ae_title = ae_title
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.dicomweb_path = "/dicomweb"
        self.dicomweb = self.base_url + self.dicomweb_path
        self.token = ""
        self.facility_id = 0
        self.log = workdir / "pair-serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def provision(self) -> None:
        """Migrate the schema and create the facility, user, token and AE title."""
        from pair.accounts import service
        from pair.core.config import get_settings
        from pair.core.node import open_node

        node = open_node(settings=get_settings(self.data_dir, database_url=self.db_url))
        try:
            with node.db.session() as s:
                fac = service.create_facility(s, "Benchmark Hospital", "BENCH")
                user = service.create_user(s, fac, "bench-dm", "data-manager", None)
                self.token = service.create_token(s, user, "benchmark")[1]
                service.add_ae_title(s, fac, PEER_AE, "benchmark SCU")
                self.facility_id = fac.id
        finally:
            node.close()

    def start(self) -> PairNode:
        if not self.token:
            self.provision()
        env = {
            **os.environ,
            "PAIR_DATABASE_URL": self.db_url,
            "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        cmd = [sys.executable, "-m", "pair", "serve", "--data-dir", str(self.data_dir)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--dicom-port", str(self.dicom_port), "--ae-title", self.ae_title]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _wait_http(self.base_url + "/healthz", self.proc, self.log, "pair serve")
        return self

    def stop(self) -> None:
        _stop(self.proc)

    def count_instances(self) -> int:
        """Instances stored for the facility, counted row by row with instance-level QIDO-RS
        (not from NumberOfStudyRelatedInstances, which is a maintained counter)."""
        total, page = 0, 10000
        while True:
            r = httpx.get(
                self.dicomweb + "/instances",
                params={"limit": str(page), "offset": str(total)},
                headers=self.headers,
                timeout=120,
            )
            if r.status_code == 204:
                return total
            r.raise_for_status()
            n = len(r.json())
            total += n
            if n < page:
                return total


# ---- Orthanc ---------------------------------------------------------------------------------


def orthanc_version() -> str:
    out = subprocess.run(
        [str(ORTHANC_BIN), "--version"], capture_output=True, text=True, timeout=30
    )
    first = (out.stdout or out.stderr).splitlines()
    return first[0].split()[-1] if first else "unknown"


class _UnauthenticatedServer:
    """A loopback server without tokens that counts its instances at ``/statistics``."""

    name = ""
    dicomweb_path = ""

    def __init__(self, workdir: Path, ae_title: str) -> None:
        self.dir = workdir / self.name.lower()
        self.port = free_port()
        self.dicom_port = free_port()
        self.ae_title = ae_title
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.dicomweb = self.base_url + self.dicomweb_path
        self.headers: dict[str, str] = {}
        self.log = workdir / f"{self.name.lower()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        _stop(self.proc)

    def count_instances(self) -> int:
        r = httpx.get(self.base_url + "/statistics", timeout=30)
        r.raise_for_status()
        return int(r.json()["CountInstances"])


class OrthancServer(_UnauthenticatedServer):
    """Debian's Orthanc with the DICOMweb plugin, temp storage, loopback clients only."""

    name = "Orthanc"
    dicomweb_path = "/dicom-web"

    def __init__(self, workdir: Path, ae_title: str = "ORTHANC") -> None:
        super().__init__(workdir, ae_title)

    def config(self) -> dict[str, Any]:
        storage = str(self.dir / "storage")
        return {
            "Name": "bench-orthanc",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "StorageCompression": False,
            "HttpPort": self.port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            "DicomCheckCalledAet": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            # No bind-address option in Orthanc 1.10: accept C-STORE only from our peer on
            # 127.0.0.1 instead of from anyone.
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowEcho": False,
            "DicomCheckModalityHost": True,
            "DicomModalities": {"bench": [PEER_AE, "127.0.0.1", 104]},
            "SaveJobs": False,
            "Plugins": [str(ORTHANC_DICOMWEB)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        }

    def start(self) -> OrthancServer:
        (self.dir / "storage").mkdir(parents=True, exist_ok=True)
        cfg = self.dir / "orthanc.json"
        cfg.write_text(json.dumps(self.config(), indent=2))
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(ORTHANC_BIN), str(cfg)], stdout=log, stderr=subprocess.STDOUT
            )
        _wait_http(self.base_url + "/system", self.proc, self.log, "Orthanc")
        return self


class FloorServer(_UnauthenticatedServer):
    """``ingest_floor.py``: PAIR's HTTP/DIMSE stack storing durably and doing nothing else."""

    name = "floor"
    dicomweb_path = "/dicomweb"

    def __init__(self, workdir: Path, ae_title: str = "FLOOR") -> None:
        super().__init__(workdir, ae_title)

    def start(self) -> FloorServer:
        env = {
            **os.environ,
            "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        cmd = [sys.executable, str(Path(__file__).with_name("ingest_floor.py"))]
        cmd += ["--dir", str(self.dir), "--port", str(self.port)]
        cmd += ["--dicom-port", str(self.dicom_port), "--ae-title", self.ae_title]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _wait_http(self.base_url + "/healthz", self.proc, self.log, "ingest floor")
        return self


Server = PairNode | OrthancServer | FloorServer


@contextmanager
def running(server: Any) -> Iterator[Any]:
    """Start a server and always stop it."""
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextmanager
def workdir(prefix: str = "pair-bench-", parent: Path | None = None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ---- test data -------------------------------------------------------------------------------

_FAMILY = ["GARCIA", "SMITH", "NGUYEN", "MULLER", "ROSSI", "KOWALSKI", "SILVA", "OKAFOR"]
_GIVEN = ["ANA", "JOHN", "MINH", "KLAUS", "GIULIA", "PIOTR", "JOAO", "CHIDI"]


def _phi(rng: np.random.Generator, n: int) -> dict[str, str]:
    """Fake but realistic identifying attributes (the kind de-identification must handle)."""
    return {
        "PatientName": f"{_FAMILY[n % len(_FAMILY)]}^{_GIVEN[(n * 3) % len(_GIVEN)]}",
        "PatientID": f"MRN{rng.integers(10**6, 10**7)}",
        "PatientBirthDate": f"19{rng.integers(30, 99)}0{rng.integers(1, 9)}1{rng.integers(0, 9)}",
        "PatientSex": "MF"[n % 2],
        "PatientAge": f"0{rng.integers(20, 90)}Y",
        "PatientAddress": f"{rng.integers(1, 200)} Main Street, Springfield",
        "AccessionNumber": f"ACC{rng.integers(10**7, 10**8)}",
        "ReferringPhysicianName": "HOUSE^GREGORY",
        "InstitutionName": "Springfield General Hospital",
        "OperatorsName": "TECH^TERRY",
    }


def _image(
    ds: Dataset, rows: int, cols: int, pixels: np.ndarray, signed: bool, bits_stored: int
) -> None:
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = pixels.tobytes()


def _base(sop_class: str, uid: str, study: str, series: str, phi: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(uid)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    for k, v in phi.items():
        setattr(ds, k, v)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20200415"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.StudyID = "1"
    ds.Manufacturer = "ACME"
    ds.ManufacturerModelName = "Scanner 3000"
    ds.DeviceSerialNumber = "SN-88123"
    ds.StationName = "CT01"
    return ds


def ct_slice(
    rng: np.random.Generator,
    study: str,
    series: str,
    uid: str,
    index: int,
    phi: dict[str, str],
    frame_of_reference: str = "",
) -> Dataset:
    """A 512x512 int16 axial CT slice: a noisy body ellipse in air (~512 KiB)."""
    ds = _base(CTImageStorage, uid, study, series, phi)
    ds.Modality = "CT"
    ds.StudyDescription = "CT CHEST WITHOUT CONTRAST"
    ds.SeriesDescription = "AXIAL 1.25MM"
    ds.BodyPartExamined = "CHEST"
    ds.SeriesNumber = 2
    ds.InstanceNumber = index
    ds.FrameOfReferenceUID = frame_of_reference or series
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [-250.0, -250.0, -1.25 * index]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.977, 0.977]
    ds.SliceThickness = 1.25
    ds.KVP = 120
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = -600
    ds.WindowWidth = 1500
    yy, xx = np.mgrid[-256:256, -256:256]
    body = (xx / 220.0) ** 2 + (yy / 160.0) ** 2 <= 1.0
    lung = ((np.abs(xx) - 90) / 70.0) ** 2 + (yy / 110.0) ** 2 <= 1.0
    img = np.where(body, 1064, 24) + np.where(lung, -850, 0)
    img = img + rng.normal(0, 20, (512, 512))
    _image(ds, 512, 512, np.clip(img, 0, 4095).astype(np.int16), signed=True, bits_stored=16)
    return ds


def cr_image(
    rng: np.random.Generator, study: str, series: str, uid: str, phi: dict[str, str], size: int
) -> Dataset:
    """A size x size 12-bit chest radiograph (2048^2 is 8 MiB)."""
    ds = _base(ComputedRadiographyImageStorage, uid, study, series, phi)
    ds.Modality = "CR"
    ds.StudyDescription = "XR CHEST 1 VIEW"
    ds.SeriesDescription = "AP PORTABLE"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "AP"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImagerPixelSpacing = [0.15, 0.15]
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    half = size // 2
    yy, xx = np.mgrid[-half : size - half, -half : size - half].astype(np.float32)
    chest = ((np.abs(xx) - size * 0.2) / (size * 0.17)) ** 2 + (yy / (size * 0.3)) ** 2 <= 1.0
    img = np.where(chest, 900.0, 3000.0) + rng.normal(0, 40, (size, size)).astype(np.float32)
    _image(ds, size, size, np.clip(img, 0, 4095).astype(np.uint16), signed=False, bits_stored=12)
    return ds


@dataclass
class DataSet:
    """Files written for a benchmark, in send order."""

    files: list[Path]
    total_bytes: int
    studies: int
    description: str

    @property
    def mb(self) -> float:
        return self.total_bytes / 1e6


def make_dataset(
    out: Path,
    ct: int = 200,
    cr: int = 10,
    ct_per_series: int = 50,
    cr_size: int = 2048,
    seed: int = 7,
) -> DataSet:
    """``ct`` CT slices (series of ``ct_per_series``, one study each) and ``cr`` one-image CR
    studies, each study with its own fake patient; deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    studies = 0

    def uid(*parts: object) -> str:
        return generate_uid(entropy_srcs=[str(seed), *map(str, parts)])

    n_series = (ct + ct_per_series - 1) // ct_per_series
    for s in range(n_series):
        studies += 1
        phi = _phi(rng, studies)
        study, series = uid("ct-study", s), uid("ct-series", s)
        for i in range(s * ct_per_series, min(ct, (s + 1) * ct_per_series)):
            index = i - s * ct_per_series + 1
            ds = ct_slice(rng, study, series, uid("ct", i), index, phi, uid("for", s))
            path = out / f"ct_{i:05d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
    for j in range(cr):
        studies += 1
        ds = cr_image(
            rng, uid("cr-study", j), uid("cr-series", j), uid("cr", j), _phi(rng, studies), cr_size
        )
        path = out / f"cr_{j:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    total = sum(p.stat().st_size for p in files)
    desc = f"{ct} CT 512x512 int16 + {cr} CR {cr_size}x{cr_size} ({total / 1e6:.0f} MB)"
    return DataSet(files, total, studies, desc)


def load_dataset(folder: Path) -> DataSet:
    """Use existing DICOM files (for example ``pair synth`` output) instead of generated ones."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in {".dcm", ""})
    if not files:
        raise SystemExit(f"no DICOM files found under {folder}")
    total = sum(p.stat().st_size for p in files)
    return DataSet(files, total, 0, f"{len(files)} files from {folder} ({total / 1e6:.0f} MB)")


# ---- statistics and output -------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=float), q))


@dataclass
class Timing:
    """Wall time of a run plus per-request latencies in seconds."""

    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.latencies) * 1000 if self.latencies else float("nan")


def fmt(value: float | int | str | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value != value:  # NaN
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Print a rich table and return the same table as GitHub Markdown (for docs)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for h in headers:
        table.add_column(h, justify="left" if h == headers[0] else "right")
    for r in rows:
        table.add_row(*r)
    Console(width=160).print(table)
    md = [f"**{title}**", "", "| " + " | ".join(headers) + " |"]
    md.append("|" + "|".join("---" for _ in headers) + "|")
    md += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(md) + "\n"


def machine_description() -> str:
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024**2:.1f} GiB RAM"
    except OSError:
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem}, Python {platform.python_version()}, "
        f"512 KiB write+fsync {fsync_probe():.1f} ms (median)"
    )


def fsync_probe(folder: Path | None = None, n: int = 20) -> float:
    """Median ms to write and fsync 512 KiB here: durable stores (PAIR, Orthanc) pay this."""
    with tempfile.TemporaryDirectory(dir=folder) as d:
        lat = []
        block = os.urandom(512 * 1024)
        for i in range(n):
            t0 = time.perf_counter()
            with open(Path(d) / f"f{i}", "wb") as fh:
                fh.write(block)
                fh.flush()
                os.fsync(fh.fileno())
            lat.append(time.perf_counter() - t0)
    return float(np.median(lat)) * 1000


def loadavg() -> str:
    """1-minute load average: other work on the machine shows up here (and in the timings)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int, with_children: bool = False) -> float:
    """User+system CPU of a process (and, optionally, of its live and reaped children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    total = int(fields[11]) + int(fields[12])
    if with_children:
        total += int(fields[13]) + int(fields[14])
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                f = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(f[1]) == pid:
                total += int(f[11]) + int(f[12])
    return total / _TICK


def command_line() -> str:
    rel = Path(sys.argv[0]).resolve()
    try:
        shown = str(rel.relative_to(REPO))
    except ValueError:
        shown = sys.argv[0]
    return " ".join(["python", shown, *sys.argv[1:]])


def append_markdown(path: Path | None, text: str) -> None:
    if path is not None:
        with path.open("a") as fh:
            fh.write(text + "\n")
