"""The FastAPI application: `create_app(settings)` wires settings, catalog, auth, audit, routes."""

import gc
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Final

from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session

from etl.ledger import sweep_incoming
from schemas.errors import KvarusError
from schemas.organisations import Hierarchy
from service import aggregates, errors, published
from service.audit import AuditMiddleware, AuditWriter
from service.auth import OidcVerifier
from service.catalog_cache import CatalogCache
from service.database import make_engine
from service.routers import aggregates as aggregates_routes
from service.routers import audit, health, indicators, releases, uploads
from service.settings import Settings

API_PREFIX = "/api/v1"
# Threads for the per-request catalog look-ups the catalog cache does not answer (OIDC tokens;
# API keys and served releases on PostgreSQL): fewer than the engine's pool (SQLAlchemy's
# default: 5 connections), so each reuses a pooled connection.
CATALOG_THREADS: Final = 4

logger = logging.getLogger("kvarus.api")


def warm_aggregates(settings: Settings, engine: Engine) -> None:
    """Build the latest release's episode view for aggregates ahead of the first researcher.

    Building it hashes every patient's record key once (seconds on a 10-million-episode release);
    done at start-up, in the background, the first aggregate query does not pay for it.
    """
    try:
        with Session(engine) as session:
            number = published.get_release(session, None).number
        aggregates.episode_view(
            published.read_manifest(settings, number),
            salt=aggregates.cell_key_salt(settings.key_bytes()),
            hierarchy=Hierarchy.default(),
        )
    except KvarusError as error:  # no release yet, or one without episodes: nothing to warm
        logger.info("aggregate warm-up skipped: %s", error.title)


def start_up_checks(settings: Settings) -> tuple[Engine, OidcVerifier]:
    """Every check a start-up makes, each raising `ConfigurationError`: the pseudonym key, the
    OIDC settings, the catalog (its engine, tables created). The catalog's engine and the OIDC
    verifier are returned for the app.

    `create_app` runs them, and so does `kvarus serve --workers N` before any worker starts: a
    worker failing them would exit, and uvicorn's supervisor restart it, forever.
    """
    # Raises ConfigurationError outside demo mode without a proper key: uploads re-key pseudonyms
    # and aggregates derive their cell keys from it, so the service is useless (and unsafe) without.
    # First: nothing is created (not even the catalog) for a service that may not start.
    settings.key_bytes()
    oidc = OidcVerifier(settings)  # an issuer without a JWKS URL is refused (no network here)
    return make_engine(settings), oidc


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API over one data directory; refuses to start on any failed `start_up_checks`."""
    settings = settings or Settings()
    engine, oidc = start_up_checks(settings)
    audit_writer = AuditWriter(engine)
    catalog_threads = ThreadPoolExecutor(CATALOG_THREADS, thread_name_prefix="kvarus-catalog")
    catalog_cache = CatalogCache.of(engine)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Upload files a dead process left behind. Only stale ones (an hour, the default): another
        # worker of this service may be loading a fresh one right now.
        swept = sweep_incoming(settings.data_dir)
        if swept:
            logger.info("removed %d stale upload file(s) from incoming/", len(swept))
        threading.Thread(
            target=warm_aggregates, args=(settings, engine), name="kvarus-warm", daemon=True
        ).start()
        # Start-up objects (modules, SQLAlchemy's and pydantic's caches: ~190,000) leave the
        # collector's reach: each full collection walked them all, a ~90 ms pause of every
        # request about once a second under load (read benchmark: p99 132 → 49 ms).
        gc.collect()
        gc.freeze()
        yield
        gc.unfreeze()
        audit_writer.close()  # every queued audit row is committed before the process ends
        if catalog_cache is not None:
            catalog_cache.close()
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
    app.state.catalog_cache = catalog_cache
    app.state.oidc = oidc
    errors.install(app)
    app.add_middleware(AuditMiddleware)
    app.include_router(health.router)
    for module in (uploads, releases, indicators, aggregates_routes, audit):
        app.include_router(module.router, prefix=API_PREFIX)
    return app
