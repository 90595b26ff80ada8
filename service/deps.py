"""Annotated dependencies of the routes: settings, the catalog session, the principal."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer
from sqlmodel import Session

from service.auth import Principal, authenticate, require
from service.database import session_scope
from service.settings import Settings

# Declares the bearer scheme in OpenAPI; the header itself is read below so that a malformed
# header is a 401, not silently anonymous.
bearer_scheme = HTTPBearer(auto_error=False, description="An API key (kvk_…) or an OIDC token")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """A unit of work per request: commits on success, rolls back on error."""
    with session_scope(request.app.state.engine) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]


def get_principal(
    request: Request, session: SessionDep, _: Annotated[object, Security(bearer_scheme)] = None
) -> Principal:
    principal = authenticate(request.headers.get("authorization"), session, request.app.state.oidc)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def registry_principal(principal: PrincipalDep) -> Principal:
    return require(principal, "registry")


def staff_principal(principal: PrincipalDep) -> Principal:
    return require(principal, "registry", "trust")


def researcher_principal(principal: PrincipalDep) -> Principal:
    return require(principal, "registry", "researcher")


RegistryDep = Annotated[Principal, Depends(registry_principal)]
StaffDep = Annotated[Principal, Depends(staff_principal)]
ResearcherDep = Annotated[Principal, Depends(researcher_principal)]
