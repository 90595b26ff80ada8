"""The FastAPI application: `create_app(settings)` wires settings, catalog, auth, audit, routes."""

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Final

from fastapi import FastAPI

from service import errors
from service.audit import AuditMiddleware, AuditWriter
from service.auth import OidcVerifier
from service.database import make_engine
from service.routers import aggregates, audit, health, indicators, releases, uploads
from service.settings import Settings

API_PREFIX = "/api/v1"
# Threads for the per-request catalog look-ups (API key, served release): fewer than the
# engine's pool (SQLAlchemy's default: 5 connections), so each reuses a pooled connection.
CATALOG_THREADS: Final = 4


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API over one data directory; refuses to start without a proper pseudonym key."""
    settings = settings or Settings()
    # Raises ConfigurationError outside demo mode without a proper key: uploads re-key pseudonyms
    # and aggregates derive their cell keys from it, so the service is useless (and unsafe) without.
    settings.key_bytes()
    engine = make_engine(settings)
    audit_writer = AuditWriter(engine)
    catalog_threads = ThreadPoolExecutor(CATALOG_THREADS, thread_name_prefix="kvarus-catalog")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        audit_writer.close()  # every queued audit row is committed before the process ends
        catalog_threads.shutdown(wait=False)

    app = FastAPI(
        lifespan=lifespan,
        title="Kvarus Analytics API",
        version="1.0.0",
        description="Quality indicators, uploads, releases and disclosure-controlled aggregates "
        "of a national quality register of substance-use treatment.",
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.audit = audit_writer
    app.state.catalog_threads = catalog_threads
    app.state.oidc = OidcVerifier(settings)
    errors.install(app)
    app.add_middleware(AuditMiddleware)
    app.include_router(health.router)
    for module in (uploads, releases, indicators, aggregates, audit):
        app.include_router(module.router, prefix=API_PREFIX)
    return app
