"""The FastAPI application: `create_app(settings)` wires settings, catalog, auth, audit, routes."""

import gc
import logging
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Final, NamedTuple
from urllib.parse import unquote

import duckdb
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartParser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from etl.keycheck import check_key
from etl.ledger import abandoned_requests, check_releases_here, repair, sweep_incoming
from etl.warehouse import Warehouse
from schemas.errors import KvarusError, Unauthorised
from schemas.organisations import Hierarchy
from service import aggregates, errors, published
from service.audit import (
    ANSWERED_QUERY,
    AUDITED_PREFIX,
    UNMATCHED_ROUTE,
    AuditMiddleware,
    AuditWriter,
    audited_query,
    match_route,
)
from service.auth import OidcVerifier, RevokedKey, Role, require
from service.catalog_cache import CatalogCache
from service.database import make_engine, session_scope
from service.deps import ROUTE_ROLES, get_principal, principal_of
from service.routers import aggregates as aggregates_routes
from service.routers import audit, health, indicators, releases, uploads
from service.settings import Settings

API_PREFIX = "/api/v1"
# Threads for the per-request catalog look-ups the catalog cache does not answer (OIDC tokens;
# API keys and served releases on PostgreSQL): fewer than the engine's pool (SQLAlchemy's
# default: 5 connections), so each reuses a pooled connection.
CATALOG_THREADS: Final = 4

# Request bodies: every route but the upload takes a small JSON body (an aggregate query, a
# release note): 1 MiB is far beyond any of them. The upload route takes the settings'
# `max_upload_bytes` plus this allowance for the multipart framing and the `form` field.
MAX_BODY_BYTES: Final = 1024 * 1024
MULTIPART_OVERHEAD_BYTES: Final = 64 * 1024
UPLOAD_ROUTE: Final = ("POST", f"{API_PREFIX}/uploads")
MAX_REMEMBERED_PATHS: Final = 4096
# How long a shutdown waits for the aggregate warm-up to stop (interrupted, it stops at once).
WARM_STOP_SECONDS: Final = 10.0

logger = logging.getLogger("kvarus.api")


