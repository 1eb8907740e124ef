"""``pair serve``: the HTTP server and the DICOM listener in one process."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated, Any

import typer
import uvicorn

from pair.cli.common import DataDir, console, handle_errors
from pair.core.config import get_settings
from pair.core.errors import Invalid, PairError
from pair.core.node import open_node
from pair.web.app import create_app

log = logging.getLogger("pair.serve")
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@handle_errors
def serve(
    data_dir: DataDir,
    host: Annotated[str, typer.Option(envvar="PAIR_HOST", help="HTTP bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PAIR_PORT", help="HTTP port.")] = 8000,
    dicom_port: Annotated[
        int, typer.Option(envvar="PAIR_DICOM_PORT", help="DICOM port (0 disables DIMSE).")
    ] = 11112,
    ae_title: Annotated[
        str, typer.Option(envvar="PAIR_AE_TITLE", help="This node's AE title.")
    ] = "PAIR",
    role: Annotated[
        str,
        typer.Option(envvar="PAIR_ROLE", help="site (pushes to its hub) or hub (docs/hub.md)."),
    ] = "site",
    hub_url: Annotated[
        str,
        typer.Option(
            envvar="PAIR_HUB_URL",
            help="A site's hub (https; its credential comes from PAIR_HUB_TOKEN only).",
        ),
    ] = "",
    ssl_certfile: Annotated[
        str, typer.Option(envvar="PAIR_SSL_CERTFILE", help="Serve HTTPS with this certificate.")
    ] = "",
    ssl_keyfile: Annotated[
        str, typer.Option(envvar="PAIR_SSL_KEYFILE", help="The certificate's private key.")
    ] = "",
) -> None:
    """Start the HTTP server and the DICOM listener; SIGINT/SIGTERM stop both cleanly."""
    from pair.accounts.service import validate_ae_title

    validate_ae_title(ae_title)
    if role not in ("site", "hub"):
        raise Invalid(f"--role must be site or hub, not {role!r}.")
    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise Invalid("HTTPS needs both --ssl-certfile and --ssl-keyfile.")
    settings = get_settings(
        data_dir,
        host=host,
        port=port,
        dicom_port=dicom_port,
        ae_title=ae_title,
        role=role,
        hub_url=hub_url,
    )
    level = settings.log_level.upper()
    if level not in _LEVELS:
        raise Invalid(f"PAIR_LOG_LEVEL must be one of {', '.join(_LEVELS)}, not {level!r}.")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    node = open_node(settings=settings)
    from pair.repository.ingest import reconcile

    repaired = reconcile(node)
    if any(repaired.values()):
        console.print(f"start-up reconciliation: {repaired}")
    from pair.repository.workers import IngestWorkers, attach_workers, default_worker_count

    n_ingest = settings.ingest_workers
    n_ingest = default_worker_count() if n_ingest is None else n_ingest
    if n_ingest:
        workers = IngestWorkers(settings, n_ingest)
        attach_workers(node, workers)
        workers.warm_up()
        console.print(f"{n_ingest} ingest worker process(es) ready")
    from pair.algorithms.sandbox import WorkerPool
    from pair.evaluation.runs.service import resume_interrupted

    pool = WorkerPool(
        idle_s=settings.inference_worker_idle_s, max_idle=settings.inference_max_idle_workers
    )
    if settings.inference_spare_worker:
        pool.prestart(settings.algorithms)
    app = create_app(node, worker_pool=pool)
    pusher = _start_pusher(node)
    stop_resume = threading.Event()
    resumed = resume_interrupted(node, pool, stop_resume)
    if resumed:
        console.print(f"resuming {len(resumed)} interrupted evaluation run(s) in the background")
    from pair.sharing.feed.background import start_feed

    feed = start_feed(node)
    dimse: Any = None
    if dicom_port:
        from pair.repository.dimse import start_dimse_server

        try:
            dimse = start_dimse_server(node, host=host, port=dicom_port, ae_title=ae_title)
        except OSError as exc:
            stop_resume.set()
            if pusher is not None:
                pusher.stop()
            feed.close()
            pool.close()
            node.close()
            reason = exc.strerror or str(exc)
            raise PairError(f"Cannot listen for DICOM on {host}:{dicom_port}: {reason}.") from None
        console.print(f"DICOM listener {ae_title} on {host}:{dicom_port}")
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=level.lower(),
        access_log=False,
        proxy_headers=False,  # the app applies them itself (pair.web.urls.ForwardedHeaders)
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        ssl_certfile=ssl_certfile or None,
        ssl_keyfile=ssl_keyfile or None,
    )
    server = uvicorn.Server(config)
    stopped = threading.Event()

    def stop(signum: int, _frame: Any) -> None:
        if not stopped.is_set():
            stopped.set()
            server.should_exit = True

    scheme = "https" if ssl_certfile else "http"
    console.print(f"PAIR {role} serving {scheme}://{host}:{port}/ (data dir {data_dir})")
    # uvicorn captures SIGINT/SIGTERM while serving, then restores these handlers and re-raises
    # the signal to them; the DICOM listener is stopped in ``finally`` either way.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        server.run()
    finally:
        stop_resume.set()
        if pusher is not None:
            pusher.stop()
        feed.close()
        if dimse is not None:
            dimse.shutdown(grace_s=settings.shutdown_grace_s)
        pool.close()
        node.close()
        console.print("PAIR node stopped")


def _start_pusher(node: Any) -> Any:
    """A site with a hub pushes its outbox in the background (pair.sharing.pusher)."""
    settings = node.settings
    if settings.role != "site" or not settings.hub_url:
        return None
    from pair.sharing.pusher import Pusher, check_hub_url

    check_hub_url(settings.hub_url)
    if not settings.hub_token.get_secret_value():
        raise Invalid("A site with PAIR_HUB_URL needs its credential in PAIR_HUB_TOKEN.")
    pusher = Pusher(node)
    pusher.start()
    console.print(f"pushing to hub {settings.hub_url}")
    return pusher
