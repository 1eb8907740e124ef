"""Inference worker: ``python -m pair.algorithms.worker --memory-mb M --threads T``.

Runs in its own process. Before importing anything heavy it (1) tries to enter a fresh network
namespace (no interfaces) via ``unshare(CLONE_NEWUSER|CLONE_NEWNET)``, (2) replaces socket
creation with a class that cannot be instantiated, (3) caps its address space (``RLIMIT_AS``),
forbids writing files (``RLIMIT_FSIZE`` 0) and core dumps, and sets ``no_new_privs``. Then
it loads the ONNX model with onnxruntime (CPU, limited threads) and answers JSON-line requests
on stdin with JSON lines on the original stdout. Vendor code never runs: a package is an ONNX
graph, executed only by onnxruntime's built-in operators.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import signal
import socket
import sys
import time
from typing import Any, BinaryIO, NoReturn

SLAB_BATCH = 16  # slabs per inference call: bounded memory for long series
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


class NetworkBlocked(OSError):
    pass


def _refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise NetworkBlocked("network access is disabled in the PAIR inference worker")


class _BlockedSocket(socket.socket):
    """Stays a class (modules such as ssl subclass ``socket.socket``) but cannot be created."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        _refuse()


NETNS_ENTERED = "entered an empty network namespace"
NETNS_NOT_ENTERED = (
    "network namespace NOT entered ({why}); the in-process socket block is the only network barrier"
)


