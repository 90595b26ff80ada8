"""Liveness and readiness."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from schemas.api import HealthPublic
from service.deps import SessionDep, SettingsDep

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic)
def health() -> HealthPublic:
    """Liveness: the process answers."""
    return HealthPublic(status="ok")


@router.get(
    "/ready",
    response_model=HealthPublic,
    responses={503: {"model": HealthPublic, "description": "A dependency is unavailable"}},
)
def ready(session: SessionDep, settings: SettingsDep) -> JSONResponse:
    """Readiness: the catalog answers a query and the data directory is reachable."""
    checks: dict[str, bool] = {}
    try:
        session.exec(text("SELECT 1"))  # type: ignore[call-overload]
        checks["catalog"] = True
    except SQLAlchemyError:
        checks["catalog"] = False
    checks["data_dir"] = settings.data_dir.is_dir()
    ok = all(checks.values())
    body = HealthPublic(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
