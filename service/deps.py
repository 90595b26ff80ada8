"""Annotated dependencies of the routes: settings, the catalog session, the principal."""

import asyncio
from collections.abc import Callable, Iterator
from functools import partial
from typing import Annotated, Any, Final, ParamSpec, TypeVar

from fastapi import Depends, FastAPI, Request, Security
from fastapi.security import HTTPBearer
from sqlmodel import Session

from service import published
from service.auth import (
    ANONYMOUS,
    KEY_MARK,
    Principal,
    Role,
    authenticate_in,
    bearer_token,
    require,
)
from service.catalog_cache import CatalogCache
from service.database import session_scope
from service.settings import Settings

# Declares the bearer scheme in OpenAPI; the header itself is read below so that a malformed
# header is a 401, not silently anonymous.
bearer_scheme = HTTPBearer(auto_error=False, description="An API key (kvk_…) or an OIDC token")


# Dependencies that do no I/O are `async def`: FastAPI runs a plain `def` dependency in the
# threadpool, a hop that costs more than a cached indicator answer.
async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


P = ParamSpec("P")
T = TypeVar("T")


async def on_catalog_threads(
    request: Request, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """Run a short catalog look-up on the app's few catalog threads (see `create_app`).

    Not the 40-thread request pool: 40 look-ups at once would each check out a connection,
    beyond the engine's pool, and open (and close) a new one every time.
    """
    return await _on_threads_of(request.app, function, *args, **kwargs)


async def _on_threads_of(
    app: FastAPI, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    threads = app.state.catalog_threads
    return await asyncio.get_running_loop().run_in_executor(
        threads, partial(function, *args, **kwargs)
    )


async def served_release(request: Request, number: int | None) -> int:
    """`published.served_release`: from the catalog cache, else asked on a catalog thread."""
    catalog: CatalogCache | None = request.app.state.catalog_cache
    if catalog is not None:
        return catalog.served_release(number)
    return await on_catalog_threads(
        request, published.served_release_in, request.app.state.engine, number
    )


def get_session(request: Request) -> Iterator[Session]:
    """A unit of work per request: commits on success, rolls back on error."""
    with session_scope(request.app.state.engine) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]


async def principal_of(app: FastAPI, authorization: str) -> Principal:
    """The principal behind a non-blank `Authorization` header; `Unauthorised` (401) for a
    malformed header, an unknown, malformed or revoked key or an invalid token, `Forbidden`
    (403) for a token without a Kvarus role. Asked by the request gate (`service.app`), before
    the body is read; by `get_principal` only where the gate has not asked it."""
    catalog: CatalogCache | None = app.state.catalog_cache
    if catalog is not None and (token := bearer_token(authorization)).startswith(KEY_MARK):
        # Asked of the catalog cache, on the event loop: a revoked key is refused from the
        # next request on, also when another process revoked it.
        return catalog.principal(token)
    # OIDC tokens (their issuer's keys may be fetched over the network) and API keys on
    # databases without a catalog cache: asked on a catalog thread.
    return await _on_threads_of(
        app, authenticate_in, app.state.engine, authorization, app.state.oidc
    )


async def get_principal(
    request: Request, _: Annotated[object, Security(bearer_scheme)] = None
) -> Principal:
    """Anonymous without credentials (no I/O); a key or token is checked on every request.

    The request gate (`service.app.RequestGate`) checks the credentials of a route that asks
    for the principal before the body is read, and leaves the principal on `request.state`:
    it is taken from there, not looked up twice. Without it (an app without the gate), the
    header is checked here.
    """
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is not None:
        return principal
    authorization = request.headers.get("authorization")
    if authorization is None or not authorization.strip():
        principal = ANONYMOUS
    else:
        principal = await principal_of(request.app, authorization)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def registry_principal(principal: PrincipalDep) -> Principal:
    return require(principal, *ROUTE_ROLES[registry_principal])


async def staff_principal(principal: PrincipalDep) -> Principal:
    return require(principal, *ROUTE_ROLES[staff_principal])


async def researcher_principal(principal: PrincipalDep) -> Principal:
    return require(principal, *ROUTE_ROLES[researcher_principal])


# The roles each role dependency admits. The request gate (`service.app`) checks them too, before
# the body is read: a role the route refuses gets its 403, not a 422 or 413 for its body.
ROUTE_ROLES: Final[dict[Callable[..., Any], tuple[Role, ...]]] = {
    registry_principal: ("registry",),
    staff_principal: ("registry", "trust"),
    researcher_principal: ("registry", "researcher"),
}


RegistryDep = Annotated[Principal, Depends(registry_principal)]
StaffDep = Annotated[Principal, Depends(staff_principal)]
ResearcherDep = Annotated[Principal, Depends(researcher_principal)]
