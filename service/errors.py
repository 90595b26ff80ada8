"""One error family on the wire: every error is RFC 9457 `application/problem+json`.

`KvarusError` subclasses carry their status and title; request validation errors become 422 with
the offending field locations (never the submitted values, which could be record values);
routing errors (404, 405) keep their status. Anything else is a bug: 500 with no detail, logged
with its traceback (the traceback names code, not data).

A problem's `instance` is the route's template (`/api/v1/providers/{orgnr}/profile`), never the
path as sent: a client may type anything, an identity number included, into a path; a path no
route matches has no `instance`. Log lines name the template too.
"""

import logging
import traceback
from collections.abc import Sequence
from typing import Any, Final, get_args

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas import api as api_models
from schemas.api import Dimension, Measure, Problem
from schemas.errors import Forbidden, KvarusError, NotFound, RejectedInput, Unauthorised
from service.audit import match_route

logger = logging.getLogger("kvarus.api")

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
PROBLEM_BASE: Final = "https://kvarus.example/problems/"


class PayloadTooLarge(KvarusError):
    status = 413
    title = "Payload too large"
    type_slug = "payload-too-large"


class ServiceUnavailable(KvarusError):
    status = 503
    title = "Service unavailable"
    type_slug = "unavailable"


def route_template(scope: Any) -> str | None:
    """The template of the route serving this request (`scope`), None where no route matches."""
    entry = match_route(scope["app"], scope["method"], scope["path"])
    return entry.template if entry is not None else None


def problem(
    *, status: int, title: str, slug: str, detail: str | None, instance: str | None
) -> JSONResponse:
    body = Problem(
        type=PROBLEM_BASE + slug, title=title, status=status, detail=detail, instance=instance
    )
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        body.model_dump(), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def problem_response(
    request: Request, *, status: int, title: str, slug: str, detail: str | None
) -> JSONResponse:
    return problem(
        status=status,
        title=title,
        slug=slug,
        detail=detail,
        instance=route_template(request.scope),
    )


async def _kvarus_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KvarusError)
    if exc.status >= 500:
        logger.error("%s on %s %s", exc.title, request.method, route_template(request.scope))
    return problem_response(
        request, status=exc.status, title=exc.title, slug=exc.type_slug, detail=exc.detail
    )


# Where a location part names no field of ours, it came from the client (a dict key, an extra
# field's name): it is replaced, so no value of the request is echoed in a 422.
UNKNOWN_FIELD: Final = "<field>"
_LOCATION_MARKERS: Final = frozenset({"body", "query", "path", "header", "cookie", "[key]"})


def _schema_names() -> frozenset[str]:
    """Field names of the API's models and the categories of its whitelisted dimensions."""
    names: set[str] = set(get_args(Dimension)) | set(get_args(Measure))
    for value in vars(api_models).values():
        if isinstance(value, type) and issubclass(value, BaseModel):
            for name, info in value.model_fields.items():
                names.add(name)
                if info.alias:
                    names.add(info.alias)
    return frozenset(names)


def _known_names(app: Any) -> frozenset[str]:
    """Every name a location may hold: route parameters (and aliases), models' fields."""
    known: frozenset[str] | None = getattr(app.state, "error_location_names", None)
    if known is None:
        names = set(_LOCATION_MARKERS) | _schema_names()
        # `app.routes` holds FastAPI's included-router objects, not the `APIRoute`s under them.
        dependants = [
            c.original_route.dependant
            for c in iter_route_contexts(app.router.routes)
            if isinstance(c.original_route, APIRoute)
        ]
        while dependants:
            dependant = dependants.pop()
            dependants.extend(dependant.dependencies)
            for param in (
                *dependant.body_params,
                *dependant.query_params,
                *dependant.path_params,
                *dependant.header_params,
                *dependant.cookie_params,
            ):
                names.update({param.name, param.alias})
        known = frozenset(names)
        app.state.error_location_names = known
    return known


def safe_location(location: Sequence[object], known: frozenset[str]) -> str:
    """A 422 location with every part that is not one of our names replaced."""
    parts = [
        str(part) if isinstance(part, int) or part in known else UNKNOWN_FIELD for part in location
    ]
    return ".".join(parts)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Locations and messages only: pydantic's `input` may be a record value, and a location may
    # hold a key the client chose (a filter's key, an extra field): those are replaced.
    known = _known_names(request.app)
    parts = [
        f"{safe_location(error.get('loc', ()), known)}: {error.get('msg', 'invalid')}"
        for error in exc.errors()
    ]
    return problem_response(
        request,
        status=422,
        title=RejectedInput.title,
        slug="invalid-request",
        detail="; ".join(parts)[:1000],
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    titles: dict[int, tuple[str, str]] = {
        404: (NotFound.title, NotFound.type_slug),
        401: (Unauthorised.title, Unauthorised.type_slug),
        403: (Forbidden.title, Forbidden.type_slug),
        405: ("Method not allowed", "method-not-allowed"),
        413: (PayloadTooLarge.title, PayloadTooLarge.type_slug),
    }
    title, slug = titles.get(exc.status_code, ("HTTP error", "http"))
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem_response(request, status=exc.status_code, title=title, slug=slug, detail=detail)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Frames and the exception's class, not its message: a library's message can quote a value.
    frames = "".join(traceback.format_tb(exc.__traceback__))
    logger.error(
        "unexpected %s on %s %s\n%s",
        type(exc).__name__,
        request.method,
        route_template(request.scope),
        frames,
    )
    return problem_response(
        request, status=500, title="Internal error", slug="internal", detail=None
    )


class UnexpectedErrors:
    """Answers a bug 500 itself, so that no exception's message reaches any log.

    Starlette's `ServerErrorMiddleware` (outside every middleware of ours) answers an unhandled
    exception through `_unexpected` and then re-raises it, for the server to log: uvicorn then
    printed the whole traceback *with the message* ("Exception in ASGI application"), and a
    library's message can quote a value (a file path, a record). Installed as the outermost of
    our middlewares, this one catches the exception first, logs its class and frames only (as
    `_unexpected`), answers 500 problem+json if no response has started, and does not re-raise:
    the server sees a finished request (or, if the answer had started, an incomplete one, which
    uvicorn logs without any message).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def noting_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        except Exception as exc:
            frames = "".join(traceback.format_tb(exc.__traceback__))
            logger.error(
                "unexpected %s on %s %s%s\n%s",
                type(exc).__name__,
                scope["method"],
                route_template(scope),
                " (after the answer had started)" if started else "",
                frames,
            )
            if not started:
                response = problem(
                    status=500,
                    title="Internal error",
                    slug="internal",
                    detail=None,
                    instance=route_template(scope),
                )
                await response(scope, receive, send)


def install(app: FastAPI) -> None:
    """Register the one handler family on `app`."""
    app.add_exception_handler(KvarusError, _kvarus_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` declaration of a route's problem statuses for OpenAPI."""
    descriptions = {
        400: "Bad request",
        401: "Not authenticated",
        403: "Forbidden for this role",
        404: "Not found",
        409: "Conflict",
        413: "Payload too large",
        422: "Invalid request",
        503: "Unavailable",
    }
    return {
        status: {
            "model": Problem,
            "description": descriptions.get(status, "Problem"),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