class AccessLogPaths(logging.Filter):
    """uvicorn's access log line names the route template and the audit row's query (path
    parameters, a created object, the query's parameters: `service.audit.audited_query`), never
    the path and query as sent (a client may type an identity number into either). The query
    is the one the audit middleware computed for the request (`ANSWERED_QUERY`, set as the
    response starts, when uvicorn logs); a request the middleware does not see (outside
    /api/v1) has it computed here by the same rules. Installed on `uvicorn.access` while the
    app runs."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__()
        self.app = app

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access record: (client, method, path?query, HTTP version, status).
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, full_path, version, status = args
            raw_path, _, raw_query = str(full_path).partition("?")
            path = unquote(raw_path)
            entry = match_route(self.app, str(method), path)
            shown = entry.template if entry is not None else UNMATCHED_ROUTE
            answered = ANSWERED_QUERY.get()
            # Method and path, not the query: uvicorn writes the query with '"' as %22. The
            # request's own task set the value as its response started (uvicorn runs each
            # request in a task of its own); a request the middleware does not see has another
            # path than any that sets it.
            if answered is not None and answered[:2] == (method, path):
                query = answered[2]
            else:
                query = audited_query(entry, path, raw_query.encode("latin-1", "replace"))
            if query:
                shown += "?" + query
            record.args = (client, method, shown, version, status)
        return True


class BodyTooLarge(HTTPException):
    """Raised from `receive()` once a body passes its limit (FastAPI re-raises HTTP errors)."""

    def __init__(self, detail: str) -> None:
        super().__init__(status_code=413, detail=detail)


def body_limit(scope: Scope) -> tuple[int, str]:
    """The body size limit of a request and the 413's detail: the upload's from the settings
    (the detail names the file's limit, which the user set, as the upload's own check does),
    else `MAX_BODY_BYTES`."""
    if (scope["method"], scope["path"]) == UPLOAD_ROUTE:
        settings: Settings = scope["app"].state.settings  # read per request: tests change it
        limit = settings.max_upload_bytes
        return limit + MULTIPART_OVERHEAD_BYTES, f"the file exceeds the limit of {limit} bytes"
    return MAX_BODY_BYTES, f"the request body exceeds {MAX_BODY_BYTES} bytes"


class _RouteKind(NamedTuple):
    authenticates: bool  # asks for the principal
    takes_body: bool
    roles: tuple[Role, ...] | None  # the roles it admits; None: any
    served: bool = True  # False: no route serves the path, or not with this method


class RequestGate:
    """Refuses what must not be read, before FastAPI reads (and parses, and spools) a body.

    FastAPI reads the whole body before any dependency runs: the login check and the upload's
    size check came after a client's body was received whole (a multipart file spooled to disk
    without limit; a JSON body parsed in memory, a 422 answered to a wrong key). So, before the
    app sees the request, in this order:
    - A route that asks for the principal (`service.deps.get_principal`) has its
      `Authorization` header, if any, checked here (API key or OIDC token: one look-up, as the
      dependency did): a malformed header, an unknown, malformed or revoked key, an invalid
      token is 401 (a token without a Kvarus role 403), the same answer the dependency gave.
      The principal is left on the request's state, where the dependency takes it and the
      audit log reads it: a valid caller's later 413 or 422 names them. A role the route does
      not admit (`service.deps.ROUTE_ROLES`) is 403 here, its body unread.
    - A request under /api/v1 that no route serves (a 404, or a 405 for a method its path does
      not take) is checked the same way, for its audit row only (`_identify`): a valid key or
      token names its caller, an unknown or malformed one is unauthenticated, a revoked one its
      client, as on a served route; the answer stays the 404 or 405.
    - A request to a route that takes a body without an `Authorization` header is 401: every
      such route needs credentials (README's role matrix: anonymous clients may only read
      published indicators, all GET routes).
    - A `Content-Length` over the route's limit (`body_limit`) is 413 at once; a body without
      one (chunked) is counted while it streams, and stopped with 413 when it passes the limit.
    Every answer is problem+json, and audited (the audit middleware runs outside this one). No
    key or token, nor any part of one, is in an answer or a log line.
    A plain ASGI middleware, as the audit's: `BaseHTTPMiddleware` costs a task per request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # The route kind by (method, path); paths carry ids, so only so many are remembered.
        self.routes: dict[tuple[str, str], _RouteKind] = {}

    def _route_kind(self, scope: Scope) -> _RouteKind:
        """Whether the request's route asks for the principal, whether it takes a body (and so
        needs credentials), and the roles it admits (None: any). Nothing for a path no route
        (or no method) serves."""
        key = (scope["method"], scope["path"])
        known = self.routes.get(key)
        if known is None:
            entry = match_route(scope["app"], *key)
            if entry is None or (entry.methods is not None and key[0] not in entry.methods):
                known = _RouteKind(False, False, None, served=False)
            else:
                admitted = [ROUTE_ROLES[c] for c in entry.dependencies if c in ROUTE_ROLES]
                known = _RouteKind(
                    get_principal in entry.dependencies,
                    entry.takes_body,
                    tuple(r for r in admitted[0] if all(r in a for a in admitted))
                    if admitted
                    else None,
                )
            if len(self.routes) < MAX_REMEMBERED_PATHS:
                self.routes[key] = known
        return known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The first of each header, as Starlette's `request.headers` (and so FastAPI) reads it.
        authorization: bytes | None = None
        length: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization" and authorization is None:
                authorization = value
            elif name == b"content-length" and length is None:
                length = value
        authenticates, takes_body, roles, served = self._route_kind(scope)
        if authorization is not None and authorization.strip():
            if not served and scope["path"].startswith(AUDITED_PREFIX):
                await self._identify(scope, authorization)
            elif authenticates:
                try:
                    principal = await principal_of(scope["app"], authorization.decode("latin-1"))
                    # Named in the audit row of a refusal too.
                    scope.setdefault("state", {})["principal"] = principal
                    if roles is not None:
                        require(principal, *roles)
                except KvarusError as error:
                    if isinstance(error, RevokedKey):  # named in the audit row (`audit`)
                        scope.setdefault("state", {})["revoked_subject"] = error.subject
                    await self._refuse_error(scope, send, error)
                    return
        elif takes_body:
            await self._refuse(scope, send, 401, "this route needs credentials")
            return
        limit, too_large = body_limit(scope)
        if length is not None and length.isdigit() and int(length) > limit:
            await self._refuse(scope, send, 413, too_large)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(too_large)
            return message

        async def noting_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, noting_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, send, 413, too_large)

    @staticmethod
    async def _identify(scope: Scope, authorization: bytes) -> None:
        """Name the caller of a request no route serves in its audit row, as a served route's
        would: the principal behind a valid key or token; a revoked key's client; else nobody
        (unauthenticated). Never refuses: the app answers the request (404, 405) as without."""
        state = scope.setdefault("state", {})
        try:
            state["principal"] = await principal_of(scope["app"], authorization.decode("latin-1"))
        except KvarusError as error:
            if isinstance(error, RevokedKey):
                state["revoked_subject"] = error.subject

    @classmethod
    async def _refuse(cls, scope: Scope, send: Send, status: int, detail: str) -> None:
        if status == 401:
            title, slug = Unauthorised.title, Unauthorised.type_slug
        else:
            title, slug = errors.PayloadTooLarge.title, errors.PayloadTooLarge.type_slug
        await cls._answer(scope, send, status, title, slug, detail)

    @classmethod
    async def _refuse_error(cls, scope: Scope, send: Send, error: KvarusError) -> None:
        """Answer a failed credentials check as the app's handler (`errors.install`) would."""
        if error.status >= 500:  # a busy catalog (503)
            logger.error("%s on %s %s", error.title, scope["method"], errors.route_template(scope))
        await cls._answer(scope, send, error.status, error.title, error.type_slug, error.detail)

    @staticmethod
    async def _answer(
        scope: Scope, send: Send, status: int, title: str, slug: str, detail: str | None
    ) -> None:
        response = errors.problem(
            status=status,
            title=title,
            slug=slug,
            detail=detail,
            instance=errors.route_template(scope),
        )

        async def no_body() -> Message:
            return {"type": "http.disconnect"}

        await response(scope, no_body, send)


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
    except duckdb.InterruptException:
        # DuckDB interrupts its running queries as the process exits (this thread is a daemon):
        # a shutdown during the warm-up, not an error.
        logger.debug("aggregate warm-up interrupted")
    except Exception as error:
        # Anything else would reach the thread's excepthook, which prints the message (a
        # driver's or DuckDB's message can quote a file path or a value): logged here by its
        # class and frames only, as `errors.UnexpectedErrors` does. The first aggregate query
        # builds the view instead.
        logger.error(
            "aggregate warm-up failed: unexpected %s\n%s",
            type(error).__name__,
            "".join(traceback.format_tb(error.__traceback__)),
        )


