"""The audit log: who asked for what, one catalog row per data request.

A middleware writes an `AuditEvent` after every request under `/api/v1` (subject, role, method,
route template, query string, status, rows returned, release). Routes say how many rows they
returned, from which release and which object they created with `note(...)`. Bodies are never
logged: an aggregate's filters or an upload's content stay out of the log, and so do pseudonyms
and record values.

Which object was asked for: the row's `query` begins with the request's path parameters, each as
`{name}=value` under the name the route template gives it (`/api/v1/uploads/{upload_id}` with
`{upload_id}=12`), then the query string's parameters as `name=value`, joined by `&`. A request
that creates an object names it the same way, under the name of the object's own route
(`POST /api/v1/uploads` with `{upload_id}=13`): every row about upload 13 holds `{upload_id}=13`.
The audit table has no column of its own for them (`schemas.catalog.AuditEvent`); braces cannot
start a stored query name (undeclared names are stored as `UNKNOWN_NAME`).

What a client typed is not stored as typed: a client may type anything, an identity number
included, into a path or a query. So the row holds the route *template*
(`/api/v1/uploads/{upload_id}`, `UNMATCHED_ROUTE` for a path no route matches), never the raw
path, and the query is stored by `safe_query`: parameter names the route declares, each value
kept only where it is one of a closed or numeric set and passes the route's own validation
(numbers, booleans, enumerations, pattern-checked codes such as organisation numbers, catalogue
indicator ids), and never a value with ten or more digits (a superset of what
`etl.privacy.is_identity_number` flags, also after a lost leading zero or with separators).
Every other value is `WITHHELD`, every undeclared name `UNKNOWN_NAME`. A whitelist, not a
blacklist: free text (an upload's `status`, the audit route's `subject`) is never stored, since
no check can tell a typed name or number from a harmless word. Path parameters follow the same
rules (`safe_path`): an upload id or release number (validated integers), a 9-digit organisation
number, a catalogue indicator id are kept; a value failing the route's validation is `WITHHELD`.
"""

import logging
import queue
import re
import threading
import time
import traceback
import types
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin
from urllib.parse import parse_qsl, quote

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import Engine, func, insert
from sqlmodel import Session, col, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.catalog import AuditEvent, utcnow
from service.database import session_scope
from service.published import catalogue_ids

logger = logging.getLogger("kvarus.audit")

AUDITED_PREFIX: Final = "/api/v1"
# Long query strings are cut: the log records what was asked, not an unbounded echo of it.
MAX_QUERY_LENGTH: Final = 500
# Routes remembered by (method, path): paths carry ids, so the memory is bounded.
MAX_TEMPLATES: Final = 4096
# The route of a request whose path no route matches: the path itself may be anything typed.
UNMATCHED_ROUTE: Final = "(no route)"
# A query value that is not stored, and a parameter name the route does not declare.
WITHHELD: Final = "<withheld>"
UNKNOWN_NAME: Final = "<unknown>"
# A value with this many digits (any script) is never stored: identity numbers have 11, or 10
# after a lost leading zero. No query parameter of the API needs so long a number.
MAX_STORED_DIGITS: Final = 9
# Free-text query parameters whose values are kept when they belong to a closed vocabulary.
CLOSED_VOCABULARIES: Final = {"indicator": catalogue_ids, "indicator_id": catalogue_ids}

AuditRow = dict[str, Any]

# The request being answered, as (method, path) with its audit row's query: set
# by the audit middleware when the response starts, which is when uvicorn writes its access log
# line (`service.app.AccessLogPaths` shows it there). The created object a route names
# (`note(created=...)`) is known only to the request, so the log line cannot compute it alone.
ANSWERED_QUERY: ContextVar[tuple[str, str, str] | None] = ContextVar(
    "kvarus_answered_query", default=None
)


@dataclass(frozen=True)
class RouteEntry:
    """A route as requests are matched against it: its full template and its query parameters."""

    template: str
    methods: frozenset[str] | None
    regex: re.Pattern[str]
    query: dict[str, Any]  # alias -> FastAPI's ModelField (validates a raw value)
    takes_body: bool = False
    # The callables of the route's dependencies (the request gate looks for the principal's).
    dependencies: tuple[Callable[..., Any], ...] = ()
    # Path parameters: name in the template -> FastAPI's ModelField.
    path: dict[str, Any] = field(default_factory=dict)

    def matches(self, path: str) -> bool:
        return self.regex.match(path) is not None


