"""The `catalog_engine` fixture's catalog as a URL, for an app or a `kvarus` command to open, and
the app over it (`app_over`, for a module's own `app` fixture).

On SQLite it is the settings' own file; on PostgreSQL the test's schema, named in the URL's
`options` so that every connection `make_engine` opens lands in it.
"""

from collections.abc import Iterator

from fastapi import FastAPI
from sqlalchemy import Engine, text

from service.app import create_app
from service.settings import Settings
from tests.conftest import POSTGRES_URL


def catalog_url(engine: Engine) -> str:
    if engine.dialect.name == "sqlite":
        return engine.url.render_as_string(hide_password=False)
    with engine.connect() as connection:
        schema = connection.execute(text("SHOW search_path")).scalar_one()
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"


def app_over(settings: Settings, engine: Engine) -> Iterator[FastAPI]:
    """The app over `engine`'s catalog (SQLite, or PostgreSQL where reachable); its pooled
    connections are closed after the test, before the schema is dropped."""
    served = create_app(settings.model_copy(update={"database_url": catalog_url(engine)}))
    yield served
    served.state.engine.dispose()
