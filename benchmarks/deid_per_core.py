"""De-identification alone, one core: a 512x512 CT slice (CT_small header, 179 GE private
elements) parsed, de-identified + scanned, and written, N times.

    PYTHONPATH=src python benchmarks/deid_per_core.py [N [SOURCE.dcm]]
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np
import pydicom

from pair.deid.engine import Deidentifier
from pair.deid.profile import default_profile
from pair.deid.store import InMemoryMappingStore

# pydicom's CT_small.dcm as vendored with the tests (tests/data/README.md)
SOURCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "dicom" / "pydicom_CT_small.dcm"


def main(n: int = 500) -> None:
    src = pydicom.dcmread(sys.argv[2] if len(sys.argv) > 2 else SOURCE)
    src.Rows = src.Columns = 512
    src.PixelData = np.zeros((512, 512), dtype=np.int16).tobytes()
    buf = io.BytesIO()
    src.save_as(buf)
    data = buf.getvalue()
    deid = Deidentifier(default_profile(), b"bench-secret", InMemoryMappingStore(), "BM")

    start = time.perf_counter()
    for i in range(n):
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.SOPInstanceUID = f"1.2.3.4.{i}"
        out = io.BytesIO()
        deid.deidentify(ds).dataset.save_as(out)
    full = time.perf_counter() - start

    ds = pydicom.dcmread(io.BytesIO(data))
    start = time.perf_counter()
    for _ in range(n):
        deid.deidentify(ds)
    only = time.perf_counter() - start
    print(
        f"parse + de-identify + scan + write: {n / full:7.1f} instances/s ({full / n * 1e3:.2f} ms)"
    )
    print(
        f"de-identify + scan only:           {n / only:7.1f} instances/s ({only / n * 1e3:.2f} ms)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