def _fields(dependant: Dependant, kind: Literal["query", "path"]) -> dict[str, Any]:
    """A route's query or path parameters, its dependencies' included, by name."""
    fields: dict[str, Any] = {}
    pending = [dependant]
    while pending:
        current = pending.pop()
        pending.extend(current.dependencies)
        for param in current.query_params if kind == "query" else current.path_params:
            fields[param.alias] = param
    return fields


def _dependency_calls(dependant: Dependant) -> tuple[Callable[..., Any], ...]:
    calls: list[Callable[..., Any]] = []
    pending = list(dependant.dependencies)
    while pending:
        current = pending.pop()
        pending.extend(current.dependencies)
        if current.call is not None and not any(c is current.call for c in calls):
            calls.append(current.call)
    return tuple(calls)


def _takes_body(dependant: Dependant) -> bool:
    pending = [dependant]
    while pending:
        current = pending.pop()
        if current.body_params:
            return True
        pending.extend(current.dependencies)
    return False


def route_table(app: FastAPI) -> tuple[RouteEntry, ...]:
    """Every route of `app` with its full path template (prefixes of included routers too).

    `app.routes` holds FastAPI's included-router objects (FastAPI ≥ 0.16x), not the `APIRoute`s
    under them, so it is walked with `iter_route_contexts`. Built once per set of routes.
    """
    cached: tuple[int, tuple[RouteEntry, ...]] | None = getattr(app.state, "route_table", None)
    count = len(app.router.routes)
    if cached is not None and cached[0] == count:
        return cached[1]
    entries: list[RouteEntry] = []
    for context in iter_route_contexts(app.router.routes):
        regex = getattr(context, "path_regex", None)
        template = context.path_format or context.path
        if regex is None or template is None:
            continue
        original = context.original_route
        methods = context.methods
        dependant = original.dependant if isinstance(original, APIRoute) else None
        entries.append(
            RouteEntry(
                template=str(template),
                methods=frozenset(methods) if methods else None,
                regex=regex,
                query=_fields(dependant, "query") if dependant is not None else {},
                takes_body=dependant is not None and _takes_body(dependant),
                dependencies=_dependency_calls(dependant) if dependant is not None else (),
                path=_fields(dependant, "path") if dependant is not None else {},
            )
        )
    table = tuple(entries)
    app.state.route_table = (count, table)
    return table


def match_route(app: FastAPI, method: str, path: str) -> RouteEntry | None:
    """The route that serves `method path`; else one whose path matches (a 405); else None."""
    partial: RouteEntry | None = None
    for entry in route_table(app):
        if entry.matches(path):
            if entry.methods is None or method in entry.methods:
                return entry
            partial = partial or entry
    return partial


