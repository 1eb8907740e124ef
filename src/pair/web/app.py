"""FastAPI application factory. Each capability contributes one router."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

import pair
from pair.algorithms.sandbox import WorkerPool
from pair.core.node import Node
from pair.web.cors import CorsMiddleware
from pair.web.errors import install_error_handlers
from pair.web.headers import SecurityHeadersMiddleware
from pair.web.sessions import ServerSessionMiddleware
from pair.web.templating import PACKAGE_ROOT, register_nav
from pair.web.urlguard import NulGuard
from pair.web.urls import ForwardedHeaders


def create_app(node: Node, worker_pool: WorkerPool | None = None) -> FastAPI:
    """The node's app; ``pair serve`` passes the warm inference ``worker_pool`` it owns."""
    from pair.accounts.api import router as accounts_router
    from pair.accounts.sessions_api import router as sessions_router
    from pair.algorithms.api import router as algorithms_router
    from pair.audit.api import router as audit_router
    from pair.cde.api import router as cde_router
    from pair.clinical.api import router as clinical_router
    from pair.deid.api import router as deid_router
    from pair.evaluation.runs.api import router as evalruns_router
    from pair.federated.api import router as federated_router
    from pair.registry.api import router as registry_router
    from pair.registry.performance.api import router as perf_registry_router
    from pair.reporting.api import router as reporting_router
    from pair.repository.api import router as repository_router
    from pair.repository.burned_in import router as burned_in_router
    from pair.repository.dicomweb import router as dicomweb_router
    from pair.repository.wado_uri import router as wado_uri_router
    from pair.sharing.api import router as sharing_router
    from pair.sharing.feed.api import router as feed_router
    from pair.usecases.api import router as usecases_router
    from pair.usecases.service import ensure_shipped
    from pair.web.ohif import router as ohif_router

    app = FastAPI(
        title="PAIR node",
        version=pair.__version__,
        description="Pandemic AI Response platform: case repository, DICOMweb, reporting, "
        "local AI evaluation.",
        openapi_url="/openapi.json",
    )
    app.state.node = node
    app.state.worker_pool = worker_pool
    app.add_middleware(ServerSessionMiddleware, node=node)
    app.add_middleware(NulGuard)  # before sessions and routes: a NUL in the URL is a 400
    app.add_middleware(SecurityHeadersMiddleware)  # also on errors and static files
    # outermost: a cross-origin viewer can read the node's errors (PAIR_CORS_ORIGINS)
    app.add_middleware(CorsMiddleware, origins=node.settings.cors_origins)
    # the proxy's client address, scheme and host, believed from PAIR_FORWARDED_ALLOW_IPS only
    app.add_middleware(ForwardedHeaders, trusted=node.settings.forwarded_allow_ips)
    install_error_handlers(app)
    with node.db.session() as session:  # shipped use cases are published from the first request
        ensure_shipped(session)

    @app.get("/healthz", tags=["system"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": pair.__version__, "role": node.settings.role}

    app.include_router(accounts_router)
    app.include_router(sessions_router)
    app.include_router(audit_router)
    app.include_router(deid_router)
    app.include_router(burned_in_router)
    app.include_router(repository_router)
    app.include_router(dicomweb_router)
    app.include_router(wado_uri_router)
    app.include_router(cde_router)
    app.include_router(reporting_router)
    app.include_router(algorithms_router)
    app.include_router(clinical_router)
    app.include_router(evalruns_router)
    app.include_router(usecases_router)
    app.include_router(perf_registry_router)
    app.include_router(registry_router)
    app.include_router(sharing_router)
    app.include_router(federated_router)
    app.include_router(feed_router)
    app.include_router(ohif_router)  # the optional OHIF viewer at /ohif/ (PAIR_OHIF_DIR)
    install_portal(app)
    return app


def install_portal(app: FastAPI) -> None:
    """Mount static files, the error renderer and every capability's page router."""
    from pair.accounts.pages import account_router, admin_router
    from pair.admin.pages import router as admin_pages
    from pair.algorithms.pages import router as algorithm_pages
    from pair.cde.pages import router as cde_pages
    from pair.clinical.pages import router as clinical_pages
    from pair.evaluation.runs.pages import router as evalruns_pages
    from pair.federated.pages import router as federated_pages
    from pair.registry.pages import router as registry_pages
    from pair.registry.performance.pages import router as perf_registry_pages
    from pair.reporting.pages import router as reporting_pages
    from pair.repository.pages import quarantine_router
    from pair.repository.pages import router as repository_pages
    from pair.sharing.pages import router as sharing_pages
    from pair.usecases.pages import router as usecases_pages
    from pair.web.pages import render_error
    from pair.web.pages import router as portal_router

    app.mount("/static", StaticFiles(directory=PACKAGE_ROOT / "web" / "static"), name="static")
    app.state.html_error_renderer = render_error
    register_nav("Home", "/", order=0)
    app.include_router(portal_router)
    app.include_router(repository_pages)
    app.include_router(clinical_pages)
    app.include_router(admin_pages)
    app.include_router(quarantine_router)
    app.include_router(admin_router)
    app.include_router(account_router)
    app.include_router(evalruns_pages)
    app.include_router(algorithm_pages)
    app.include_router(reporting_pages)
    app.include_router(cde_pages)
    app.include_router(sharing_pages)
    app.include_router(usecases_pages)
    app.include_router(perf_registry_pages)
    app.include_router(registry_pages)
    app.include_router(federated_pages)
