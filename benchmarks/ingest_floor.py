"""The floor under PAIR's ingest: receive and store durably, nothing else.

A server on PAIR's own stack (uvicorn + httptools + Starlette for STOW-RS, pynetdicom for
C-STORE, PAIR's multipart splitter and content store: SHA-256, write, fsync, rename, fsync of
the folder; a STOW-RS request's files are made durable together, as in PAIR) that does none
of the work ingest must do: no parsing or validation, no de-identification, no re-encoding,
no index, no audit. Whatever it reaches is an upper bound for any pipeline built on this stack
on this machine; ``ingest_bench.py --floor`` runs it next to PAIR and Orthanc on the same files.

Run alone:  PYTHONPATH=src python benchmarks/ingest_floor.py --dir D --port P --dicom-port Q
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pair.repository.dimse_reactor import EventDrivenRequestHandler
from pair.repository.multipart import split_related
from pair.repository.storage import ContentStore, persist


class _Counter:
    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    def add(self, k: int) -> None:
        with self.lock:
            self.n += k


def build_app(store: ContentStore, stored: _Counter) -> Starlette:
    async def stow(request: Request) -> Response:
        body = await request.body()
        parts = split_related(body, request.headers.get("content-type", ""), "application/dicom")

        def write_all() -> None:  # in a thread, as PAIR does
            persist([store.stage(data)[2] for _, data in parts])

        await run_in_threadpool(write_all)
        stored.add(len(parts))
        return JSONResponse({})

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def count(_: Request) -> Response:
        return JSONResponse({"CountInstances": stored.n})

    return Starlette(
        routes=[
            Route("/dicomweb/studies", stow, methods=["POST"]),
            Route("/healthz", health),
            Route("/statistics", count),
        ]
    )


def start_dimse(store: ContentStore, stored: _Counter, port: int, ae_title: str) -> Any:
    def on_store(event: Any) -> Dataset | int:
        store.write(event.encoded_dataset(include_meta=True))
        stored.add(1)
        return 0x0000

    ae = AE(ae_title=ae_title)
    ae.maximum_pdu_size = 0
    ae.supported_contexts = AllStoragePresentationContexts
    server = ae.make_server(
        ("127.0.0.1", port),
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
        request_handler=EventDrivenRequestHandler,  # PAIR's association threads, as in PAIR
    )
    threading.Thread(target=server.serve_forever, name="FloorDicom", daemon=True).start()
    return server


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dicom-port", type=int, required=True)
    p.add_argument("--ae-title", default="FLOOR")
    args = p.parse_args(argv)
    store = ContentStore(args.dir / "storage", args.dir / "tmp")
    stored = _Counter()
    dimse = start_dimse(store, stored, args.dicom_port, args.ae_title)
    try:
        uvicorn.run(
            build_app(store, stored),
            host="127.0.0.1",
            port=args.port,
            log_level="warning",
            access_log=False,
        )
    finally:
        dimse.shutdown()


if __name__ == "__main__":
    main()