def _closed_type(annotation: Any) -> bool:
    """Whether values of `annotation` come from a closed or numeric set (never free text)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _closed_type(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return all(_closed_type(a) for a in get_args(annotation) if a is not type(None))
    if origin in (list, tuple, set, frozenset, Sequence):
        return all(_closed_type(a) for a in get_args(annotation) if a is not Ellipsis)
    if origin is Literal:
        return True
    return isinstance(annotation, type) and issubclass(annotation, int | float | Enum)


def _has_pattern(field: Any) -> bool:
    return any(getattr(m, "pattern", None) for m in field.field_info.metadata)


def _keeps_value(name: str, field: Any, value: str) -> bool:
    """Whether the audit log may store `value` of query parameter `name` (see the module doc)."""
    if sum(ch.isdigit() for ch in value) > MAX_STORED_DIGITS:
        return False
    vocabulary = CLOSED_VOCABULARIES.get(name)
    if vocabulary is not None and value in vocabulary():
        return True
    if not (_closed_type(field.field_info.annotation) or _has_pattern(field)):
        return False
    # Validated as the route validates it (a repeatable parameter as a one-item list).
    return not field.validate(value)[1] or not field.validate([value])[1]


def safe_query(entry: RouteEntry | None, query_string: bytes) -> str:
    """The query as the audit log stores it: declared names, and only values safe to keep."""
    fields = entry.query if entry is not None else {}
    parts: list[str] = []
    text = query_string.decode("latin-1")
    for name, value in parse_qsl(text, keep_blank_values=True, errors="replace"):
        field = fields.get(name)
        if field is None:
            parts.append(f"{UNKNOWN_NAME}={WITHHELD}")
        elif _keeps_value(name, field, value):
            parts.append(f"{name}={quote(value, safe='')}")
        else:
            parts.append(f"{name}={WITHHELD}")
    return "&".join(parts)[:MAX_QUERY_LENGTH]


def _path_part(name: str, value: str) -> str:
    return f"{{{name}}}={value}"


def safe_path(entry: RouteEntry | None, path: str) -> list[str]:
    """The path parameters of `path` on its route, as the audit log stores them (`{name}=value`,
    in template order): a value only where `safe_query` would keep it, else `WITHHELD`."""
    if entry is None:
        return []
    match = entry.regex.match(path)
    if match is None:
        return []
    parts: list[str] = []
    for name, value in match.groupdict().items():
        spec = entry.path.get(name)
        kept = spec is not None and _keeps_value(name, spec, value)
        parts.append(_path_part(name, quote(value, safe="") if kept else WITHHELD))
    return parts


def created_part(created: tuple[str, int]) -> str:
    """A created object as the audit log stores it: `{name}=id`, `name` the path parameter of
    the object's own route (`upload_id`)."""
    name, object_id = created
    value = str(object_id)
    return _path_part(name, value if len(value) <= MAX_STORED_DIGITS else WITHHELD)


# A request body's value kept in the audit row (`body_part`): short and plain.
_PLAIN_VALUE: Final = re.compile(r"[A-Za-z0-9_.+-]{1,32}")


def body_part(name: str, values: Sequence[str]) -> str:
    """A request body's parameter as the audit row stores it (`note(asked=...)`): `name=v1,v2`,
    each value kept only when plain and with no more digits than `safe_query` keeps."""
    kept = [
        value
        if _PLAIN_VALUE.fullmatch(value) and sum(ch.isdigit() for ch in value) <= MAX_STORED_DIGITS
        else WITHHELD
        for value in values
    ]
    return f"{name}={','.join(kept)}"


def audited_query(
    entry: RouteEntry | None,
    path: str,
    query_string: bytes,
    created: tuple[str, int] | None = None,
    asked: Sequence[str] = (),
) -> str:
    """The audit row's `query`: path parameters, the created object, what the body asked
    (`note`), then `safe_query`'s."""
    parts = safe_path(entry, path)
    if created is not None:
        parts.append(created_part(created))
    parts += asked
    query = safe_query(entry, query_string)
    if query:
        parts.append(query)
    return "&".join(parts)[:MAX_QUERY_LENGTH]


def note(
    request: Request,
    *,
    rows: int | None = None,
    release: int | None = None,
    created: tuple[str, int] | None = None,
    asked: Sequence[str] | None = None,
) -> None:
    """Tell the audit log how many rows a route returned, from which release, which object it
    created (`created`: the path parameter name of the object's own route, its id, such as
    `("upload_id", upload.id)`), and what a request body asked (`asked`: `body_part`s; the
    researchers' aggregates, so that differencing queries can be traced)."""
    if asked is not None:
        request.state.audit_asked = list(asked)
    if rows is not None:
        request.state.audit_rows = rows
    if release is not None:
        request.state.audit_release = release
    if created is not None:
        request.state.audit_created = created