def _enter_network_namespace() -> tuple[bool, str]:
    """Best effort: an empty network namespace (needs unprivileged user namespaces).

    Returns whether it was entered and a sentence saying so (with the kernel's reason when
    not), which the worker reports in every status so the node can log it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
            return True, NETNS_ENTERED
        err = ctypes.get_errno()
        why = f"unshare(CLONE_NEWUSER|CLONE_NEWNET) failed: {os.strerror(err)} (errno {err})"
    except (OSError, AttributeError) as exc:
        why = f"unshare unavailable: {type(exc).__name__}: {exc}"
    return False, NETNS_NOT_ENTERED.format(why=why)


def _no_new_privileges() -> bool:
    """prctl(PR_SET_NO_NEW_PRIVS): setuid binaries cannot raise this process's privileges."""
    try:
        return bool(ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def harden(memory_mb: int, threads: int) -> dict[str, Any]:
    """Cut the process off from the network and cap its memory; call before other imports."""
    netns, netns_detail = _enter_network_namespace()
    import _socket

    socket.socket = _BlockedSocket  # type: ignore[misc]
    socket.create_connection = _refuse
    socket.socketpair = _refuse
    socket.fromfd = _refuse
    _socket.socket = _BlockedSocket  # type: ignore[misc]
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # no file writes: writing a regular file fails with EFBIG instead of killing the process
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    no_new_privs = _no_new_privileges()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    return {
        "netns": netns,
        "netns_detail": netns_detail,
        "rlimit_as": limit,
        "rlimit_fsize": 0,
        "no_new_privs": no_new_privs,
    }


def _classify(exc: BaseException) -> str:
    text = f"{type(exc).__name__} {exc}".lower()
    if isinstance(exc, MemoryError) or "bad_alloc" in text or "failed to allocate" in text:
        return "out of memory"
    return "inference error"


class Worker:
    def __init__(self, model_path: str, manifest: dict[str, Any], threads: int) -> None:
        import onnxruntime as ort

        import pair.algorithms.preprocess  # noqa: F401  (pydicom, decoders: imported up front)
        from pair.algorithms.manifest import Manifest

        self.manifest = Manifest.model_validate(manifest)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(
            model_path, sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.manifest.input.tensor_name
        self.output_name = self.manifest.output.tensor_name
        dim0 = next(i.shape[0] for i in self.session.get_inputs() if i.name == self.input_name)
        self.fixed_batch = dim0 if isinstance(dim0, int) else None

    def infer(self, batch: Any) -> Any:
        import numpy as np

        from pair.algorithms.postprocess import to_class_values

        if self.fixed_batch == 1 and batch.shape[0] > 1:
            return np.concatenate([self.infer(batch[i : i + 1]) for i in range(batch.shape[0])])
        raw = self.session.run([self.output_name], {self.input_name: batch})[0]
        return to_class_values(raw, self.manifest.output)

    def case(self, paths: list[str]) -> dict[str, Any]:
        from pathlib import Path

        from pair.algorithms.preprocess import (
            PreprocessError,
            check_modality,
            preprocess_dataset,
            read_dataset,
        )

        if self.manifest.input.slab is not None:
            return self.slab_case(paths)
        results: list[dict[str, Any]] = []
        for p in paths:
            try:
                ds = read_dataset(Path(p))
                check_modality(ds, self.manifest.modality)
                batch = preprocess_dataset(ds, self.manifest.input)
                values = self.infer(batch)
                results.append({"values": values.tolist()})
            except PreprocessError as exc:
                results.append({"reason": exc.reason, "message": exc.message})
            except Exception as exc:
                results.append({"reason": _classify(exc), "message": type(exc).__name__})
        return {"ok": True, "instances": results}

    def slab_case(self, paths: list[str]) -> dict[str, Any]:
        """A 2.5D package: the whole series at once, one slab (and one result) per instance,
        in the order given; a series that cannot be read fails every instance the same way."""
        from pathlib import Path

        import numpy as np

        from pair.algorithms.preprocess import (
            PreprocessError,
            check_modality,
            preprocess_slabs,
            read_dataset,
        )

        try:
            datasets = [read_dataset(Path(p)) for p in paths]
            for ds in datasets:
                check_modality(ds, self.manifest.modality)
            batch = preprocess_slabs(datasets, self.manifest.input)
            values = np.concatenate(
                [self.infer(batch[i : i + SLAB_BATCH]) for i in range(0, len(batch), SLAB_BATCH)]
            )
        except PreprocessError as exc:
            failed = {"reason": exc.reason, "message": exc.message}
            return {"ok": True, "instances": [failed] * len(paths)}
        except Exception as exc:
            failed = {"reason": _classify(exc), "message": type(exc).__name__}
            return {"ok": True, "instances": [failed] * len(paths)}
        return {"ok": True, "instances": [{"values": [row.tolist()]} for row in values]}

    def smoke(self) -> dict[str, Any]:
        """Synthetic inputs (batch 1 and 2) must give finite values of the declared shape."""
        import numpy as np

        spec = self.manifest.input
        rng = np.random.default_rng(0)
        shapes = []
        for n in (1,) if self.fixed_batch == 1 else (1, 2):
            chw = (spec.channels, spec.size.height, spec.size.width)
            shape = (n, *chw) if spec.layout.value == "NCHW" else (n, *chw[1:], chw[0])
            batch = rng.standard_normal(shape).astype(spec.dtype.value)
            t0 = time.perf_counter()
            values = self.infer(batch)
            seconds = time.perf_counter() - t0
            if values.shape[0] != n:
                return {
                    "ok": False,
                    "reason": "output shape",
                    "message": (f"batch of {n} gave {values.shape[0]} outputs"),
                }
            if not np.all(np.isfinite(values)):
                return {
                    "ok": False,
                    "reason": "output values",
                    "message": "synthetic input produced NaN or infinite outputs",
                }
            shapes.append({"batch": n, "values_shape": list(values.shape), "seconds": seconds})
        return {"ok": True, "runs": shapes}


def probe_file(path: str) -> bool:
    """True when writing data to a file fails (it must: RLIMIT_FSIZE is 0)."""
    try:
        with open(path, "wb") as fh:
            fh.write(b"x" * 4096)
            fh.flush()
        return False
    except OSError:
        return True


def probe(host: str, port: int) -> dict[str, Any]:
    """Report whether this process can open a network connection (it must not)."""
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(1.0)
        s.connect((host, port))
        s.close()
        return {"network_blocked": False, "detail": "connected"}
    except NetworkBlocked as exc:
        return {"network_blocked": True, "detail": str(exc)}
    except OSError as exc:
        return {"network_blocked": True, "detail": f"{type(exc).__name__}: {exc}"}


def _warm_up() -> None:
    """Decode, scale and resize a tiny in-memory image once: pydicom's pixel decoders, numpy's
    percentile (a lazy import inside numpy: ~25 ms) and PIL's resampling are set up on first
    use, which a spare does before a run needs it."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    from pair.algorithms.manifest import Resampling
    from pair.algorithms.preprocess import modality_values, resize

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = np.arange(64, dtype=np.uint16).tobytes()
    frame = modality_values(ds)[0]
    np.percentile(frame, [1.0, 99.0])
    resize(frame / 64.0, 4, 4, Resampling.BILINEAR)


def _send(out: BinaryIO, msg: dict[str, Any]) -> None:
    out.write(json.dumps(msg).encode() + b"\n")
    out.flush()


def _check(out: BinaryIO, config: dict[str, Any]) -> int:
    from pathlib import Path

    try:
        from pair.algorithms.onnx_checks import check_model_file

        problems = check_model_file(Path(config["check"]), config.get("manifest"))
    except Exception as exc:
        reason = _classify(exc)
        reason = "check failed" if reason == "inference error" else reason
        _send(out, {"ok": False, "reason": reason, "message": type(exc).__name__})
        return 3
    _send(out, {"ok": True, "problems": problems})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--memory-mb", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--preload",
        action="store_true",
        help="import onnxruntime and the DICOM readers before waiting for the first request "
        "(a pre-started spare worker: only the model load is left when a run needs it)",
    )
    args = parser.parse_args(argv)
    status = harden(args.memory_mb, args.threads)
    if args.preload:  # after harden: the imports already run under the memory limit
        import onnxruntime  # noqa: F401

        import pair.algorithms.manifest
        import pair.algorithms.postprocess  # noqa: F401

        _warm_up()
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol stream
    sys.stdout = sys.stderr
    stdin = sys.stdin.buffer
    config = json.loads(stdin.readline())
    if "check" in config:  # static checks of a submitted model, then exit
        return _check(proto_out, config)
    try:
        t0 = time.perf_counter()
        worker = Worker(config["model"], config["manifest"], args.threads)
    except Exception as exc:
        _send(
            proto_out,
            {
                "ok": False,
                "reason": _classify(exc) if isinstance(exc, MemoryError) else "model load failed",
                "message": f"{type(exc).__name__}: {exc}"[:500],
            },
        )
        return 3
    _send(proto_out, {"ok": True, "ready": True, "load_s": time.perf_counter() - t0, **status})
    for line in stdin:
        req = json.loads(line)
        op = req.get("op")
        try:
            if op == "case":
                reply = worker.case(list(req["paths"]))
            elif op == "smoke":
                reply = worker.smoke()
            elif op == "probe":
                reply = {"ok": True, **probe(req["host"], int(req["port"])), **status}
                if req.get("file"):
                    reply["file_write_blocked"] = probe_file(str(req["file"]))
            else:
                reply = {"ok": False, "reason": "protocol", "message": f"unknown op {op!r}"}
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"[:500] if op == "smoke" else type(exc).__name__
            reply = {"ok": False, "reason": _classify(exc), "message": detail}
        _send(proto_out, reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