def repair_abandoned(settings: Settings, engine: Engine) -> None:
    """At start-up, in the background: the upload requests whose job died with an earlier server
    (still `pending` or `loading`, their raw file under incoming/) are failed now by the
    writers' repair, which waits for the write locks, not at the next load, release or erasure."""
    try:
        warehouse = Warehouse(settings.warehouse_dir, settings.releases_dir)
        with Session(engine) as session:
            if abandoned_requests(session, warehouse):
                repair(session, warehouse)
                logger.info("repaired the upload requests of a server that stopped")
    except Exception as error:
        # As `warm_aggregates`: by class and frames only. The next writer repairs instead.
        logger.error(
            "start-up repair failed: unexpected %s\n%s",
            type(error).__name__,
            "".join(traceback.format_tb(error.__traceback__)),
        )


def stop_warming(warming: threading.Thread, *, timeout: float = WARM_STOP_SECONDS) -> None:
    """Stop a running warm-up at shutdown: its DuckDB query is interrupted (and again, should
    the build start only now) until the thread ends. Left inside a DuckDB query at interpreter
    exit, the thread could abort the process ("FATAL: exception not rethrown")."""
    deadline = time.monotonic() + timeout
    while warming.is_alive() and time.monotonic() < deadline:
        aggregates.interrupt_builds()
        warming.join(0.05)