class AuditWriter:
    """Writes audit rows from one background thread, in batches, with its own connection.

    Requests only enqueue their row: a write per request on the request's path held a pooled
    connection per in-flight request and exhausted the pool under 50 concurrent clients (the
    benchmark found it). Rows are plain dicts inserted with one executemany per batch: building
    ORM objects and flushing them through the unit of work cost more CPU (and GIL) than the
    requests themselves.

    What is guaranteed:
    - `flush()` returns once every row this writer was given before the call is committed (or,
      after a failed retry, dropped with an alarm in the log), or after `FLUSH_TIMEOUT` with
      an error logged (a hung catalog); rows submitted meanwhile do not delay it. It is this
      process's writer only: with `kvarus serve --workers N` each worker has its own, so a read
      of the log (the audit route flushes first) holds every request this worker answered
      before, while another worker's rows may still be up to `LINGER` plus a commit behind
      (longer while its writes are slow or a failed batch awaits its retry).
    - `close()` (at app shutdown) commits everything queued before it returns; a row submitted
      after that is written synchronously.
    - A batch whose write fails is tried once more after `RETRY_AFTER`; failing again, it is
      dropped and the alarm logged (counts and the error's class, never a row).
    - Crash window: a row waits in memory up to `LINGER` and its batch's commit before it is in
      the catalog (longer while the catalog is slow, or a failed batch awaits its retry). A
      process killed outright (SIGKILL, the OOM killer, power loss) loses the rows it held;
      SIGTERM and SIGINT run the shutdown, which commits them (waiting 30 s at most).
    """

    # Rows per transaction: one commit (one fsync on SQLite) per batch instead of per request.
    BATCH: Final = 500
    # How long a batch waits for more rows. A commit costs ~470 µs of CPU (and the GIL) besides
    # ~8 µs per row: taking only what was queued, 2,000 requests/s made batches of a few rows,
    # ~80 µs per request. Each commit also makes the catalog cache read the catalog again.
    LINGER: Final = 0.05
    # A failed batch is tried again after this back-off (SQLite: the engine already waited 30 s
    # on a lock; a second attempt outlives a passing I/O error or a restarted database server).
    RETRY_AFTER: Final = 1.0
    # The longest `flush()` waits: a catalog that hangs must not hang the audit route forever.
    FLUSH_TIMEOUT: Final = 30.0

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.queue: queue.Queue[AuditRow | None] = queue.Queue()
        self.closed = False
        # Rows are numbered as they are queued (1, 2, ...) and committed in that order, so one
        # number says how far the log is: `committed` rows are written (or dropped, alarmed).
        # `flush()` waits for the number it took; `wanted` is the highest number a flush awaits.
        self.progress = threading.Condition(threading.Lock())
        self.submitted = 0
        self.committed = 0
        self.wanted = 0
        # Cuts a batch's linger short: set by `close()`, and by `flush()` until it is served.
        self.hurry = threading.Event()
        self.thread = threading.Thread(target=self._run, name="kvarus-audit", daemon=True)
        self.thread.start()

    def submit(self, row: AuditRow) -> None:
        # Numbered and queued under one lock: the queue's order is the numbers' order.
        with self.progress:
            if not self.closed:
                self.submitted += 1
                self.queue.put(row)
                return
        self._write([row])

    def flush(self) -> None:
        """Wait until every row submitted before this call is committed (or dropped)."""
        with self.progress:
            target = self.submitted
            if self.committed >= target or self.closed:
                return  # after close() the rows were committed, later ones written at once
            self.wanted = max(self.wanted, target)
            self.hurry.set()
            done = self.progress.wait_for(
                lambda: self.committed >= target, timeout=self.FLUSH_TIMEOUT
            )
            behind = target - self.committed
        if not done:
            logger.error(
                "audit flush gave up after %g s: %d rows behind", self.FLUSH_TIMEOUT, behind
            )

    def close(self) -> None:
        """Commit every queued row and stop the writer (idempotent)."""
        with self.progress:
            if self.closed:
                return
            self.closed = True
            self.queue.put(None)
        self.hurry.set()
        # Bounded: a catalog that hangs must not hang the shutdown; the alarm names the count.
        self.thread.join(timeout=30)
        if self.thread.is_alive():
            logger.error("%d audit rows were not written before shutdown", self.queue.qsize())

    def _insert(self, batch: list[AuditRow]) -> None:
        with session_scope(self.engine) as session:
            session.connection().execute(insert(AuditEvent), batch)

    def _write(self, batch: list[AuditRow]) -> None:
        """Insert `batch` in one transaction, tried twice; never raises."""
        # Errors are logged by class and frames: a driver's message can quote the parameters.
        try:
            self._insert(batch)
            return
        except Exception as error:
            logger.warning(
                "%d audit rows could not be written (%s); retrying in %.0f s\n%s",
                len(batch),
                type(error).__name__,
                self.RETRY_AFTER,
                "".join(traceback.format_tb(error.__traceback__)),
            )
        time.sleep(self.RETRY_AFTER)
        try:
            self._insert(batch)
        except Exception as error:
            # An operational alarm; the writer goes on with the next batch.
            logger.error(
                "%d audit rows could not be written (%s); dropped",
                len(batch),
                type(error).__name__,
            )

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[AuditRow] = []
            item = self.queue.get()
            if item is None:
                stopping = True
            else:
                batch.append(item)
                # More rows queue up meanwhile; `flush()` and `close()` end the wait. Not a get
                # with a timeout per row: that woke this thread (and took the GIL) every request.
                self.hurry.wait(self.LINGER)
            while not stopping and len(batch) < self.BATCH:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
            try:
                if batch:
                    self._write(batch)
            finally:
                # Written or dropped (alarmed), the rows are done: a flush must not wait forever.
                with self.progress:
                    self.committed += len(batch)
                    if self.committed >= self.wanted and not self.closed:
                        self.hurry.clear()
                    self.progress.notify_all()


class AuditMiddleware:
    """Writes one audit row per request under /api/v1 (failures included).

    A plain ASGI middleware: `BaseHTTPMiddleware` runs every request through an extra task and
    memory streams, which cost more than a cached indicator answer itself.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.routes: OrderedDict[tuple[str, str], RouteEntry | None] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(AUDITED_PREFIX):
            await self.app(scope, receive, send)
            return
        status = 500
        query: str | None = None

        async def send_noting_status(message: Message) -> None:
            nonlocal status, query
            if message["type"] == "http.response.start":
                status = message["status"]
                query = self._answered_query(scope)  # before uvicorn logs the line
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        except Exception:
            # A bug: the error handler answers 500 outside this middleware (in this task, so
            # its log line finds the query); the row is still due.
            self._record(scope, 500, self._answered_query(scope) if query is None else query)
            raise
        self._record(scope, status, self._answered_query(scope) if query is None else query)

    def _route(self, scope: Scope) -> RouteEntry | None:
        key = (scope["method"], scope["path"])
        if key in self.routes:
            return self.routes[key]
        entry = match_route(scope["app"], *key)
        self.routes[key] = entry
        if len(self.routes) > MAX_TEMPLATES:
            self.routes.popitem(last=False)
        return entry

    def _answered_query(self, scope: Scope) -> str:
        """The audit row's query of the request, also left in `ANSWERED_QUERY` for its access
        log line."""
        query_string: bytes = scope.get("query_string", b"")
        query = audited_query(
            self._route(scope),
            scope["path"],
            query_string,
            scope.get("state", {}).get("audit_created"),
            scope.get("state", {}).get("audit_asked", ()),
        )
        ANSWERED_QUERY.set((scope["method"], scope["path"], query))
        return query

    def _record(self, scope: Scope, status: int, query: str) -> None:
        state = scope.get("state", {})
        principal = state.get("principal")
        route = self._route(scope)
        row: AuditRow = {
            "at": utcnow(),
            # A revoked key's client by its id (never the key), though refused: its use is traced.
            "subject": principal.subject
            if principal is not None
            else state.get("revoked_subject", "unauthenticated"),
            "role": principal.role if principal is not None else "none",
            "method": scope["method"],
            "route": route.template if route is not None else UNMATCHED_ROUTE,
            "query": query,
            "status": status,
            "rows": state.get("audit_rows"),
            "release": state.get("audit_release"),
        }
        scope["app"].state.audit.submit(row)


def query_events(
    session: Session,
    *,
    limit: int,
    offset: int,
    subject: str | None = None,
    route: str | None = None,
    status: int | None = None,
) -> tuple[list[AuditEvent], int]:
    """A page of audit events (newest first) and the total matching."""
    statement = select(AuditEvent)
    counter = select(func.count()).select_from(AuditEvent)
    for column, value in (
        (AuditEvent.subject, subject),
        (AuditEvent.route, route),
        (AuditEvent.status, status),
    ):
        if value is not None:
            statement = statement.where(column == value)
            counter = counter.where(column == value)
    total = int(session.exec(counter).one())
    events = session.exec(
        statement.order_by(col(AuditEvent.id).desc()).offset(offset).limit(limit)
    ).all()
    return list(events), total