def start_up_checks(settings: Settings) -> tuple[Engine, OidcVerifier]:
    """Every check a start-up makes, each raising `ConfigurationError`: the pseudonym key (also
    against the register's key check value, `etl.keycheck`, which a first start-up writes), the
    OIDC settings, the catalog (its engine, tables created) and that its releases lie in this data
    directory (`etl.ledger.check_releases_here`: a copied or moved one would serve the original's
    files, or fail on them). The catalog's engine and the OIDC verifier are returned for the app.

    `create_app` runs them, and so does `kvarus serve --workers N` before any worker starts: a
    worker failing them would exit, and uvicorn's supervisor restart it, forever.
    """
    # Raises ConfigurationError outside demo mode without a proper key: uploads re-key pseudonyms
    # and aggregates derive their cell keys from it, so the service is useless (and unsafe) without.
    # First: nothing is created (not even the catalog) for a service that may not start.
    key = settings.key_bytes()
    oidc = OidcVerifier(settings)  # an issuer without a JWKS URL is refused (no network here)
    # Before the catalog: another key would re-key uploads' patients as patients never seen and
    # give the aggregates other cell keys. Writes only the check value, so comes after the checks
    # that create nothing.
    check_key(settings.warehouse_dir, key)
    engine = make_engine(settings)
    with session_scope(engine) as session:
        check_releases_here(session, settings.releases_dir)
    return engine, oidc


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API over one data directory; refuses to start on any failed `start_up_checks`."""
    settings = settings or Settings()
    engine, oidc = start_up_checks(settings)
    # An upload's part is kept in memory, never spooled to a temporary file past 1 MiB: as sent
    # it holds source pseudonyms (`service.uploads`). The request gate bounds its size.
    MultiPartParser.spool_max_size = sys.maxsize
    audit_writer = AuditWriter(engine)
    catalog_threads = ThreadPoolExecutor(CATALOG_THREADS, thread_name_prefix="kvarus-catalog")
    catalog_cache = CatalogCache.of(engine)

    @asynccontextmanager
    async def lifespan(served: FastAPI) -> AsyncIterator[None]:
        access_paths = AccessLogPaths(served)
        logging.getLogger("uvicorn.access").addFilter(access_paths)
        # Upload files a dead process left behind. Only stale ones (an hour, the default): another
        # worker of this service may be loading a fresh one right now.
        swept = sweep_incoming(settings.data_dir)
        if swept:
            logger.info("removed %d stale upload file(s) from incoming/", len(swept))
        warming = threading.Thread(
            target=warm_aggregates, args=(settings, engine), name="kvarus-warm", daemon=True
        )
        warming.start()
        threading.Thread(
            target=repair_abandoned, args=(settings, engine), name="kvarus-repair", daemon=True
        ).start()
        # Start-up objects (modules, SQLAlchemy's and pydantic's caches: ~190,000) leave the
        # collector's reach: each full collection walked them all, a ~90 ms pause of every
        # request about once a second under load (read benchmark: p99 132 → 49 ms).
        gc.collect()
        gc.freeze()
        yield
        stop_warming(warming)
        gc.unfreeze()
        logging.getLogger("uvicorn.access").removeFilter(access_paths)
        audit_writer.close()  # every queued audit row is committed before the process ends
        if catalog_cache is not None:
            catalog_cache.close()
        catalog_threads.shutdown(wait=False)

    app = FastAPI(
        lifespan=lifespan,
        # No 307 to the path without (or with) its trailing slash: that answer was not
        # problem+json, echoed the path as typed (an identity number, say) in `location` and
        # built its URL from the Host header. No route's path ends in a slash: a 404 instead.
        redirect_slashes=False,
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
    # The last added runs first: the audit middleware sees (and records) the gate's refusals.
    app.add_middleware(RequestGate)
    app.add_middleware(AuditMiddleware)
    # Outermost of ours: a bug is answered and logged here, without its message (see there).
    app.add_middleware(errors.UnexpectedErrors)
    app.include_router(health.router)
    for module in (uploads, releases, indicators, aggregates_routes, audit):
        app.include_router(module.router, prefix=API_PREFIX)
    return app
